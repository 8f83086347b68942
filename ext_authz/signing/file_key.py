"""SAE signing keys held in memory, loaded from a file: Ed25519 (PyNaCl, a 32-byte seed) or ES256
(cryptography, a P-256 private key in PKCS#8 PEM). `load_file_signer()` tells them apart by content."""

from __future__ import annotations

import os
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import OKPKey

from ext_authz.envelope.encoding import b64url
from ext_authz.errors import ConfigError
from ext_authz.signing.ecdsa import P256Public, jose_from_der

ALGORITHMS = ("EdDSA", "ES256")  # what `sealgate keys generate --alg` makes


class Ed25519Public:
    """The public half both Ed25519 signers share: raw key, JWK, kid (RFC 7638 thumbprint)."""

    alg = "EdDSA"
    _raw_public: bytes
    kid: str

    def _set_public(self, raw_public: bytes) -> None:
        self._raw_public = raw_public
        self.kid = OKPKey.import_key(dict[str, str | list[str]](self._public_jwk_no_kid())).thumbprint()

    @property
    def raw_public(self) -> bytes:
        return self._raw_public

    def _public_jwk_no_kid(self) -> dict[str, str]:
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(self._raw_public)}

    def public_jwk(self) -> dict[str, str]:
        return {**self._public_jwk_no_kid(), "kid": self.kid, "alg": self.alg, "use": "sig"}


class Ed25519Signer(Ed25519Public):
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
    def from_file(cls, path: str | Path, create: bool = False) -> Ed25519Signer:
        """Loads a raw 32-byte seed; with create=True makes one (mode 0600) if absent."""
        p = Path(path)
        if not p.exists():
            if not create:
                raise ConfigError(f"signing key {p} does not exist")
            _write_new(p, os.urandom(32))
        seed = p.read_bytes()
        return cls(seed)


def _write_new(path: Path, content: bytes) -> None:
    """Creates `path` mode 0600; never overwrites."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)


class P256Signer(P256Public):
    """ES256 with cryptography; the P-256 private key is held in memory. Signatures come out low-s and
    deterministic (RFC 6979: no per-signature random nonce to get wrong; the test vectors are reproducible)."""

    blocking = False
    _ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)

    def __init__(self, private_key: ec.EllipticCurvePrivateKey):
        if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(private_key.curve, ec.SECP256R1):
            raise ConfigError("ES256 needs a P-256 private key")
        self._private_key = private_key
        self._set_public(private_key.public_key())

    @classmethod
    def generate(cls) -> P256Signer:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    def sign(self, message: bytes) -> bytes:
        return jose_from_der(self._private_key.sign(message, self._ECDSA))

    def private_pem(self) -> bytes:
        return self._private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption())

    @classmethod
    def from_pem(cls, pem: bytes, where: str = "key") -> P256Signer:
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{where}: not an unencrypted PKCS#8/SEC1 PEM private key: {e}") from e
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(f"{where}: ES256 needs a P-256 (secp256r1) key, found {type(key).__name__}")
        return cls(key)

    @classmethod
    def from_file(cls, path: str | Path, create: bool = False) -> P256Signer:
        """Loads a PEM P-256 key; with create=True makes one (mode 0600) if absent."""
        p = Path(path)
        if not p.exists():
            if not create:
                raise ConfigError(f"signing key {p} does not exist")
            _write_new(p, cls.generate().private_pem())
        return cls.from_pem(p.read_bytes(), str(p))


def load_file_signer(path: str | Path) -> Ed25519Signer | P256Signer:
    """The key file as its signer: a 32-byte raw seed is Ed25519, a PEM private key is ES256."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"signing key {p} does not exist")
    try:
        content = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"signing key {p}: {e.strerror}") from e
    if content.lstrip().startswith(b"-----BEGIN"):
        return P256Signer.from_pem(content, str(p))
    return Ed25519Signer(content)


def new_key_file(path: str | Path, alg: str) -> Ed25519Signer | P256Signer:
    """Creates a signing key file (mode 0600, never overwriting) for `alg` (EdDSA or ES256)."""
    if alg not in ALGORITHMS:
        raise ConfigError(f"algorithm must be one of {ALGORITHMS}, found {alg!r}")
    if Path(path).exists():
        raise ConfigError(f"{path} exists: a key file is never overwritten")
    return Ed25519Signer.from_file(path, create=True) if alg == "EdDSA" else P256Signer.from_file(path, create=True)

