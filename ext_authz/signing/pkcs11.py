"""SAE signing key in a PKCS#11 token (Ed25519: CKM_EDDSA; ES256: CKM_ECDSA over SHA-256); token sessions
shared with the HSM wallet."""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import nacl.bindings
import nacl.exceptions
import nacl.signing
from asn1crypto.core import ObjectIdentifier, OctetString

from ext_authz.errors import ConfigError, SigningError
from ext_authz.signing.ecdsa import P256Public, jose_from_token, verify_jose
from ext_authz.signing.file_key import Ed25519Public

# CKA_EC_PARAMS: the curve's OID, DER-encoded (asn1crypto has no name for Ed25519, hence the dotted form)
ED25519_OID_DER = ObjectIdentifier("1.3.101.112").dump()
SECP256K1_OID_DER = ObjectIdentifier("1.3.132.0.10").dump()
P256_OID_DER = ObjectIdentifier("1.2.840.10045.3.1.7").dump()  # secp256r1 (prime256v1)
HSM_PIN_ENV = "SEALGATE_HSM_PIN"


@dataclass(frozen=True)
class HsmKey:
    """Where a key pair lives in a PKCS#11 token (SAE key or anchoring wallet); the PIN comes from the environment."""

    module: str  # the vendor's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so
    token: str  # token label
    key: str  # label of the key pair

    def pin(self) -> str:
        pin = os.environ.get(HSM_PIN_ENV)
        if not pin:
            raise ConfigError(f"set {HSM_PIN_ENV} to the token's user PIN (never passed on the command line)")
        return pin


# python-pkcs11 0.10 calls C_Initialize(NULL): no locking asked for, so the module may assume one
# thread at a time. Every PKCS#11 call in the process holds this lock (SoftHSM2 segfaulted or
# aborted with "double free" when threads opened sessions and looked keys up concurrently).
PKCS11_LOCK = threading.RLock()


def _close_session(session: Any) -> None:
    with PKCS11_LOCK:
        try:
            session.close()  # the last session closing logs the process out
        except Exception:  # already closed or the token is gone: nothing left to release
            pass


class TokenSession:
    """One logged-in PKCS#11 session for the object's life; `close()` (or `with`) logs out."""

    _session: Any

    def close(self) -> None:
        _close_session(self._session)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_token(spec: HsmKey) -> Any:
    import pkcs11
    from pkcs11.exceptions import PKCS11Error

    if not Path(spec.module).is_file():
        raise ConfigError(f"PKCS#11 module {spec.module} does not exist")
    try:
        return pkcs11.lib(spec.module).get_token(token_label=spec.token)
    except (PKCS11Error, RuntimeError) as e:
        raise ConfigError(f"PKCS#11 token {spec.token!r} in {spec.module}: {type(e).__name__} {e}") from e


def login(spec: HsmKey) -> tuple[Any, Any]:
    """Opens the token and a logged-in session (the process's login; close it to log out)."""
    from pkcs11.exceptions import PKCS11Error

    token = _open_token(spec)
    pin = spec.pin()
    try:
        return token, token.open(user_pin=pin)
    except PKCS11Error as e:
        raise ConfigError(f"login to token {spec.token!r}: {type(e).__name__} {e}") from e


def find_key_pair(session: Any, spec: HsmKey, key_type: Any) -> tuple[Any, Any]:
    """The labelled key pair; refuses a private key that could leave the token."""
    from pkcs11 import Attribute, ObjectClass
    from pkcs11.exceptions import PKCS11Error

    try:
        public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, key_type=key_type, label=spec.key)
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, key_type=key_type, label=spec.key)
        exportable = (not private[Attribute.SENSITIVE]) or private[Attribute.EXTRACTABLE]
    except PKCS11Error as e:
        raise ConfigError(f"key pair {spec.key!r} in token {spec.token!r}: {type(e).__name__} {e}") from e
    if exportable:
        raise ConfigError(f"key {spec.key!r} can leave the token (not sensitive or extractable): refused")
    return public, private


