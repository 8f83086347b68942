"""Regenerates the test vectors from fixed keys and fixed times: `python tests/vectors/generate.py`.

SAE and denial format version 3 (typ application/sae.v3+jwt, application/sae-denial.v3+jwt), approval
version 2 (application/sae-approval.v2+jwt); ext_authz.envelope.models.
Five families, one JSON file per case, each named after what it exercises and recording
the expected outcome (`expect`: VALID or the reason code):

  sae_*      `verify_sae(token, jwks.json, now=now)`; `stage` says which check refuses an
             invalid one: "verify" (signature, typ, time, required claims: `jws.verify()`)
             or "claims" (a claim's type or format: `Sae.from_claims()`)
  denial_*   `verify_denial(token, jwks.json)`, with `stage` as above
  approval_* `check_approval(token, approvers, agent, request, at=now)`: `approvers` maps a
             name to its Ed25519 public key (base64url), as the ApproverRegistry does
  binding_*  `check_sae(token, jwks.json, **request, now=now)` at the target (`body` is UTF-8;
             `request` names the audience and the issuer the target pins)
  *_noncanonical_*  the same token with another base64url spelling of the same bytes (unused
             low bits of a segment's last character set, padding, the standard alphabet):
             refused by `jws.verify()`, though jwt_authn, jwcrypto, authlib and npm jose accept some
  merkle_*   OpenZeppelin StandardMerkleTree over bytes32 values (the SAE hashes): values,
             leaves, root and each value's proof; or one proof that must fail

  *_es256_*  the same families signed ES256 by jwks.json's second key (P-256), and ES256's own
             failures: the high-s twin of a signature, a DER signature, an EdDSA header on the key

Valid tokens carry their `claims`. Ed25519 and our ES256 (RFC 6979) signatures are deterministic, so the same keys
give the same files; tests/unit/test_envelope_vectors.py fails when the committed files
differ from a fresh generation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from ext_authz.anchoring.merkle import MerkleTree, leaf_hash  # noqa: E402
from ext_authz.envelope.encoding import b64url, canonical_json, sae_hash  # noqa: E402
from ext_authz.envelope.jws import APPROVAL_TYP, DENIAL_TYP, SAE_TYP, EnvelopeEncoder  # noqa: E402
from ext_authz.envelope.models import (  # noqa: E402
    Action,
    Approval,
    ApprovalRef,
    ChainRef,
    Context,
    Denial,
    PolicyInputs,
    PolicyRef,
    Sae,
)
from ext_authz.signing.base import jwks_of  # noqa: E402
from ext_authz.signing.ecdsa import P256_ORDER  # noqa: E402
from ext_authz.signing.file_key import Ed25519Signer, P256Signer  # noqa: E402

HERE = Path(__file__).resolve().parent
ISSUER = "spiffe://sealgate.local/sealgate/authorizer"  # the authorizer: iss of SAEs and denials
NOW = 1_800_000_000
SIGNER = Ed25519Signer(bytes(range(32)))  # the authorizer: its key is jwks.json
OTHER = Ed25519Signer(bytes(range(1, 33)))  # a key nobody trusts
ALICE = Ed25519Signer(bytes([7]) * 32)  # an approver registered as "alice"
MALLORY = Ed25519Signer(bytes([9]) * 32)  # not registered
# the authorizer's ES256 key (jwks.json's second key) and one nobody trusts; RFC 6979 signatures: reproducible
ES256_SIGNER = P256Signer(ec.derive_private_key(int.from_bytes(hashlib.sha256(b"sealgate es256 vector key").digest()), ec.SECP256R1()))
ES256_OTHER = P256Signer(ec.derive_private_key(int.from_bytes(hashlib.sha256(b"sealgate es256 other key").digest()), ec.SECP256R1()))

AGENT = "spiffe://sealgate.local/agent/procurement-01"
TARGET = "payments-api"
BODY = '{"amount_cents": 50000, "to": "vendor-7"}'
LARGE_BODY = '{"amount_cents": 2000000, "to": "vendor-7"}'
ACTION = Action("payment.transfer", "POST", "payments.internal", "/v1/transfers", 50_000, "internal",
                hashlib.sha256(BODY.encode()).hexdigest())
LARGE_ACTION = replace(ACTION, amount=2_000_000, body_sha256=hashlib.sha256(LARGE_BODY.encode()).hexdigest())
POLICY = PolicyRef("0x5FbDB2315678afecb367f032d93F642f64180aa3", "0x" + hashlib.sha256(b"payments").hexdigest(),
                   "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512", 1, 12)
CHAIN = ChainRef(31337, "0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0")
INPUTS = PolicyInputs(hashlib.sha256(b"agent SPKI").hexdigest(), 20)  # key fingerprint and risk score
SAE = Sae(ISSUER, AGENT, TARGET, ACTION, POLICY, INPUTS, "sha256:" + "ab" * 32, NOW - 10, NOW - 10, NOW + 50,
          "vector-jti-0001", Context("session-1", None, "internal"), CHAIN)
DENIAL = Denial(ISSUER, AGENT, TARGET, ACTION, POLICY, NOW - 5, "vector-denial-0001", "AMOUNT_OVER_LIMIT",
                "amount exceeds the per-action limit", CHAIN, inputs=INPUTS)
APPROVAL = Approval("alice", AGENT, LARGE_ACTION.approval_digest(AGENT, TARGET), NOW - 60, NOW + 240,
                    "vector-approval-0001")
APPROVERS = {"alice": b64url(ALICE.raw_public)}
V1_TYPS = {SAE_TYP: "application/sae+jwt", DENIAL_TYP: "application/sae-denial+jwt",
           APPROVAL_TYP: "application/sae-approval+jwt"}  # format version 1: refused
V2_TYPS = {SAE_TYP: "application/sae.v2+jwt", DENIAL_TYP: "application/sae-denial.v2+jwt"}  # version 2: refused
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def _low_bits_set(token: str, segment: int) -> str:
    """The same bytes spelled differently: one unused low bit of the segment's last character set."""
    parts = token.split(".")
    seg = parts[segment]
    assert len(seg) % 4 in (2, 3), f"segment {segment} has no unused bits"
    parts[segment] = seg[:-1] + _ALPHABET[_ALPHABET.index(seg[-1]) | 1]
    assert parts[segment] != seg
    return ".".join(parts)


