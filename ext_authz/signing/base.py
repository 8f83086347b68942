"""The Signer interface every SAE key implements (file key or HSM), and the JWKS built from signers."""

from __future__ import annotations

from typing import Protocol


class Signer(Protocol):
    """Signs the JWS signing input. `kid` is the RFC 7638 thumbprint of the public JWK.

    `blocking`: signing waits on a device (an HSM), so the gRPC edge runs decisions
    on worker threads instead of the event loop.
    """

    @property
    def alg(self) -> str: ...

    @property
    def kid(self) -> str: ...

    @property
    def blocking(self) -> bool: ...

    def sign(self, message: bytes) -> bytes: ...

    def public_jwk(self) -> dict[str, str]: ...


def jwks_of(*signers: Signer) -> dict[str, list[dict[str, str]]]:
    return {"keys": [s.public_jwk() for s in signers]}



def published_jwks(signer: Signer) -> dict[str, list[dict[str, str]]]:
    """What the authorizer publishes: a rotating keyring's live JWKS (current, next, retired in grace), else the
    signer's one key."""
    live = getattr(signer, "jwks", None)
    return live if isinstance(live, dict) else jwks_of(signer)
