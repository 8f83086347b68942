"""The target's own check: the SAE names exactly this request, body included (what the PEP cannot hash)."""

import hashlib

import pytest

from ext_authz import reasons
from ext_authz.envelope.jws import EnvelopeEncoder
from ext_authz.errors import InputRejected
from ext_authz.sdk.target import check_sae
from ext_authz.signing.base import jwks_of
from ext_authz.signing.file_key import Ed25519Signer

SIGNER = Ed25519Signer(bytes(range(32)))
BODY = b'{"amount_cents": 500, "to": "vendor-42"}'
NOW = 1_800_000_000


def sae(**act):
    claims = {"iss": "spiffe://sealgate.local/agent/a", "sub": "payments-api", "aud": "payments-api",
              "act": {"type": "payment.transfer", "m": "POST", "h": "payments.internal", "p": "/v1/transfers", "amt": 500,
                      "dc": "internal", "bd": hashlib.sha256(BODY).hexdigest(), **act},
              "pol": {}, "mod": "m", "iat": NOW, "nbf": NOW, "exp": NOW + 60, "jti": "j", "ctx": {}, "chain": {}}
    return EnvelopeEncoder(SIGNER).encode(claims)


def check(token, body=BODY, **kw):
    args = {"method": "POST", "path": "/v1/transfers", "authority": "Payments.Internal", "body": body,
            "audience": "payments-api", "now": NOW, **kw}
    return check_sae(token, jwks_of(SIGNER), **args)


def test_an_sae_for_exactly_this_request_passes():
    assert check(sae())["act"]["amt"] == 500


@pytest.mark.parametrize("token,kw,expected", [
    (None, {}, reasons.SAE_MISSING),
    (lambda: sae(), {"body": BODY.replace(b"vendor-42", b"attacker-1")}, reasons.SAE_BODY_MISMATCH),
    (lambda: sae(bd=None), {}, reasons.SAE_BODY_MISMATCH),
    (lambda: sae(), {"path": "/v1/transfers?x=1"}, reasons.SAE_BINDING_MISMATCH),
    (lambda: sae(), {"method": "PUT"}, reasons.SAE_BINDING_MISMATCH),
    (lambda: sae(), {"audience": "hr-api"}, reasons.SAE_INVALID),
    (lambda: sae(), {"now": NOW + 61}, reasons.SAE_INVALID),
    (lambda: EnvelopeEncoder(Ed25519Signer(bytes(32))).encode({"act": {}}), {}, reasons.SAE_INVALID),
], ids=["missing", "other_payee_same_amount", "no_body_digest", "other_path", "other_method", "other_audience",
        "expired", "other_key"])
def test_what_the_target_refuses(token, kw, expected):
    with pytest.raises(InputRejected) as err:
        check(token() if callable(token) else token, **kw)
    assert err.value.reason == expected