def unwrap_ec_point(ec_point: bytes, size: int, what: str) -> bytes:
    """CKA_EC_POINT is DER-wrapped as an OCTET STRING by most tokens, raw by some."""
    if len(ec_point) == size:
        return ec_point
    try:
        inner = OctetString.load(ec_point, strict=True).native
    except ValueError as e:
        raise ConfigError(f"unexpected {what} public key encoding ({len(ec_point)} bytes): {e}") from e
    if len(inner) != size:
        raise ConfigError(f"unexpected {what} public key size {len(inner)}, expected {size}")
    return bytes(inner)


KEY_TYPES = ("ed25519", "p256", "secp256k1")  # SAE signing key (EdDSA, ES256); Ethereum wallet (anchoring)


def generate_hsm_key(spec: HsmKey, key_type: str = "ed25519") -> None:
    """Creates a key pair in the token, the private part sensitive and never extractable."""
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.exceptions import PKCS11Error

    if key_type not in KEY_TYPES:
        raise ConfigError(f"key type must be one of {KEY_TYPES}, found {key_type!r}")
    kind, mechanism, params = {
        "ed25519": (KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN, ED25519_OID_DER),
        "p256": (KeyType.EC, Mechanism.EC_KEY_PAIR_GEN, P256_OID_DER),
        "secp256k1": (KeyType.EC, Mechanism.EC_KEY_PAIR_GEN, SECP256K1_OID_DER)}[key_type]
    try:
        with PKCS11_LOCK, _open_token(spec).open(rw=True, user_pin=spec.pin()) as session:
            if list(session.get_objects({Attribute.LABEL: spec.key, Attribute.CLASS: ObjectClass.PRIVATE_KEY})):
                raise ConfigError(f"token {spec.token!r} already holds a key labelled {spec.key!r}")
            session.generate_keypair(
                kind, mechanism=mechanism, store=True, label=spec.key,
                public_template={Attribute.EC_PARAMS: params},
                private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False, Attribute.SIGN: True})
    except PKCS11Error as e:
        raise ConfigError(f"cannot create {spec.key!r} in token {spec.token!r}: {type(e).__name__} {e}") from e


class Pkcs11Signer(Ed25519Public, TokenSession):
    """Ed25519 (CKM_EDDSA) with the private key inside a PKCS#11 token; it never leaves it.

    One logged-in session for the signer's life; every PKCS#11 call holds
    PKCS11_LOCK. One signer per token per process: a second login while the
    first is open fails (UserAlreadyLoggedIn). `close()` (or `with`) logs out.
    """

    blocking = True

    def __init__(self, spec: HsmKey):
        from pkcs11 import Attribute, KeyType

        self._spec = spec
        with PKCS11_LOCK:
            self._token, self._session = login(spec)
            try:
                public, self._key = find_key_pair(self._session, spec, KeyType.EC_EDWARDS)
                self._set_public(unwrap_ec_point(public[Attribute.EC_POINT], 32, "Ed25519"))
                signature = self.sign(b"sealgate self-test")  # fail at start, not on the first request
                nacl.signing.VerifyKey(self._raw_public).verify(b"sealgate self-test", signature)
            except (SigningError, nacl.exceptions.BadSignatureError) as e:
                self.close()
                raise ConfigError(f"Ed25519 key {spec.key!r} in token {spec.token!r} failed its self-test: {e}") from e
            except BaseException:
                self.close()
                raise

    def sign(self, message: bytes) -> bytes:
        from pkcs11 import Attribute, KeyType, Mechanism
        from pkcs11.exceptions import PKCS11Error

        with PKCS11_LOCK:
            try:
                if self._key is None:  # looked up again after a failure: the token may be back
                    public, private = find_key_pair(self._session, self._spec, KeyType.EC_EDWARDS)
                    if unwrap_ec_point(public[Attribute.EC_POINT], 32, "Ed25519") != self._raw_public:
                        # a new key under the old label: its SAEs would not verify against the published JWKS
                        raise SigningError(f"the key labelled {self._spec.key!r} is not the one this authorizer publishes")
                    self._key = private
                signature = self._key.sign(message, mechanism=Mechanism.EDDSA)
            except (PKCS11Error, ConfigError) as e:
                self._key = None
                raise SigningError(f"HSM signing failed: {type(e).__name__} {e}") from e
        if len(signature) != 64:
            raise SigningError(f"HSM returned a {len(signature)}-byte Ed25519 signature")
        return bytes(signature)