def _padded(token: str) -> str:
    head, payload, sig = token.split(".")
    return f"{head}.{payload}.{sig}{'=' * (-len(sig) % 4)}"


def _standard_alphabet(token: str) -> str:
    """'-' and '_' spelled '+' and '/' (base64, not base64url) in the first segment that has them."""
    parts = token.split(".")
    i = next(i for i, p in enumerate(parts) if "-" in p or "_" in p)
    parts[i] = parts[i].replace("-", "+").replace("_", "/")
    return ".".join(parts)


def _raw(header: dict[str, Any], claims: dict[str, Any], signer: Ed25519Signer | P256Signer | None) -> str:
    """A token the encoder would not make (another alg, no signature, a foreign signature)."""
    signing_input = f"{b64url(canonical_json(header))}.{b64url(canonical_json(claims))}"
    sig = b64url(signer.sign(signing_input.encode())) if signer else ""
    return f"{signing_input}.{sig}"


def _tampered(token: str, claims: dict[str, Any]) -> str:
    head, _, sig = token.split(".")
    return f"{head}.{b64url(canonical_json(claims))}.{sig}"


def _valid(token: str, claims: dict[str, Any]) -> dict[str, Any]:
    return {"token": token, "expect": "VALID", "claims": claims}


def _invalid(token: str, expect: str, stage: str) -> dict[str, Any]:
    return {"token": token, "expect": expect, "stage": stage}


