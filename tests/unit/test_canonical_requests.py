"""Canonical requests: what the policy sees is the request the target would run. Each case is an attack that
passed before (issue: query amounts, form bodies, override headers, prefix routes, JSON forms, duplicates)."""

import pytest

from ext_authz import reasons
from ext_authz.authz.actions import OVERRIDE_HEADERS, RequestView, map_request
from ext_authz.errors import ConfigError, InputRejected
from ext_authz.server.config import config_from_dict

ROUTES = [
    {"method": "POST", "authority": "payments.internal", "path": "/v1/transfers", "action_type": "payment.transfer",
     "target": "payments-api", "amount_field": "amount_cents"},
    {"method": "GET", "authority": "payments.internal", "path": "/v1/balance*", "action_type": "payment.read",
     "target": "payments-api", "query": ["currency"]},
    {"method": "POST", "authority": "payments.internal", "path": "/v1/notes", "action_type": "note.write",
     "target": "payments-api"},
]
CONFIG = config_from_dict({"routes": ROUTES, "limits": {"max_json_depth": 8}})
AGENT = "spiffe://sealgate.local/agent/procurement-01"
JSON = {"content-type": "application/json"}


def view(method="POST", path="/v1/transfers", body=b'{"amount_cents": 100}', headers=None):
    return RequestView(method=method, authority="payments.internal", path=path, headers=JSON if headers is None else headers,
                       body=body, principal=AGENT)


def reason_of(v):
    with pytest.raises(InputRejected) as err:
        map_request(v, CONFIG)
    return err.value.reason


@pytest.mark.parametrize("path", ["/v1/transfers?amount_cents=99999999&to=attacker", "/v1/transfers?to=attacker",
                                  "/v1/transfers?"], ids=["amount_in_query", "payee_in_query", "empty_query"])
def test_undeclared_query_parameters_are_refused(path):
    assert reason_of(view(path=path)) == reasons.QUERY_NOT_ALLOWED


@pytest.mark.parametrize("path", ["/v1/balance?currency=EUR&currency=USD", "/v1/balance?curr%65ncy=EUR",
                                  "/v1/balance?currency=EUR&x=1"],
                         ids=["declared_parameter_twice", "percent_encoded_name", "declared_plus_undeclared"])
def test_query_tricks_on_a_route_with_declared_parameters(path):
    assert reason_of(view(method="GET", path=path, body=b"", headers={})) == reasons.QUERY_NOT_ALLOWED


def test_declared_query_parameter_is_accepted_and_bound():
    assert map_request(view(method="GET", path="/v1/balance?currency=EUR", body=b"", headers={}), CONFIG).path == \
        "/v1/balance?currency=EUR"


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "", "application/json; charset=latin1",
                                          "application/jsonx"],
                         ids=["form_body", "text_body", "no_content_type", "json_in_another_charset", "lookalike_media_type"])
def test_amount_routes_take_json_only(content_type):
    headers = {"content-type": content_type} if content_type else {}
    assert reason_of(view(body=b"amount_cents=100", headers=headers)) == reasons.CONTENT_TYPE_INVALID


def test_json_with_utf8_charset_is_accepted():
    assert map_request(view(headers={"content-type": "Application/JSON; charset=UTF-8"}), CONFIG).amount == 100


@pytest.mark.parametrize("header", sorted(OVERRIDE_HEADERS))
def test_method_and_url_override_headers_are_refused(header):
    assert reason_of(view(headers={**JSON, header: "DELETE"})) == reasons.HEADER_NOT_ALLOWED


@pytest.mark.parametrize("header", ["x-sae-parent", "x-sealgate-approval", "x-sealgate-session", "content-type", "x-sae"])
def test_repeated_single_valued_headers_are_refused(header):
    # Envoy reports a header sent twice as one value joined with ","
    value = "application/json,text/plain" if header == "content-type" else "a.b.c,d.e.f"
    assert reason_of(view(headers={**JSON, header: value})) == reasons.HEADER_NOT_ALLOWED


@pytest.mark.parametrize("path", ["/v1/balance-admin/delete-all", "/v1/balances", "/v1/balanceX"],
                         ids=["sibling_segment_admin", "plural_sibling", "suffix_sibling"])
def test_prefix_routes_match_whole_segments_only(path):
    assert reason_of(view(method="GET", path=path, body=b"", headers={})) == reasons.ROUTE_UNKNOWN


@pytest.mark.parametrize("path", ["/v1/balance", "/v1/balance/acct-1", "/v1/balance/acct-1/history"])
def test_prefix_route_covers_the_segment_and_below(path):
    assert map_request(view(method="GET", path=path, body=b"", headers={}), CONFIG).action_type == "payment.read"


@pytest.mark.parametrize("body", [
    b'{"amount_cents": 100, "AMOUNT_CENTS": 99999999}',
    b'{"amount_cents": 100, "Amount_Cents": 99999999}',
    b'{"amount_cents": 100, "meta": {"to": "a", "TO": "b"}}',
], ids=["case_variant_amount", "mixed_case_amount", "case_variant_nested"])
def test_member_names_differing_only_in_case_are_refused(body):
    assert reason_of(view(body=body)) == reasons.BODY_INVALID


@pytest.mark.parametrize("body", [
    b'{"amount_cents": 100, "to": "\\ud800"}',
    b'{"amount_cents": 100, "\\udc00": 1}',
    b'{"amount_cents": 100, "memo": ["ok", {"x": "\\udfff"}]}',
], ids=["lone_high_surrogate_value", "lone_low_surrogate_name", "lone_surrogate_nested"])
def test_lone_surrogates_are_not_i_json(body):
    assert reason_of(view(body=body)) == reasons.BODY_INVALID


def nested(depth):
    """An object (level 1) holding arrays nested to `depth` levels in all."""
    return b'{"amount_cents": 1, "x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_nesting_beyond_the_depth_limit_is_refused_and_at_the_limit_accepted():
    assert map_request(view(body=nested(8)), CONFIG).amount == 1  # the object itself is level 1
    assert reason_of(view(body=nested(9))) == reasons.BODY_INVALID
    assert reason_of(view(body=nested(30_000))) == reasons.BODY_INVALID


def test_json_bodies_of_routes_without_an_amount_are_strict_too():
    assert reason_of(view(path="/v1/notes", body=b'{"a": 1, "a": 2}')) == reasons.BODY_INVALID
    assert map_request(view(path="/v1/notes", body=b"plain text", headers={"content-type": "text/plain"}), CONFIG).amount == 0


@pytest.mark.parametrize("route,message", [
    ({"query": ["amount_cents"], "amount_field": "amount_cents"}, "never the query string"),
    ({"path": "/v1/*/x"}, "may only end a path"),
    ({"query": ["bad name"]}, "query names"),
], ids=["amount_declared_as_query", "wildcard_inside_path", "query_name_with_space"])
def test_route_config_errors(route, message):
    base = {"method": "POST", "authority": "a", "path": "/p", "action_type": "t", "target": "x"}
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"routes": [{**base, **route}]})
