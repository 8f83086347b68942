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
from asn1crypto.core import ObjectIdentifier, OctetString
from eth_keys.constants import SECPK1_N
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


class _Ed25519Public:
    """The public half both Ed25519 signers share: raw key, JWK, kid (RFC 7638 thumbprint)."""

    alg = "EdDSA"
    _raw_public: bytes
    kid: str

    def _set_public(self, raw_public: bytes) -> None:
        self._raw_public = raw_public
        self.kid = OKPKey.import_key(self._public_jwk_no_kid()).thumbprint()

    @property
    def raw_public(self) -> bytes:
        return self._raw_public

    def _public_jwk_no_kid(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(self._raw_public)}

    def public_jwk(self) -> dict[str, str]:
        return {**self._public_jwk_no_kid(), "kid": self.kid, "alg": self.alg, "use": "sig"}


class Ed25519Signer(_Ed25519Public):
    """Ed25519 with PyNaCl; the key is a 32-byte seed held in memory."""

    blocking = False

    def __init__(self, seed: bytes):
        if len(seed) != 32:
            raise ConfigError(f"Ed25519 seed must be 32 bytes, found {len(seed)}")
        key = nacl.signing.SigningKey(seed)
        self._secret = key._signing_key  # seed || public key, as libsodium's crypto_sign takes it
        self._set_public(bytes(key.verify_key))

    def sign(self, message: bytes) -> bytes:
        # the binding directly: SigningKey.sign wraps the result in a SignedMessage we don't need
        return nacl.bindings.crypto_sign(message, self._secret)[: nacl.bindings.crypto_sign_BYTES]

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


# CKA_EC_PARAMS: the curve's OID, DER-encoded (asn1crypto has no name for Ed25519, hence the dotted form)
ED25519_OID_DER = ObjectIdentifier("1.3.101.112").dump()
SECP256K1_OID_DER = ObjectIdentifier("1.3.132.0.10").dump()
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


class _TokenSession:
    """One logged-in PKCS#11 session for the object's life; `close()` (or `with`) logs out."""

    _session: Any

    def close(self) -> None:
        _close_session(self._session)

    def __enter__(self):  # noqa: ANN204 (the subclass)
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


def _login(spec: HsmKey) -> tuple[Any, Any]:
    """Opens the token and a logged-in session (the process's login; close it to log out)."""
    from pkcs11.exceptions import PKCS11Error

    token = _open_token(spec)
    pin = spec.pin()
    try:
        return token, token.open(user_pin=pin)
    except PKCS11Error as e:
        raise ConfigError(f"login to token {spec.token!r}: {type(e).__name__} {e}") from e


def _key_pair(session: Any, spec: HsmKey, key_type: Any) -> tuple[Any, Any]:
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


def _unwrap_ec_point(ec_point: bytes, size: int, what: str) -> bytes:
    """CKA_EC_POINT is DER-wrapped as an OCTET STRING by most tokens, raw by some."""
    if len(ec_point) == size:
        return ec_point
    try:
        inner = OctetString.load(ec_point, strict=True).native
    except ValueError as e:
        raise ConfigError(f"unexpected {what} public key encoding ({len(ec_point)} bytes): {e}") from e
    if len(inner) != size:
        raise ConfigError(f"unexpected {what} public key size {len(inner)}, expected {size}")
    return inner


KEY_TYPES = ("ed25519", "secp256k1")  # SAE signing key; Ethereum wallet (anchoring)


def generate_hsm_key(spec: HsmKey, key_type: str = "ed25519") -> None:
    """Creates a key pair in the token, the private part sensitive and never extractable."""
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11.exceptions import PKCS11Error

    if key_type not in KEY_TYPES:
        raise ConfigError(f"key type must be one of {KEY_TYPES}, found {key_type!r}")
    kind, mechanism, params = ((KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN, ED25519_OID_DER) if key_type == "ed25519"
                               else (KeyType.EC, Mechanism.EC_KEY_PAIR_GEN, SECP256K1_OID_DER))
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


