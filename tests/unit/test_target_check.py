"""The target's own check (and the PEP verifier's): the SAE is this authorizer's, format version 2, lives within
its bounds and names exactly this request, body included (what the PEP's Lua cannot hash)."""

import dataclasses
import hashlib

import pytest

from ext_authz import reasons
from ext_authz.envelope.encoding import b64url, canonical_json
from ext_authz.envelope.jws import EnvelopeEncoder
from ext_authz.envelope.models import Action, ChainRef, Context, PolicyInputs, PolicyRef, Sae
from ext_authz.errors import ConfigError, InputRejected
from ext_authz.sdk.target import check_sae
from ext_authz.signing.base import jwks_of
from ext_authz.signing.file_key import Ed25519Signer

SIGNER = Ed25519Signer(bytes(range(32)))
ISSUER = "spiffe://sealgate.local/sealgate/authorizer"
BODY = b'{"amount_cents": 500, "to": "vendor-42"}'
NOW = 1_800_000_000
ACT = Action("payment.transfer", "POST", "payments.internal", "/v1/transfers", 500, "internal", hashlib.sha256(BODY).hexdigest())
SAE = Sae(ISSUER, "spiffe://sealgate.local/agent/a", "payments-api", ACT,
          PolicyRef("0xRegistry", "0x" + "22" * 32, "0xImpl", 3, 42), PolicyInputs("00" * 32, 0), "sha256:" + "11" * 32,
          NOW, NOW, NOW + 60, "j",
          Context("s-1", None, "internal"), ChainRef(31337, "0xAnchor"))
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def sae(**changes):
    return EnvelopeEncoder(SIGNER).encode(dataclasses.replace(SAE, **changes).to_claims())


def raw(claims, typ="application/sae.v3+jwt"):
    signing_input = f"{b64url(canonical_json({'alg': 'EdDSA', 'kid': SIGNER.kid, 'typ': typ}))}.{b64url(canonical_json(claims))}"
    return f"{signing_input}.{b64url(SIGNER.sign(signing_input.encode()))}"


def low_bits_set(token):
    """The same signature bytes, spelled with an unused low bit of the last character set."""
    return token[:-1] + ALPHABET[ALPHABET.index(token[-1]) | 1]


def check(token, body=BODY, **kw):
    args = {"method": "POST", "path": "/v1/transfers", "authority": "Payments.Internal", "body": body,
            "audience": "payments-api", "issuer": ISSUER, "now": NOW, **kw}
    return check_sae(token, jwks_of(SIGNER), **args)


def test_an_sae_for_exactly_this_request_passes():
    assert check(sae())["act"]["amt"] == "500"


@pytest.mark.parametrize("token,kw,expected", [
    (None, {}, reasons.SAE_MISSING),
    (lambda: sae(), {"body": BODY.replace(b"vendor-42", b"attacker-1")}, reasons.SAE_BODY_MISMATCH),
    (lambda: raw({**SAE.to_claims(), "act": {k: v for k, v in ACT.to_claims().items() if k != "bd"}}), {}, reasons.SAE_INVALID),
    (lambda: sae(), {"path": "/v1/transfers?x=1"}, reasons.SAE_BINDING_MISMATCH),
    (lambda: sae(), {"method": "PUT"}, reasons.SAE_BINDING_MISMATCH),
    (lambda: sae(), {"audience": "hr-api"}, reasons.SAE_INVALID),
    (lambda: sae(), {"now": NOW + 61}, reasons.SAE_INVALID),
    (lambda: EnvelopeEncoder(Ed25519Signer(bytes(32))).encode({"act": {}}), {}, reasons.SAE_INVALID),
    (lambda: sae(issuer="spiffe://sealgate.local/sealgate/other"), {}, reasons.SAE_INVALID),
    (lambda: sae(), {"issuer": "spiffe://sealgate.local/sealgate/other"}, reasons.SAE_INVALID),
    (lambda: sae(issued_at=NOW + 6), {}, reasons.SAE_INVALID),
    (lambda: sae(expires=NOW + 301), {}, reasons.SAE_INVALID),
    (lambda: sae(expires=NOW + 61), {"max_lifetime_seconds": 60}, reasons.SAE_INVALID),
    (lambda: low_bits_set(sae()), {}, reasons.SAE_INVALID),
    (lambda: raw(SAE.to_claims(), typ="application/sae+jwt"), {}, reasons.SAE_TYPE_INVALID),
    (lambda: raw({**SAE.to_claims(), "act": {**ACT.to_claims(), "amt": 500}}), {}, reasons.SAE_INVALID),
    (lambda: raw({**SAE.to_claims(), "ctx": {"sid": None, "dc": "internal"}}), {}, reasons.SAE_INVALID),
], ids=["missing", "other_payee_same_amount", "no_body_digest", "other_path", "other_method", "other_audience",
        "expired", "other_key", "issued_by_another_issuer", "another_issuer_pinned", "issued_in_the_future",
        "lifetime_over_300_s", "lifetime_over_the_configured_bound", "noncanonical_signature", "format_version_1",
        "amount_json_number", "null_claim"])
def test_what_the_target_refuses(token, kw, expected):
    with pytest.raises(InputRejected) as err:
        check(token() if callable(token) else token, **kw)
    assert err.value.reason == expected, err.value.message


def test_iat_within_the_clock_skew_and_lifetime_at_the_bound_pass():
    assert check(sae(issued_at=NOW + 5, not_before=NOW, expires=NOW + 60))
    assert check(sae(expires=NOW + 300))
    assert check(sae(expires=NOW + 60), max_lifetime_seconds=60)


@pytest.mark.parametrize("bound", [0, 301, 60.0])
def test_a_lifetime_bound_over_300_s_is_a_config_error(bound):
    with pytest.raises(ConfigError):
        check(sae(), max_lifetime_seconds=bound)


def _check(token, **kw):
    return check_sae(token, jwks_of(SIGNER), method="POST", path="/v1/transfers", authority="payments.internal",
                     body=BODY, audience="payments-api", issuer=ISSUER, now=NOW + 1, **kw)


def test_with_a_store_the_target_executes_an_sae_once(tmp_path):
    from ext_authz.sdk.redemption import SqliteRedemptions

    store = SqliteRedemptions(tmp_path / "t.sqlite3")
    token = sae(jti="once")
    assert _check(token, redemptions=store)["jti"] == "once"
    with pytest.raises(InputRejected) as err:
        _check(token, redemptions=store)
    assert err.value.reason == reasons.SAE_REPLAYED
    store.close()


def test_a_refused_sae_is_not_used_up_and_a_failing_store_fails_closed(tmp_path):
    from ext_authz.sdk.redemption import RedemptionUnavailable, SqliteRedemptions

    store = SqliteRedemptions(tmp_path / "t.sqlite3")
    with pytest.raises(InputRejected):
        check_sae(sae(jti="kept"), jwks_of(SIGNER), method="GET", path="/v1/transfers", authority="payments.internal",
                  body=BODY, audience="payments-api", issuer=ISSUER, now=NOW + 1, redemptions=store)
    assert _check(sae(jti="kept"), redemptions=store)["jti"] == "kept"

    class Down:
        def redeem(self, jti, exp):
            raise RedemptionUnavailable("disk gone")

    with pytest.raises(InputRejected) as err:
        _check(sae(jti="x"), redemptions=Down())
    assert err.value.reason == reasons.PEP_ERROR
    store.close()