def sae_vectors() -> dict[str, dict[str, Any]]:
    enc = EnvelopeEncoder(SIGNER)
    claims = SAE.to_claims()
    valid = enc.encode(claims)
    head, payload, _ = valid.split(".")
    with_parent = replace(SAE, jti="vector-jti-0002", context=replace(SAE.context, parent_sha256=sae_hash(valid).hex()))
    approval_token = EnvelopeEncoder(ALICE, kid="alice").encode(APPROVAL.to_claims(), APPROVAL_TYP)
    with_approval = replace(SAE, jti="vector-jti-0003", action=LARGE_ACTION,
                            approval=ApprovalRef("alice", APPROVAL.jti, APPROVAL.request, approval_token))
    act, approved = claims["act"], with_approval.to_claims()
    payload_noncanonical = 1 if len(payload) % 4 in (2, 3) else 0  # whichever of payload and header can be respelled

    def claims_with(**changes: Any) -> str:
        return enc.encode({**claims, **changes})

    return {
        "sae_valid": _valid(valid, claims),
        "sae_with_parent": _valid(enc.encode(with_parent.to_claims()), with_parent.to_claims()),
        "sae_with_approval": _valid(enc.encode(with_approval.to_claims()), with_approval.to_claims()),
        "sae_expired": _invalid(claims_with(exp=NOW - 1), "SAE_INVALID", "verify"),
        "sae_not_yet_valid": _invalid(claims_with(nbf=NOW + 30), "SAE_INVALID", "verify"),
        "sae_time_not_integer": _invalid(claims_with(exp=str(NOW + 50)), "SAE_INVALID", "verify"),
        "sae_alg_none": _invalid(_raw({"alg": "none", "kid": SIGNER.kid, "typ": SAE_TYP}, claims, None), "SAE_INVALID", "verify"),
        "sae_alg_hs256": _invalid(_raw({"alg": "HS256", "kid": SIGNER.kid, "typ": SAE_TYP}, claims, SIGNER), "SAE_INVALID", "verify"),
        "sae_tampered_payload": _invalid(_tampered(valid, {**claims, "act": {**act, "amt": "5000000"}}), "SAE_INVALID", "verify"),
        "sae_signed_by_other_key": _invalid(_raw({"alg": "EdDSA", "kid": SIGNER.kid, "typ": SAE_TYP}, claims, OTHER),
                                            "SAE_INVALID", "verify"),
        "sae_unknown_kid": _invalid(EnvelopeEncoder(OTHER).encode(claims), "SAE_INVALID", "verify"),
        "sae_wrong_typ": _invalid(enc.encode(claims, DENIAL_TYP), "SAE_TYPE_INVALID", "verify"),
        "sae_v1_typ": _invalid(_raw({"alg": "EdDSA", "kid": SIGNER.kid, "typ": V1_TYPS[SAE_TYP]}, claims, SIGNER),
                               "SAE_TYPE_INVALID", "verify"),
        "sae_v2_typ": _invalid(_raw({"alg": "EdDSA", "kid": SIGNER.kid, "typ": V2_TYPS[SAE_TYP]},
                                    {k: v for k, v in claims.items() if k != "inp"}, SIGNER), "SAE_TYPE_INVALID", "verify"),
        "sae_policy_inputs_missing": _invalid(enc.encode({k: v for k, v in claims.items() if k != "inp"}), "SAE_INVALID",
                                              "verify"),
        "sae_risk_score_beyond_uint8": _invalid(claims_with(inp={**claims["inp"], "risk": 256}), "SAE_INVALID", "claims"),
        "sae_key_fingerprint_not_hex": _invalid(claims_with(inp={**claims["inp"], "kf": "spki"}), "SAE_INVALID", "claims"),
        "sae_noncanonical_signature": _invalid(_low_bits_set(valid, 2), "SAE_INVALID", "verify"),
        "sae_noncanonical_payload" if payload_noncanonical else "sae_noncanonical_header":
            _invalid(_low_bits_set(valid, payload_noncanonical), "SAE_INVALID", "verify"),
        "sae_noncanonical_padded": _invalid(_padded(valid), "SAE_INVALID", "verify"),
        "sae_noncanonical_standard_alphabet": _invalid(_standard_alphabet(valid), "SAE_INVALID", "verify"),
        "sae_missing_pol": _invalid(enc.encode({k: v for k, v in claims.items() if k != "pol"}), "SAE_INVALID", "verify"),
        "sae_truncated": _invalid(f"{head}.{payload}", "SAE_INVALID", "verify"),
        "sae_oversized": _invalid(claims_with(pad="x" * 9000), "SAE_INVALID", "verify"),
        "sae_act_not_object": _invalid(claims_with(act="POST payments.internal/v1/transfers"), "SAE_INVALID", "claims"),
        "sae_amount_json_number": _invalid(claims_with(act={**act, "amt": 50000}), "SAE_INVALID", "claims"),
        "sae_amount_leading_zero": _invalid(claims_with(act={**act, "amt": "050000"}), "SAE_INVALID", "claims"),
        "sae_amount_negative": _invalid(claims_with(act={**act, "amt": "-1"}), "SAE_INVALID", "claims"),
        "sae_amount_beyond_uint256": _invalid(claims_with(act={**act, "amt": str(2**256)}), "SAE_INVALID", "claims"),
        "sae_ctx_sid_null": _invalid(claims_with(ctx={**claims["ctx"], "sid": None}), "SAE_INVALID", "claims"),
        "sae_ctx_parent_null": _invalid(claims_with(ctx={**claims["ctx"], "parent": None}), "SAE_INVALID", "claims"),
        "sae_iss_not_a_uri": _invalid(claims_with(iss="sealgate"), "SAE_INVALID", "claims"),
        "sae_body_digest_missing": _invalid(claims_with(act={k: v for k, v in act.items() if k != "bd"}), "SAE_INVALID", "claims"),
        "sae_body_digest_not_hex": _invalid(claims_with(act={**act, "bd": "vendor-7"}), "SAE_INVALID", "claims"),
        "sae_policy_not_evaluated": _invalid(claims_with(pol={**claims["pol"], "block": None}), "SAE_INVALID", "claims"),
        "sae_model_hash_malformed": _invalid(claims_with(mod="ab" * 32), "SAE_INVALID", "claims"),
        "sae_unknown_claim": _invalid(claims_with(ver=2), "SAE_INVALID", "claims"),  # the version is the typ
        "sae_approval_without_token": _invalid(enc.encode({**approved, "apr": {k: v for k, v in approved["apr"].items() if k != "tok"}}),
                                               "SAE_INVALID", "claims"),
    }


