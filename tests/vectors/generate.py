"""Regenerates the SAE test vectors from fixed keys: `python tests/vectors/generate.py`.

Each file is named after the failure it exercises and records the expected
outcome; tests/unit/test_sae_vectors.py checks both the outcome and that the
committed files equal a fresh generation.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ext_authz.envelope.encoding import b64url, canonical_json
from ext_authz.envelope.jws import DENIAL_TYP, SAE_TYP, EnvelopeEncoder
from ext_authz.signing.base import jwks_of
from ext_authz.signing.file_key import Ed25519Signer

HERE = Path(__file__).resolve().parent
NOW = 1_800_000_000
SIGNER = Ed25519Signer(bytes(range(32)))
OTHER = Ed25519Signer(bytes(range(1, 33)))

CLAIMS = {
    "iss": "spiffe://sealgate.local/agent/procurement-01",
    "sub": "payments-api",
    "aud": "payments-api",
    "act": {"type": "payment.transfer", "m": "POST", "h": "payments.internal", "p": "/v1/transfers", "amt": 50000, "dc": "internal"},
    "pol": {"addr": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512", "block": 12},
    "mod": "sha256:" + "ab" * 32,
    "iat": NOW - 10,
    "nbf": NOW - 10,
    "exp": NOW + 50,
    "jti": "vector-jti-0001",
    "ctx": {"sid": None, "parent": None, "dc": "internal"},
    "chain": {"id": 31337, "anchor": "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0"},
}


def _raw(header: dict, claims: dict, signer: Ed25519Signer | None) -> str:
    signing_input = f"{b64url(canonical_json(header))}.{b64url(canonical_json(claims))}"
    sig = b64url(signer.sign(signing_input.encode())) if signer else ""
    return f"{signing_input}.{sig}"


def vectors() -> dict[str, dict]:
    enc = EnvelopeEncoder(SIGNER)
    valid = enc.encode(CLAIMS)
    head, payload, sig = valid.split(".")
    tampered_claims = {**CLAIMS, "act": {**CLAIMS["act"], "amt": 5_000_000}}
    missing = {k: v for k, v in CLAIMS.items() if k != "pol"}
    hdr = {"alg": "EdDSA", "kid": SIGNER.kid, "typ": SAE_TYP}
    return {
        "sae_valid": {"token": valid, "expect": "VALID"},
        "sae_expired": {"token": enc.encode({**CLAIMS, "exp": NOW - 1}), "expect": "SAE_INVALID"},
        "sae_not_yet_valid": {"token": enc.encode({**CLAIMS, "nbf": NOW + 30}), "expect": "SAE_INVALID"},
        "sae_alg_none": {"token": _raw({"alg": "none", "kid": SIGNER.kid, "typ": SAE_TYP}, CLAIMS, None), "expect": "SAE_INVALID"},
        "sae_alg_hs256": {"token": _raw({"alg": "HS256", "kid": SIGNER.kid, "typ": SAE_TYP}, CLAIMS, SIGNER), "expect": "SAE_INVALID"},
        "sae_tampered_payload": {"token": f"{head}.{b64url(canonical_json(tampered_claims))}.{sig}", "expect": "SAE_INVALID"},
        "sae_signed_by_other_key": {"token": _raw(hdr, CLAIMS, OTHER), "expect": "SAE_INVALID"},
        "sae_unknown_kid": {"token": EnvelopeEncoder(OTHER).encode(CLAIMS), "expect": "SAE_INVALID"},
        "sae_wrong_typ": {"token": enc.encode(CLAIMS, DENIAL_TYP), "expect": "SAE_TYPE_INVALID"},
        "sae_missing_pol": {"token": enc.encode(missing), "expect": "SAE_INVALID"},
        "sae_truncated": {"token": f"{head}.{payload}", "expect": "SAE_INVALID"},
        "sae_oversized": {"token": enc.encode({**CLAIMS, "pad": "x" * 9000}), "expect": "SAE_INVALID"},
    }


def write() -> None:
    (HERE / "jwks.json").write_text(json.dumps(jwks_of(SIGNER), indent=2, sort_keys=True) + "\n")
    for name, vec in vectors().items():
        (HERE / f"{name}.json").write_text(json.dumps({**vec, "now": NOW}, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    write()
