"""The Signer interface every SAE key implements (file key or HSM), and the JWKS built from signers."""

from __future__ import annotations

from typing import Protocol


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


def jwks_of(*signers: Signer) -> dict[str, list[dict[str, str]]]:
    return {"keys": [s.public_jwk() for s in signers]}