def denial_vectors() -> dict[str, dict[str, Any]]:
    enc = EnvelopeEncoder(SIGNER)
    claims = DENIAL.to_claims()
    valid = enc.encode(claims, DENIAL_TYP)
    held = replace(DENIAL, action=LARGE_ACTION, jti="vector-denial-0002", reason="HUMAN_APPROVAL_REQUIRED",
                   message="a person must approve this action", approval_request=APPROVAL.request)
    unread = replace(POLICY, implementation=None, version=None, block=None)
    before_policy = Denial(ISSUER, AGENT, None, None, unread, NOW - 5, "vector-denial-0003", "ROUTE_UNKNOWN",
                           "no route for POST payments.internal/v2/x", CHAIN)
    unidentified = Denial(ISSUER, None, None, None, unread, NOW - 5, "vector-denial-0004", "IDENTITY_MISSING",
                          "no mTLS peer principal in the check request", CHAIN)

    def denial_with(**changes: Any) -> str:
        return enc.encode({**claims, **changes}, DENIAL_TYP)

    return {
        "denial_valid": _valid(valid, claims),
        "denial_awaiting_approval": _valid(enc.encode(held.to_claims(), DENIAL_TYP), held.to_claims()),
        "denial_before_policy": _valid(enc.encode(before_policy.to_claims(), DENIAL_TYP), before_policy.to_claims()),
        "denial_unidentified": _valid(enc.encode(unidentified.to_claims(), DENIAL_TYP), unidentified.to_claims()),
        "denial_v1_typ": _invalid(_raw({"alg": "EdDSA", "kid": SIGNER.kid, "typ": V1_TYPS[DENIAL_TYP]}, claims, SIGNER),
                                  "SAE_TYPE_INVALID", "verify"),
        "denial_v2_typ": _invalid(_raw({"alg": "EdDSA", "kid": SIGNER.kid, "typ": V2_TYPS[DENIAL_TYP]}, claims, SIGNER),
                                  "SAE_TYPE_INVALID", "verify"),
        "denial_inputs_without_policy": _invalid(enc.encode({**before_policy.to_claims(), "inp": INPUTS.to_claims()},
                                                            DENIAL_TYP), "SAE_INVALID", "claims"),
        "denial_policy_read_without_inputs": _invalid(enc.encode({k: v for k, v in claims.items() if k != "inp"},
                                                                 DENIAL_TYP), "SAE_INVALID", "claims"),
        "denial_noncanonical_signature": _invalid(_low_bits_set(valid, 2), "SAE_INVALID", "verify"),
        "denial_sub_null": _invalid(denial_with(sub=None), "SAE_INVALID", "claims"),
        "denial_policy_partly_read": _invalid(denial_with(pol={k: v for k, v in claims["pol"].items() if k != "ver"}),
                                              "SAE_INVALID", "claims"),
        "denial_action_without_target": _invalid(enc.encode({k: v for k, v in claims.items() if k != "tgt"}, DENIAL_TYP),
                                                 "SAE_INVALID", "claims"),
        "denial_tampered": _invalid(_tampered(valid, {**claims, "reason": "OK"}), "SAE_INVALID", "verify"),
        "denial_wrong_typ": _invalid(enc.encode(claims, SAE_TYP), "SAE_TYPE_INVALID", "verify"),
        "denial_signed_by_other_key": _invalid(_raw({"alg": "EdDSA", "kid": SIGNER.kid, "typ": DENIAL_TYP}, claims, OTHER),
                                               "SAE_INVALID", "verify"),
        "denial_missing_reason": _invalid(enc.encode({k: v for k, v in claims.items() if k != "reason"}, DENIAL_TYP),
                                          "SAE_INVALID", "verify"),
        "denial_not_deny": _invalid(denial_with(dec="ALLOW"), "SAE_INVALID", "claims"),
        "denial_message_too_long": _invalid(denial_with(msg="x" * 257), "SAE_INVALID", "claims"),
        "denial_reason_not_a_code": _invalid(denial_with(reason="amount over limit"), "SAE_INVALID", "claims"),
    }