def _p256_public(public: Any) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec
    from pkcs11 import Attribute

    if public[Attribute.EC_PARAMS] != P256_OID_DER:
        raise ConfigError("the key pair is not on P-256")
    point = unwrap_ec_point(public[Attribute.EC_POINT], 65, "P-256")  # 04 || X || Y
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as e:
        raise ConfigError(f"the token's P-256 public key is not a curve point: {e}") from e


class Pkcs11P256Signer(P256Public, TokenSession):
    """ES256 with the P-256 private key inside a PKCS#11 token: CKM_ECDSA over the SHA-256 of the signing
    input (hashed here: SoftHSM2 and many tokens have no CKM_ECDSA_SHA256); the token's r || s (or DER)
    becomes JOSE r || s with low s. Sessions and locking as Pkcs11Signer."""

    blocking = True

    def __init__(self, spec: HsmKey):
        from pkcs11 import KeyType

        self._spec = spec
        with PKCS11_LOCK:
            self._token, self._session = login(spec)
            try:
                public, self._key = find_key_pair(self._session, spec, KeyType.EC)
                self._set_public(_p256_public(public))
                signature = self.sign(b"sealgate self-test")
                if not verify_jose(self._public_key, b"sealgate self-test", signature):
                    raise SigningError("the token's signature does not verify with its public key")
            except SigningError as e:
                self.close()
                raise ConfigError(f"P-256 key {spec.key!r} in token {spec.token!r} failed its self-test: {e}") from e
            except BaseException:
                self.close()
                raise

    def sign(self, message: bytes) -> bytes:
        from pkcs11 import KeyType, Mechanism
        from pkcs11.exceptions import PKCS11Error

        digest = hashlib.sha256(message).digest()
        with PKCS11_LOCK:
            try:
                if self._key is None:  # looked up again after a failure: the token may be back
                    public, private = find_key_pair(self._session, self._spec, KeyType.EC)
                    if _p256_public(public) != self._public_key:
                        raise SigningError(f"the key labelled {self._spec.key!r} is not the one this authorizer publishes")
                    self._key = private
                raw = bytes(self._key.sign(digest, mechanism=Mechanism.ECDSA))
            except (PKCS11Error, ConfigError) as e:
                self._key = None
                raise SigningError(f"HSM signing failed: {type(e).__name__} {e}") from e
        return jose_from_token(raw)


def token_key_type(spec: HsmKey) -> str:
    """"ed25519" or "p256": which kind of SAE key pair the token holds under the label (ConfigError otherwise)."""
    from pkcs11 import Attribute, KeyType, ObjectClass
    from pkcs11.exceptions import PKCS11Error

    with PKCS11_LOCK:
        token = _open_token(spec)
        try:
            # public keys are public objects: no login, so a signer already logged in here is not disturbed
            with token.open() as session:
                for obj in session.get_objects({Attribute.LABEL: spec.key, Attribute.CLASS: ObjectClass.PUBLIC_KEY}):
                    if obj[Attribute.KEY_TYPE] == KeyType.EC_EDWARDS:
                        return "ed25519"
                    if obj[Attribute.KEY_TYPE] == KeyType.EC and obj[Attribute.EC_PARAMS] == P256_OID_DER:
                        return "p256"
        except PKCS11Error as e:
            raise ConfigError(f"PKCS#11 token {spec.token!r}: {type(e).__name__} {e}") from e
        spec.pin()  # no PIN set: say so, as a signer would
    raise ConfigError(f"token {spec.token!r} holds no Ed25519 or P-256 key pair labelled {spec.key!r}")


def hsm_signer(spec: HsmKey) -> Pkcs11Signer | Pkcs11P256Signer:
    """The SAE signer for the token's key pair under the label, Ed25519 or P-256."""
    return Pkcs11Signer(spec) if token_key_type(spec) == "ed25519" else Pkcs11P256Signer(spec)
