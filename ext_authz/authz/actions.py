"""CheckRequest attributes -> structured action; every rejection carries a reason code (pure)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ext_authz import reasons
from ext_authz.authz.identity import parse_spiffe_id, spki_fingerprint
from ext_authz.errors import InputRejected
from ext_authz.server.config import DATA_CLASSES, AuthorizerConfig, RouteRule

_METHOD = re.compile(r"[A-Z]{1,16}")
_AUTHORITY = re.compile(r"[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?")


# RFC 3986 path characters; percent-encoding allowed but not of '/', '\' or '.'
_PATH = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*")
_ENCODED_SEPARATOR = re.compile(r"%(2[fFeE]|5[cC])")
_QUERY_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# headers some frameworks and proxies obey over the request line: the action the target runs would not be
# the one the policy saw (lower case, as Envoy reports header names)
OVERRIDE_HEADERS = frozenset({
    "x-http-method-override", "x-http-method", "x-method-override", "x-original-method", "x-original-url",
    "x-rewrite-url", "x-override-url", "x-forwarded-path", "x-envoy-original-path", "x-forwarded-prefix",
})
# one value each: Envoy joins repeated headers with "," and none of these values may contain one
SINGLE_VALUED = ("x-sae", "x-sae-parent", "x-sealgate-approval", "x-sealgate-session", "content-type")


@dataclass(frozen=True)
class RequestView:
    """The fields of a CheckRequest the authorizer reads (extracted at the gRPC edge)."""

    method: str
    authority: str
    path: str  # includes the query string, as Envoy reports it
    headers: Mapping[str, str]
    body: bytes
    principal: str  # mTLS peer identity (URI SAN) as Envoy reports it
    request_size: int = 0
    certificate: str = ""  # the peer certificate, URL-encoded PEM, as Envoy reports it
    # bytes of the request attributes other than the body, when the edge measured them (cheaper than
    # iterating the header map: ~1 us vs ~7 us); None: counted here from `headers`
    headers_size: int | None = None


EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()


@dataclass(frozen=True)
class ActionRequest:
    agent_spiffe_id: str
    key_fingerprint: bytes  # SHA-256 of the peer certificate's SPKI; 32 zero bytes when none was presented
    action_type: str
    target: str
    method: str
    authority: str
    path: str
    amount: int
    data_class: str
    session_id: str | None
    parent_sae: str | None
    approval: str | None = None  # x-sealgate-approval: a person's signed approval of this action
    body_sha256: str = EMPTY_BODY_SHA256  # hex SHA-256 of the request body as the authorizer saw it

    @property
    def data_class_level(self) -> int:
        return DATA_CLASSES.index(self.data_class)


def reject(reason: str, message: str) -> InputRejected:
    return InputRejected(reason, message)


def _check_path(path: str, limit: int) -> str:
    if len(path) > limit:
        raise reject(reasons.INPUT_OVERSIZED, f"path is {len(path)} bytes, limit {limit}")
    path_only = path.split("?", 1)[0]
    if not _PATH.fullmatch(path_only):
        raise reject(reasons.INPUT_MALFORMED, "path is not an absolute RFC 3986 path")
    if _ENCODED_SEPARATOR.search(path_only):
        raise reject(reasons.INPUT_MALFORMED, "path contains an encoded '/', '\\' or '.'")
    segments = path_only.split("/")[1:]
    if any(s in (".", "..") for s in segments) or "//" in path_only:
        raise reject(reasons.INPUT_MALFORMED, "path is not normalised (dot segments or empty segments)")
    return path_only


def _unique_names(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # a target whose parser keeps the first of two "amount" names would execute another amount
        raise ValueError("duplicate object names (I-JSON, RFC 7493)")
    if len({name.casefold() for name in obj}) != len(obj):
        # ...and one whose parser ignores case would pay {"AMOUNT_CENTS": ...} instead
        raise ValueError("object names that differ only in case")
    return obj


def _check_strict(doc: object, max_depth: int) -> None:
    """No lone surrogates anywhere (I-JSON: strings are valid Unicode) and nesting within max_depth."""
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            value.encode("utf-8")  # UnicodeEncodeError on a lone surrogate
        elif isinstance(value, (dict, list)):
            if depth > max_depth:
                raise ValueError(f"nesting deeper than {max_depth}")
            if isinstance(value, dict):
                for name, member in value.items():
                    name.encode("utf-8")
                    stack.append((member, depth + 1))
            else:
                stack.extend((member, depth + 1) for member in value)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON (I-JSON, RFC 7493)")


_I_JSON = json.JSONDecoder(object_pairs_hook=_unique_names, parse_constant=_no_constant)


def _is_json(content_type: str) -> bool:
    media, _, params = content_type.partition(";")
    return media.strip().lower() == "application/json" and params.strip().lower() in ("", "charset=utf-8")


def _json_body(rule: RouteRule, body: bytes, max_depth: int) -> object:
    try:
        doc = _I_JSON.decode(body.decode("utf-8"))  # UTF-8 only, no BOM (RFC 8259 section 8.1)
        _check_strict(doc, max_depth)
    except (ValueError, UnicodeError, RecursionError) as e:
        raise reject(reasons.BODY_INVALID, f"route {rule.action_type} needs an I-JSON body: {e}") from e
    return doc


def _amount(rule: RouteRule, doc: object) -> int:
    if rule.amount_field is None:
        return 0
    if not isinstance(doc, dict):
        raise reject(reasons.BODY_INVALID, f"route {rule.action_type} needs a JSON object body")
    value = doc.get(rule.amount_field)
    # bool is an int subclass in Python: reject it explicitly
    if type(value) is not int or value < 0 or value >= 2**256:
        raise reject(reasons.AMOUNT_INVALID, f"body field {rule.amount_field!r} must be a non-negative integer, found {value!r}")
    return value


def _check_headers(headers: Mapping[str, str]) -> None:
    override = OVERRIDE_HEADERS.intersection(headers)
    if override:
        raise reject(reasons.HEADER_NOT_ALLOWED, f"header {sorted(override)[0]} would change the request the policy sees")
    for name in SINGLE_VALUED:
        if "," in headers.get(name, ""):
            raise reject(reasons.HEADER_NOT_ALLOWED, f"{name} given more than once")


def _check_query(rule: RouteRule, path: str) -> None:
    """Every parameter is declared by the route, named once, and plainly named (no encoding tricks)."""
    _, sep, query = path.partition("?")
    if not sep:
        return
    if not query:
        raise reject(reasons.QUERY_NOT_ALLOWED, "empty query string")
    seen: set[str] = set()
    for part in query.split("&"):
        name = part.split("=", 1)[0]
        if not _QUERY_NAME.fullmatch(name) or name not in rule.query:
            raise reject(reasons.QUERY_NOT_ALLOWED, f"route {rule.action_type} does not take query parameter {name[:64]!r}")
        if name in seen:
            raise reject(reasons.QUERY_NOT_ALLOWED, f"query parameter {name!r} given more than once")
        seen.add(name)


def map_request(view: RequestView, config: AuthorizerConfig) -> ActionRequest:
    """Maps an untrusted request to an action, or raises InputRejected."""
    limits = config.limits
    if len(view.body) > limits.max_body_bytes or view.request_size > limits.max_body_bytes:
        raise reject(reasons.INPUT_OVERSIZED, f"body exceeds {limits.max_body_bytes} bytes")
    headers_size = view.headers_size
    if headers_size is None:
        headers_size = sum(len(k) + len(v) for k, v in view.headers.items())
    if headers_size > limits.max_headers_bytes:
        raise reject(reasons.INPUT_OVERSIZED, f"headers exceed {limits.max_headers_bytes} bytes")
    if not _METHOD.fullmatch(view.method):
        raise reject(reasons.INPUT_MALFORMED, f"method {view.method[:20]!r} is not an HTTP method token")
    if not _AUTHORITY.fullmatch(view.authority):
        raise reject(reasons.INPUT_MALFORMED, f"authority {view.authority[:80]!r} is not a host[:port]")
    path = _check_path(view.path, limits.max_path_bytes)
    _check_headers(view.headers)
    agent = parse_spiffe_id(view.principal, config.trust_domain)

    authority = view.authority.lower()
    rule = next((r for r in config.routes if r.matches(view.method, authority, path)), None)
    if rule is None:
        raise reject(reasons.ROUTE_UNKNOWN, f"no route for {view.method} {authority}{path}")
    _check_query(rule, view.path)
    content_type = view.headers.get("content-type", "")
    doc: object = None
    if rule.amount_field is not None or (view.body and _is_json(content_type)):
        if rule.amount_field is not None and not _is_json(content_type):
            raise reject(reasons.CONTENT_TYPE_INVALID,
                         f"route {rule.action_type} takes application/json only, found {content_type[:60]!r}")
        doc = _json_body(rule, view.body, limits.max_json_depth)

    parent = view.headers.get("x-sae-parent") or None
    if parent is not None and len(parent) > limits.max_parent_sae_bytes:
        raise reject(reasons.INPUT_OVERSIZED, f"x-sae-parent exceeds {limits.max_parent_sae_bytes} bytes")
    approval = view.headers.get("x-sealgate-approval") or None
    if approval is not None and len(approval) > limits.max_approval_bytes:
        raise reject(reasons.INPUT_OVERSIZED, f"x-sealgate-approval exceeds {limits.max_approval_bytes} bytes")
    session = view.headers.get("x-sealgate-session") or None
    if session is not None and not re.fullmatch(r"[A-Za-z0-9\-_.]{1,128}", session):
        raise reject(reasons.INPUT_MALFORMED, "x-sealgate-session must be 1-128 URL-safe characters")

    return ActionRequest(
        agent_spiffe_id=agent,
        key_fingerprint=spki_fingerprint(view.certificate),
        action_type=rule.action_type,
        target=rule.target,
        method=view.method,
        authority=authority,
        path=view.path,
        amount=_amount(rule, doc),
        data_class=rule.data_class,
        session_id=session,
        parent_sae=parent,
        approval=approval,
        body_sha256=hashlib.sha256(view.body).hexdigest(),
    )