def approval_vectors() -> dict[str, dict[str, Any]]:
    alice = EnvelopeEncoder(ALICE, kid="alice")
    claims = APPROVAL.to_claims()

    def case(token: str, expect: str) -> dict[str, Any]:
        vec = {"token": token, "expect": expect, "approvers": APPROVERS, "agent": AGENT, "target": TARGET,
               "action": LARGE_ACTION.to_claims(), "request": APPROVAL.request}
        return {**vec, "claims": claims} if expect == "VALID" else vec

    def signed(**changes: Any) -> str:
        return alice.encode({**claims, **changes}, APPROVAL_TYP)

    other_action = replace(LARGE_ACTION, amount=LARGE_ACTION.amount + 1)
    return {
        "approval_valid": case(alice.encode(claims, APPROVAL_TYP), "VALID"),
        "approval_expired": case(signed(iat=NOW - 400, exp=NOW - 100), "APPROVAL_INVALID"),
        "approval_not_yet_valid": case(signed(iat=NOW + 60, exp=NOW + 300), "APPROVAL_INVALID"),
        "approval_lifetime_over_15_min": case(signed(iat=NOW - 60, exp=NOW - 60 + 901), "APPROVAL_INVALID"),
        "approval_for_other_agent": case(signed(sub="spiffe://sealgate.local/agent/hr-02"), "APPROVAL_MISMATCH"),
        "approval_for_other_action": case(signed(req=other_action.approval_digest(AGENT, TARGET)), "APPROVAL_MISMATCH"),
        "approval_signed_by_another_key": case(EnvelopeEncoder(MALLORY, kid="alice").encode(claims, APPROVAL_TYP),
                                               "APPROVAL_INVALID"),
        "approval_unknown_approver": case(EnvelopeEncoder(MALLORY, kid="mallory").encode({**claims, "iss": "mallory"}, APPROVAL_TYP),
                                          "APPROVAL_INVALID"),
        "approval_iss_not_signer": case(signed(iss="bob"), "APPROVAL_INVALID"),
        "approval_wrong_typ": case(alice.encode(claims, SAE_TYP), "APPROVAL_INVALID"),
        "approval_v1_typ": case(_raw({"alg": "EdDSA", "kid": "alice", "typ": V1_TYPS[APPROVAL_TYP]}, claims, ALICE),
                                "APPROVAL_INVALID"),
        "approval_noncanonical_signature": case(_low_bits_set(alice.encode(claims, APPROVAL_TYP), 2), "APPROVAL_INVALID"),
        "approval_tampered": case(_tampered(alice.encode(claims, APPROVAL_TYP), {**claims, "exp": NOW + 3600}),
                                  "APPROVAL_INVALID"),
        "approval_jti_too_long": case(signed(jti="j" * 129), "APPROVAL_INVALID"),
    }


