import json
import sys

import pytest

from ext_authz import reasons
from ext_authz.authz.actions import RequestView, map_request
from ext_authz.errors import InputRejected
from ext_authz.server.config import config_from_dict

CONFIG = config_from_dict(
    {
        "routes": [
            {"method": "POST", "authority": "payments.internal", "path": "/v1/transfers", "action_type": "payment.transfer",
             "target": "payments-api", "data_class": "internal", "amount_field": "amount_cents"},
            {"method": "GET", "authority": "payments.internal", "path": "/v1/balance*", "action_type": "payment.read",
             "target": "payments-api", "data_class": "public", "query": ["currency"]},
        ],
        "limits": {"max_body_bytes": 1024, "max_path_bytes": 128, "max_headers_bytes": 512},
    }
)
AGENT = "spiffe://sealgate.local/agent/procurement-01"


def view(**kw):
    base = dict(method="POST", authority="payments.internal", path="/v1/transfers",
                body=json.dumps({"amount_cents": 500}).encode(), principal=AGENT)
    headers = {"content-type": "application/json", **kw.pop("headers", {})}
    base.update(kw)
    return RequestView(headers={k: v for k, v in headers.items() if v is not None}, **base)


def reason_of(v):
    with pytest.raises(InputRejected) as err:
        map_request(v, CONFIG)
    return err.value.reason


def test_transfer_maps_amount_from_body_and_class_from_route():
    a = map_request(view(), CONFIG)
    assert (a.action_type, a.target, a.amount, a.data_class, a.agent_spiffe_id) == (
        "payment.transfer", "payments-api", 500, "internal", AGENT)


def test_agent_supplied_amount_header_is_ignored():
    a = map_request(view(headers={"x-amount": "1", "x-data-class": "public"}), CONFIG)
    assert a.amount == 500 and a.data_class == "internal"


def test_prefix_route_and_query_string_kept_for_binding():
    a = map_request(view(method="GET", path="/v1/balance/acct-1?currency=EUR", body=b""), CONFIG)
    assert a.action_type == "payment.read" and a.path == "/v1/balance/acct-1?currency=EUR" and a.amount == 0


def test_authority_is_case_insensitive():
    assert map_request(view(authority="Payments.Internal"), CONFIG).authority == "payments.internal"


