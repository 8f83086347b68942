"""Ed25519 SAE signing key held in memory (PyNaCl), loaded from a 32-byte seed file."""

from __future__ import annotations

import os
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing
from joserfc.jwk import OKPKey

from ext_authz.envelope.encoding import b64url
from ext_authz.errors import ConfigError


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
            p.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
        seed = p.read_bytes()
        return cls(seed)

