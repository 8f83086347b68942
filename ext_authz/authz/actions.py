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
    return obj


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON (I-JSON, RFC 7493)")


_I_JSON = json.JSONDecoder(object_pairs_hook=_unique_names, parse_constant=_no_constant)


def _amount(rule: RouteRule, body: bytes) -> int:
    if rule.amount_field is None:
        return 0
    try:
        doc = _I_JSON.decode(body.decode("utf-8"))  # UTF-8 only, no BOM (RFC 8259 section 8.1)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise reject(reasons.BODY_INVALID, f"route {rule.action_type} needs an I-JSON body: {e}") from e
    if not isinstance(doc, dict):
        raise reject(reasons.BODY_INVALID, f"route {rule.action_type} needs a JSON object body")
    value = doc.get(rule.amount_field)
    # bool is an int subclass in Python: reject it explicitly
    if type(value) is not int or value < 0 or value >= 2**256:
        raise reject(reasons.AMOUNT_INVALID, f"body field {rule.amount_field!r} must be a non-negative integer, found {value!r}")
    return value


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
    agent = parse_spiffe_id(view.principal, config.trust_domain)

    authority = view.authority.lower()
    rule = next((r for r in config.routes if r.matches(view.method, authority, path)), None)
    if rule is None:
        raise reject(reasons.ROUTE_UNKNOWN, f"no route for {view.method} {authority}{path}")

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
        amount=_amount(rule, view.body),
        data_class=rule.data_class,
        session_id=session,
        parent_sae=parent,
        approval=approval,
        body_sha256=hashlib.sha256(view.body).hexdigest(),
    )