@pytest.mark.parametrize(
    "name,kw,expected",
    [
        ("route_unknown_path", dict(path="/v1/other"), reasons.ROUTE_UNKNOWN),
        ("route_unknown_method", dict(method="PUT"), reasons.ROUTE_UNKNOWN),
        ("route_unknown_authority", dict(authority="evil.internal"), reasons.ROUTE_UNKNOWN),
        ("path_dot_segment", dict(path="/v1/x/../transfers"), reasons.INPUT_MALFORMED),
        ("path_double_slash", dict(path="/v1//transfers"), reasons.INPUT_MALFORMED),
        ("path_encoded_slash", dict(path="/v1%2ftransfers"), reasons.INPUT_MALFORMED),
        ("path_relative", dict(path="v1/transfers"), reasons.INPUT_MALFORMED),
        ("path_oversized", dict(path="/" + "a" * 200), reasons.INPUT_OVERSIZED),
        ("method_garbage", dict(method="PO ST"), reasons.INPUT_MALFORMED),
        ("method_empty", dict(method=""), reasons.INPUT_MALFORMED),
        ("authority_garbage", dict(authority="a b"), reasons.INPUT_MALFORMED),
        ("authority_empty", dict(authority=""), reasons.INPUT_MALFORMED),
        ("body_oversized", dict(body=b"{" + b" " * 2000 + b"}"), reasons.INPUT_OVERSIZED),
        ("headers_oversized", dict(headers={"x-big": "a" * 600}), reasons.INPUT_OVERSIZED),
        ("body_not_json", dict(body=b"amount=5"), reasons.BODY_INVALID),
        ("body_not_object", dict(body=b"[500]"), reasons.BODY_INVALID),
        ("body_not_utf8", dict(body=b"\xff\xfe"), reasons.BODY_INVALID),
        ("body_duplicate_amount_first_small", dict(body=b'{"amount_cents": 5, "amount_cents": 99999999}'), reasons.BODY_INVALID),
        ("body_duplicate_amount_last_small", dict(body=b'{"amount_cents": 99999999, "amount_cents": 5}'), reasons.BODY_INVALID),
        ("body_duplicate_name_nested", dict(body=b'{"amount_cents": 5, "meta": {"k": 1, "k": 2}}'), reasons.BODY_INVALID),
        ("body_utf8_bom", dict(body=b'\xef\xbb\xbf{"amount_cents": 5}'), reasons.BODY_INVALID),
        ("body_utf16", dict(body='{"amount_cents": 5}'.encode("utf-16")), reasons.BODY_INVALID),
        ("body_nan", dict(body=b'{"amount_cents": 5, "fee": NaN}'), reasons.BODY_INVALID),
        ("body_infinity", dict(body=b'{"amount_cents": 5, "fee": Infinity}'), reasons.BODY_INVALID),
        ("amount_missing", dict(body=b"{}"), reasons.AMOUNT_INVALID),
        ("amount_string", dict(body=b'{"amount_cents": "500"}'), reasons.AMOUNT_INVALID),
        ("amount_negative", dict(body=b'{"amount_cents": -1}'), reasons.AMOUNT_INVALID),
        ("amount_float", dict(body=b'{"amount_cents": 5.5}'), reasons.AMOUNT_INVALID),
        ("amount_bool", dict(body=b'{"amount_cents": true}'), reasons.AMOUNT_INVALID),
        ("amount_over_uint256", dict(body=json.dumps({"amount_cents": 2**256}).encode()), reasons.AMOUNT_INVALID),
        ("identity_missing", dict(principal=""), reasons.IDENTITY_MISSING),
        ("identity_other_domain", dict(principal="spiffe://evil.local/agent/x"), reasons.IDENTITY_INVALID),
        ("identity_not_spiffe", dict(principal="CN=agent"), reasons.IDENTITY_INVALID),
        ("identity_dot_segment", dict(principal="spiffe://sealgate.local/agent/../admin"), reasons.IDENTITY_INVALID),
        ("identity_empty_path", dict(principal="spiffe://sealgate.local/"), reasons.IDENTITY_INVALID),
        ("session_invalid", dict(headers={"x-sealgate-session": "a b"}), reasons.INPUT_MALFORMED),
        ("parent_oversized", dict(headers={"x-sae-parent": "a" * 5000}), reasons.INPUT_OVERSIZED),
    ],
    ids=lambda v: v if isinstance(v, str) and v.islower() else None,
)
def test_rejections_carry_reason(name, kw, expected):
    assert reason_of(view(**kw)) == expected


def test_body_nested_beyond_the_parser_stack_is_body_invalid_not_a_crash():
    # py_ecc (imported with web3) raises the limit to 100000; under CPython's default of 1000
    # the parser gives up with RecursionError, which must still be a denial with a reason
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        config = config_from_dict({"routes": [r.__dict__ for r in CONFIG.routes]})  # default 64 KiB body limit
        deep = b'{"amount_cents": 5, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        with pytest.raises(InputRejected) as err:
            map_request(view(body=deep), config)
    finally:
        sys.setrecursionlimit(limit)
    assert err.value.reason == reasons.BODY_INVALID


def test_headers_size_measured_at_the_edge_is_the_one_checked():
    assert reason_of(view(headers_size=513)) == reasons.INPUT_OVERSIZED
    assert map_request(view(headers={"x-big": "a" * 600}, headers_size=100), CONFIG).amount == 500


def test_key_fingerprint_is_sha256_of_the_peer_spki():
    import hashlib
    import urllib.parse

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from ext_authz.local.pki import LocalCA

    pem = LocalCA().issue_agent(AGENT).cert_pem
    spki = x509.load_pem_x509_certificate(pem.encode()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    a = map_request(view(certificate=urllib.parse.quote(pem)), CONFIG)  # Envoy URL-encodes the PEM
    assert a.key_fingerprint == hashlib.sha256(spki).digest()
    assert map_request(view(), CONFIG).key_fingerprint == bytes(32)


def test_unreadable_certificate_is_identity_invalid():
    assert reason_of(view(certificate="-----BEGIN%20CERTIFICATE-----%0Agarbage")) == reasons.IDENTITY_INVALID
