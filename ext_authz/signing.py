"""Signers for SAEs and denial records: one interface, file key or HSM behind it."""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import nacl.bindings
import nacl.exceptions
import nacl.signing
from joserfc.jwk import OKPKey

from .errors import ConfigError, SigningError


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Signer(Protocol):
    """Signs the JWS signing input. `kid` is the RFC 7638 thumbprint of the public JWK.

    `blocking`: signing waits on a device (an HSM), so the gRPC edge runs decisions
    on worker threads instead of the event loop.
    """

    alg: str
    kid: str
    blocking: bool

    def sign(self, message: bytes) -> bytes: ...

    def public_jwk(self) -> dict[str, str]: ...


class Ed25519Signer:
    """Ed25519 with PyNaCl; the key is a 32-byte seed held in memory."""

    alg = "EdDSA"
    blocking = False

    def __init__(self, seed: bytes):
        if len(seed) != 32:
            raise ConfigError(f"Ed25519 seed must be 32 bytes, found {len(seed)}")
        key = nacl.signing.SigningKey(seed)
        self._secret = key._signing_key  # seed || public key, as libsodium's crypto_sign takes it
        self._raw_public = bytes(key.verify_key)
        self.kid = OKPKey.import_key(self._public_jwk_no_kid()).thumbprint()

    def _public_jwk_no_kid(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(self._raw_public)}

    def sign(self, message: bytes) -> bytes:
        # the binding directly: SigningKey.sign wraps the result in a SignedMessage we don't need
        return nacl.bindings.crypto_sign(message, self._secret)[: nacl.bindings.crypto_sign_BYTES]

    def public_jwk(self) -> dict[str, str]:
        return {**self._public_jwk_no_kid(), "kid": self.kid, "alg": self.alg, "use": "sig"}

    @classmethod
    def from_file(cls, path: str | Path, create: bool = False) -> "Ed25519Signer":
        """Loads a raw 32-byte seed; with create=True makes one (mode 0600) if absent."""
        p = Path(path)
        if not p.exists():
            if not create:
                raise ConfigError(f"signing key {p} does not exist")
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
        seed = p.read_bytes()
        return cls(seed)


ED25519_OID_DER = bytes.fromhex("06032b6570")  # named curve 1.3.101.112, as PKCS#11 wants CKA_EC_PARAMS
HSM_PIN_ENV = "SEALGATE_HSM_PIN"


@dataclass(frozen=True)
class HsmKey:
    """Where an SAE signing key lives in a PKCS#11 token; the PIN comes from the environment."""

    module: str  # the vendor's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
    token: str  # token label
    key: str  # label of the Ed25519 key pair

    def pin(self) -> str:
        pin = os.environ.get(HSM_PIN_ENV)
        if not pin:
            raise ConfigError(f"set {HSM_PIN_ENV} to the token's user PIN (never passed on the command line)")
        return pin


def _open_token(spec: HsmKey) -> Any:
    import pkcs11
    from pkcs11.exceptions import PKCS11Error

    if not Path(spec.module).is_file():
        raise ConfigError(f"PKCS#11 module {spec.module} does not exist")
    try:
        return pkcs11.lib(spec.module).get_token(token_label=spec.token)
    except (PKCS11Error, RuntimeError) as e:
        raise ConfigError(f"PKCS#11 token {spec.token!r} in {spec.module}: {type(e).__name__} {e}") from e


def _raw_ed25519_point(ec_point: bytes) -> bytes:
    # CKA_EC_POINT of an Ed25519 key is the 32-byte key, DER-wrapped as an OCTET STRING by most tokens
    if len(ec_point) == 34 and ec_point[:2] == b"\x04\x20":
        return ec_point[2:]
    if len(ec_point) == 32:
        return ec_point
    raise ConfigError(f"unexpected Ed25519 public key encoding ({len(ec_point)} bytes)")