def binding_vectors() -> dict[str, dict[str, Any]]:
    enc = EnvelopeEncoder(SIGNER)
    token = enc.encode(SAE.to_claims())
    request = {"method": "POST", "path": "/v1/transfers", "authority": "payments.internal", "body": BODY, "audience": TARGET,
               "issuer": ISSUER}

    def case(expect: str, tok: str | None = token, now: int = NOW, **changes: str) -> dict[str, Any]:
        return {"token": tok, "request": {**request, **changes}, "now": now, "expect": expect}

    return {
        "binding_valid": case("VALID"),
        "binding_authority_case_insensitive": case("VALID", authority="Payments.Internal"),
        "binding_method_mismatch": case("SAE_BINDING_MISMATCH", method="PUT"),
        "binding_path_mismatch": case("SAE_BINDING_MISMATCH", path="/v1/refunds"),
        "binding_query_mismatch": case("SAE_BINDING_MISMATCH", path="/v1/transfers?to=vendor-9"),
        "binding_authority_mismatch": case("SAE_BINDING_MISMATCH", authority="hr.internal"),
        "binding_body_mismatch": case("SAE_BODY_MISMATCH", body=BODY.replace("vendor-7", "attacker-1")),
        "binding_audience_mismatch": case("SAE_INVALID", audience="hr-api"),
        "binding_sae_expired": case("SAE_INVALID", now=NOW + 50),
        "binding_sae_missing": case("SAE_MISSING", tok=None),
        "binding_issuer_mismatch": case("SAE_INVALID", issuer="spiffe://sealgate.local/sealgate/other-authorizer"),
        "binding_issued_in_the_future": case("SAE_INVALID", enc.encode(replace(SAE, issued_at=NOW + 60).to_claims())),
        "binding_lifetime_over_300_s": case("SAE_INVALID", enc.encode(replace(SAE, expires=SAE.issued_at + 301).to_claims())),
        "binding_noncanonical_signature": case("SAE_INVALID", _low_bits_set(token, 2)),
    }


def merkle_vectors() -> dict[str, dict[str, Any]]:
    values = [hashlib.sha256(f"sae-{i}".encode()).digest() for i in range(8)]  # stand-ins for anchored values

    def tree(n: int) -> dict[str, Any]:
        t = MerkleTree.build(values[:n])
        return {"values": ["0x" + v.hex() for v in values[:n]], "leaves": ["0x" + leaf_hash(v).hex() for v in values[:n]],
                "root": "0x" + t.root.hex(), "proofs": [["0x" + p.hex() for p in t.proof(v)] for v in values[:n]],
                "expect": "VALID"}

    five = MerkleTree.build(values[:5])
    proof = five.proof(values[3])
    tampered = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]

    def single(value: bytes, proof: list[bytes], expect: str) -> dict[str, Any]:
        return {"root": "0x" + five.root.hex(), "value": "0x" + value.hex(), "proof": ["0x" + p.hex() for p in proof],
                "expect": expect}

    return {
        "merkle_1_leaf": tree(1),
        "merkle_2_leaves": tree(2),
        "merkle_3_leaves": tree(3),
        "merkle_5_leaves": tree(5),
        "merkle_8_leaves": tree(8),
        "merkle_tampered_proof": single(values[3], tampered, "ANCHOR_MISMATCH"),
        "merkle_proof_of_other_value": single(values[4], proof, "ANCHOR_MISMATCH"),
        "merkle_truncated_proof": single(values[3], proof[:-1], "ANCHOR_MISMATCH"),
        "merkle_leaf_absent": {**single(values[7], [], "MERKLE_LEAF_ABSENT"), "values": tree(5)["values"]},
        "merkle_value_not_32_bytes": single(values[3][:31], proof, "MERKLE_INPUT_INVALID"),
    }