class Pkcs11Signer(_Ed25519Public, _TokenSession):
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
            self._token, self._session = _login(spec)
            try:
                public, self._key = _key_pair(self._session, spec, KeyType.EC_EDWARDS)
                self._set_public(_unwrap_ec_point(public[Attribute.EC_POINT], 32, "Ed25519"))
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
                    public, private = _key_pair(self._session, self._spec, KeyType.EC_EDWARDS)
                    if _unwrap_ec_point(public[Attribute.EC_POINT], 32, "Ed25519") != self._raw_public:
                        # a new key under the old label: its SAEs would not verify against the published JWKS
                        raise SigningError(f"the key labelled {self._spec.key!r} is not the one this authorizer publishes")
                    self._key = private
                signature = self._key.sign(message, mechanism=Mechanism.EDDSA)
            except (PKCS11Error, ConfigError) as e:
                self._key = None
                raise SigningError(f"HSM signing failed: {type(e).__name__} {e}") from e
        if len(signature) != 64:
            raise SigningError(f"HSM returned a {len(signature)}-byte Ed25519 signature")
        return signature


SECP256K1_N = SECPK1_N  # the group order, from eth_keys rather than typed out


def low_s(s: int) -> int:
    """EIP-2: nodes reject s above n/2; (r, n - s) is the same signature's other form."""
    return SECP256K1_N - s if s > SECP256K1_N // 2 else s


class HsmWallet(_TokenSession):
    """An Ethereum account whose secp256k1 key stays in a PKCS#11 token (CKM_ECDSA over the hash).

    Drop-in for eth_account's LocalAccount where ChainClient uses it (`address`,
    `sign_transaction`): eth_account builds and hashes the transaction, the token
    signs, s is normalised low and the recovery id found with coincurve.
    """

    def __init__(self, spec: HsmKey):
        self._spec = spec
        with PKCS11_LOCK:
            self._token, self._session = _login(spec)
            self._init_keys(spec)

    def _init_keys(self, spec: HsmKey) -> None:
        from eth_utils import keccak, to_checksum_address
        from pkcs11 import Attribute, KeyType

        try:
            public, self._private = _key_pair(self._session, spec, KeyType.EC)
            if public[Attribute.EC_PARAMS] != SECP256K1_OID_DER:
                raise ConfigError(f"key {spec.key!r} is not on secp256k1")
            point = _unwrap_ec_point(public[Attribute.EC_POINT], 65, "secp256k1")  # 04 || X || Y
            if point[0] != 4:
                raise ConfigError("secp256k1 public key is not an uncompressed point")
            self._public = point
            self.address = to_checksum_address(keccak(point[1:])[12:])
            self.sign_msg_hash(keccak(b"sealgate self-test"))
        except BaseException:
            self.close()
            raise

    def sign_msg_hash(self, digest: bytes) -> Any:
        """(v, r, s) over a 32-byte hash as an eth_keys Signature: the interface eth_account signs through."""
        import coincurve
        from eth_keys.datatypes import Signature
        from pkcs11 import Mechanism
        from pkcs11.exceptions import PKCS11Error

        if len(digest) != 32:
            raise SigningError(f"expected a 32-byte hash, found {len(digest)} bytes")
        try:
            with PKCS11_LOCK:
                rs = self._private.sign(digest, mechanism=Mechanism.ECDSA)
        except PKCS11Error as e:
            raise SigningError(f"HSM signing failed: {type(e).__name__} {e}") from e
        r, s = int.from_bytes(rs[:32], "big"), low_s(int.from_bytes(rs[32:], "big"))
        compact = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        for v in (0, 1):
            recovered = coincurve.PublicKey.from_signature_and_message(compact + bytes([v]), digest, hasher=None)
            if recovered.format(compressed=False) == self._public:
                return Signature(vrs=(v, r, s))
        raise SigningError("HSM signature does not recover to the wallet's public key")

    def sign_transaction(self, transaction: dict[str, Any]) -> Any:
        from eth_account._utils.signing import sign_transaction_dict
        from eth_account.datastructures import SignedTransaction
        from eth_utils import keccak
        from hexbytes import HexBytes

        transaction = dict(transaction)
        sender = transaction.pop("from", self.address)
        if str(sender).lower() != self.address.lower():  # as eth_account's LocalAccount refuses it
            raise SigningError(f"transaction is from {sender}, this wallet is {self.address}")
        v, r, s, encoded = sign_transaction_dict(self, transaction)
        return SignedTransaction(raw_transaction=HexBytes(encoded), hash=HexBytes(keccak(encoded)), r=r, s=s, v=v)


def jwks_of(*signers: Signer) -> dict[str, list[dict[str, str]]]:
    return {"keys": [s.public_jwk() for s in signers]}
