"""Signers for SAEs and denial records: one interface, file key or HSM behind it."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Protocol

import nacl.bindings
import nacl.signing
from joserfc.jwk import OKPKey

from .errors import ConfigError


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class Signer(Protocol):
    """Signs the JWS signing input. `kid` is the RFC 7638 thumbprint of the public JWK."""

    alg: str
    kid: str

    def sign(self, message: bytes) -> bytes: ...

    def public_jwk(self) -> dict[str, str]: ...


class Ed25519Signer:
    """Ed25519 with PyNaCl; the key is a 32-byte seed held in memory."""

    alg = "EdDSA"

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


def jwks_of(*signers: Signer) -> dict[str, list[dict[str, str]]]:
    return {"keys": [s.public_jwk() for s in signers]}