def generate_hsm_key(spec: HsmKey) -> str:
    """Creates the Ed25519 key pair in the token (private part sensitive, never extractable); returns its kid."""
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.exceptions import PKCS11Error

    token = _open_token(spec)
    try:
        with token.open(rw=True, user_pin=spec.pin()) as session:
            if list(session.get_objects({Attribute.LABEL: spec.key, Attribute.CLASS: ObjectClass.PRIVATE_KEY})):
                raise ConfigError(f"token {spec.token!r} already holds a key labelled {spec.key!r}")
            session.generate_keypair(
                KeyType.EC_EDWARDS, mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN, store=True, label=spec.key,
                public_template={Attribute.EC_PARAMS: ED25519_OID_DER},
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True})
    except PKCS11Error as e:
        raise ConfigError(f"cannot create {spec.key!r} in token {spec.token!r}: {type(e).__name__} {e}") from e
    with Pkcs11Signer(spec) as signer:
        return signer.kid


class Pkcs11Signer:
    """Ed25519 (CKM_EDDSA) with the private key inside a PKCS#11 token; it never leaves it.

    One login session for the signer's life (login state is per application, so
    every other session of this process shares it) and one session per signing
    thread, as PKCS#11 sessions must not be used by two threads at once. One
    signer per token per process: a second login while the first is open fails
    (UserAlreadyLoggedIn). `close()` (or `with`) closes every session, logging out.
    """

    alg = "EdDSA"
    blocking = True

    def __init__(self, spec: HsmKey):
        from pkcs11 import Attribute, KeyType, ObjectClass
        from pkcs11.exceptions import PKCS11Error

        self._spec = spec
        self._token = _open_token(spec)
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._sessions_lock = threading.Lock()
        pin = spec.pin()
        try:
            self._login = self._token.open(user_pin=pin)
        except PKCS11Error as e:
            raise ConfigError(f"login to token {spec.token!r}: {type(e).__name__} {e}") from e
        try:
            public = self._login.get_key(object_class=ObjectClass.PUBLIC_KEY, key_type=KeyType.EC_EDWARDS, label=spec.key)
            private = self._login.get_key(object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC_EDWARDS, label=spec.key)
            ec_point = public[Attribute.EC_POINT]
            exportable = (not private[Attribute.SENSITIVE]) or private[Attribute.EXTRACTABLE]
        except PKCS11Error as e:
            self.close()
            raise ConfigError(f"Ed25519 key {spec.key!r} in token {spec.token!r}: {type(e).__name__} {e}") from e
        try:
            if exportable:
                raise ConfigError(f"key {spec.key!r} can leave the token (not sensitive or extractable): refused")
            self._raw_public = _raw_ed25519_point(ec_point)
            self.kid = OKPKey.import_key(self._public_jwk_no_kid()).thumbprint()
            signature = self.sign(b"sealgate self-test")  # fail at start, not on the first request
            nacl.signing.VerifyKey(self._raw_public).verify(b"sealgate self-test", signature)
        except (SigningError, nacl.exceptions.BadSignatureError) as e:
            self.close()
            raise ConfigError(f"Ed25519 key {spec.key!r} in token {spec.token!r} failed its self-test: {e}") from e
        except BaseException:
            self.close()
            raise

    def _public_jwk_no_kid(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(self._raw_public)}

    def _private_key(self) -> Any:
        from pkcs11 import KeyType, ObjectClass

        key = getattr(self._local, "key", None)
        if key is None:
            session = self._token.open()  # logged in through the signer's login session
            with self._sessions_lock:
                self._sessions.append(session)
            key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC_EDWARDS, label=self._spec.key)
            self._local.key = key
        return key

    def sign(self, message: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.exceptions import PKCS11Error

        try:
            signature = self._private_key().sign(message, mechanism=Mechanism.EDDSA)
        except PKCS11Error as e:
            self._local.key = None  # reopen this thread's session next time (the token may be back)
            raise SigningError(f"HSM signing failed: {type(e).__name__} {e}") from e
        if len(signature) != 64:
            raise SigningError(f"HSM returned a {len(signature)}-byte Ed25519 signature")
        return signature

    def public_jwk(self) -> dict[str, str]:
        return {**self._public_jwk_no_kid(), "kid": self.kid, "alg": self.alg, "use": "sig"}

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in [*sessions, self._login]:
            try:
                session.close()
            except Exception:  # already closed or the token is gone: nothing left to release
                pass

    def __enter__(self) -> "Pkcs11Signer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def jwks_of(*signers: Signer) -> dict[str, list[dict[str, str]]]:
    return {"keys": [s.public_jwk() for s in signers]}
