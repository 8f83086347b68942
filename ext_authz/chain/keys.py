"""The on-chain SigningKeyRegistry: which keys may sign SAEs and denials, read at a block.

`kid` on-chain is the 32 bytes behind the JWK's RFC 7638 thumbprint (base64url in the JWS header). A JWK
rebuilt from the registry must have exactly that thumbprint, so a registry entry cannot name one kid and
carry another key.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import ECKey, OKPKey

from ext_authz import reasons
from ext_authz.chain.client import ChainClient
from ext_authz.envelope.encoding import b64url
from ext_authz.errors import ConfigError, InputRejected

ALG_EDDSA, ALG_ES256 = 1, 2
ALG_NAMES = {ALG_EDDSA: "EdDSA", ALG_ES256: "ES256"}
FOREVER = 2**64 - 1


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def kid_bytes(kid: str) -> bytes:
    try:
        raw = _b64url_decode(kid) if isinstance(kid, str) and kid.isascii() else b""
    except ValueError:  # binascii.Error: not base64 at all
        raw = b""
    if len(raw) != 32 or b64url(raw) != kid:
        raise InputRejected(reasons.SAE_INVALID, f"kid must be an RFC 7638 SHA-256 thumbprint (43 base64url chars), found {kid!r}")
    return raw


def registration_of(jwk: dict[str, Any]) -> tuple[bytes, int, bytes]:
    """(kid, alg, public key bytes) of a public JWK, as `addKey` takes them."""
    key: Any
    try:
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            alg, public = ALG_EDDSA, _b64url_decode(jwk["x"])
            key = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]})
        elif jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            alg, public = ALG_ES256, _b64url_decode(jwk["x"]) + _b64url_decode(jwk["y"])
            key = ECKey.import_key({"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"]})
        else:
            raise ConfigError(f"a signing key is an Ed25519 (OKP) or P-256 (EC) public JWK, found {jwk.get('kty')}/{jwk.get('crv')}")
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"not a public JWK: {e}") from e
    kid = key.thumbprint()
    if "kid" in jwk and jwk["kid"] != kid:
        raise ConfigError(f"the JWK's kid {jwk['kid']} is not its RFC 7638 thumbprint {kid}")
    return kid_bytes(kid), alg, public


def jwk_of(kid: bytes, alg: int, public: bytes) -> dict[str, str]:
    """The public JWK of a registry entry; refused when its thumbprint is not `kid`."""
    if alg == ALG_EDDSA and len(public) == 32:
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(public)}
        thumb = OKPKey.import_key(dict(jwk)).thumbprint()
    elif alg == ALG_ES256 and len(public) == 64:
        jwk = {"kty": "EC", "crv": "P-256", "x": b64url(public[:32]), "y": b64url(public[32:])}
        thumb = ECKey.import_key(dict(jwk)).thumbprint()
    else:
        raise InputRejected(reasons.SIGNING_KEY_UNREGISTERED, f"registry entry {b64url(kid)} has alg {alg} and a "
                                                              f"{len(public)}-byte key")
    if thumb != b64url(kid):
        raise InputRejected(reasons.SIGNING_KEY_UNREGISTERED, f"registry entry {b64url(kid)} carries a key whose "
                                                              f"thumbprint is {thumb}")
    return {**jwk, "kid": thumb, "alg": ALG_NAMES[alg], "use": "sig"}


@dataclass(frozen=True)
class KeyRecord:
    kid: str
    alg: int
    valid_from: int
    valid_until: int
    revoked_at: int  # 0: not revoked
    jwk: dict[str, str]

    def covers(self, timestamp: int) -> bool:
        return self.valid_from <= timestamp < self.valid_until

    def to_json(self) -> dict[str, Any]:
        return {"kid": self.kid, "alg": self.alg, "validFrom": self.valid_from, "validUntil": self.valid_until,
                "revokedAt": self.revoked_at, "jwk": self.jwk}


class SigningKeys:
    """Reads the registry at a block."""

    def __init__(self, client: ChainClient, address: str):
        self.address = address
        self.contract = client.contract("SigningKeyRegistry", address)

    def record(self, kid: str, block: int | str = "latest") -> KeyRecord | None:
        raw = kid_bytes(kid)
        alg, valid_from, valid_until, revoked_at, public = self.contract.functions.keyOf(raw).call(block_identifier=block)
        if alg == 0:
            return None
        return KeyRecord(kid, alg, valid_from, valid_until, revoked_at, jwk_of(raw, alg, bytes(public)))

    def jwks(self, block: int | str = "latest", at: int | None = None) -> dict[str, list[dict[str, str]]]:
        """The keys registered at `block`, not revoked, whose window covers `at` (default: that block's time)."""
        if at is None:
            at = int(self.contract.w3.eth.get_block(block)["timestamp"])
        keys = []
        for raw in self.contract.functions.keyIds().call(block_identifier=block):
            rec = self.record(b64url(bytes(raw)), block)
            if rec is not None and rec.revoked_at == 0 and rec.covers(at):
                keys.append(rec.jwk)
        return {"keys": keys}

    def check(self, kid: str, issued_at: int, key_block: int, anchored_block: int | None) -> KeyRecord:
        """The key that signed a token: registered at `key_block` (the token's pol.block), its window covering
        `iat`, and not revoked at that block nor at the block that anchored the token."""
        rec = self.record(kid, key_block)
        if rec is None:
            raise InputRejected(reasons.SIGNING_KEY_UNREGISTERED,
                                f"key {kid} is not in the SigningKeyRegistry {self.address} at block {key_block}")
        if rec.revoked_at != 0:
            raise InputRejected(reasons.SIGNING_KEY_REVOKED, f"key {kid} was revoked at {rec.revoked_at}, before block {key_block}")
        if not rec.covers(issued_at):
            raise InputRejected(reasons.SIGNING_KEY_REVOKED, f"key {kid} is valid [{rec.valid_from}, {rec.valid_until}); "
                                                             f"the token was issued at {issued_at}")
        if anchored_block is not None:
            later = self.record(kid, anchored_block)
            if later is None or later.revoked_at != 0:
                raise InputRejected(reasons.SIGNING_KEY_REVOKED,
                                    f"key {kid} was revoked by block {anchored_block}, which anchored the token")
        return rec


def call_add_key(client: ChainClient, registry: str, jwk: dict[str, Any], valid_from: int, valid_until: int = FOREVER
                 ) -> tuple[str, Any, str]:
    """A governed change: `addKey` (through the Safe and the timelock)."""
    kid, alg, public = registration_of(jwk)
    c = client.contract("SigningKeyRegistry", registry)
    return c.address, c.functions.addKey(kid, alg, public, valid_from, valid_until), \
        f"add {ALG_NAMES[alg]} signing key {b64url(kid)} valid [{valid_from}, {valid_until})"


def call_rotate_key(client: ChainClient, registry: str, old_kid: str, old_valid_until: int, jwk: dict[str, Any],
                    valid_from: int, valid_until: int = FOREVER) -> tuple[str, Any, str]:
    """A governed change: `rotateKey`: the new key added, the old one's window ending at `old_valid_until`."""
    kid, alg, public = registration_of(jwk)
    c = client.contract("SigningKeyRegistry", registry)
    fn = c.functions.rotateKey(kid_bytes(old_kid), old_valid_until, kid, alg, public, valid_from, valid_until)
    return c.address, fn, f"rotate signing key {old_kid} (valid until {old_valid_until}) -> {b64url(kid)}"