def _high_s(token: str) -> str:
    """The same ES256 signature's other form (r, n - s): verifies under plain ECDSA, refused by `jws.verify()`."""
    head, payload, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    s = int.from_bytes(raw[32:], "big")
    return f"{head}.{payload}.{b64url(raw[:32] + (P256_ORDER - s).to_bytes(32, 'big'))}"


def _der_signature(token: str) -> str:
    """The signature as DER (what cryptography returns) instead of JOSE r || s."""
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    head, payload, sig = token.split(".")
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    return f"{head}.{payload}.{b64url(der)}"


def es256_vectors() -> dict[str, dict[str, Any]]:
    """The same envelopes signed ES256 (P-256) by the authorizer's second key, and the ways ES256 goes wrong."""
    enc = EnvelopeEncoder(ES256_SIGNER)
    claims = replace(SAE, jti="vector-es256-0001").to_claims()
    valid = enc.encode(claims)
    denial = replace(DENIAL, jti="vector-es256-denial-0001").to_claims()
    eddsa_header = {"alg": "EdDSA", "kid": ES256_SIGNER.kid, "typ": SAE_TYP}
    request = {"method": "POST", "path": "/v1/transfers", "authority": "payments.internal", "body": BODY, "audience": TARGET,
               "issuer": ISSUER}
    return {
        "sae_es256_valid": _valid(valid, claims),
        "sae_es256_high_s": _invalid(_high_s(valid), "SAE_INVALID", "verify"),
        "sae_es256_der_signature": _invalid(_der_signature(valid), "SAE_INVALID", "verify"),
        "sae_es256_key_with_eddsa_header": _invalid(_raw(eddsa_header, claims, SIGNER), "SAE_INVALID", "verify"),
        "sae_es256_signed_by_other_key": _invalid(_raw({"alg": "ES256", "kid": ES256_SIGNER.kid, "typ": SAE_TYP}, claims,
                                                       ES256_OTHER), "SAE_INVALID", "verify"),
        "sae_es256_unknown_kid": _invalid(EnvelopeEncoder(ES256_OTHER).encode(claims), "SAE_INVALID", "verify"),
        "denial_es256_valid": _valid(enc.encode(denial, DENIAL_TYP), denial),
        "denial_es256_high_s": _invalid(_high_s(enc.encode(denial, DENIAL_TYP)), "SAE_INVALID", "verify"),
        "binding_es256_valid": {"token": valid, "request": request, "now": NOW, "expect": "VALID"},
        "binding_es256_body_mismatch": {"token": valid, "request": {**request, "body": BODY.replace("vendor-7", "attacker-1")},
                                        "now": NOW, "expect": "SAE_BODY_MISMATCH"},
    }


def vectors() -> dict[str, dict[str, Any]]:
    return {**sae_vectors(), **denial_vectors(), **approval_vectors(), **binding_vectors(), **merkle_vectors(),
            **es256_vectors()}


def render() -> dict[str, str]:
    """File name -> exact file text."""
    files = {"jwks.json": json.dumps(jwks_of(SIGNER, ES256_SIGNER), indent=2, sort_keys=True) + "\n"}
    for name, vec in vectors().items():
        files[f"{name}.json"] = json.dumps({"now": NOW, **vec}, indent=2, sort_keys=True) + "\n"
    return files


def write() -> None:
    for stale in HERE.glob("*.json"):
        stale.unlink()
    for name, text in render().items():
        (HERE / name).write_text(text)


if __name__ == "__main__":
    write()
