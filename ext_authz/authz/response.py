"""Envoy ext_authz wire edge: CheckRequest -> RequestView, Decision -> CheckResponse."""

from __future__ import annotations

import json

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2 as auth_pb2
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from ext_authz import reasons
from ext_authz.authz.actions import RequestView
from ext_authz.authz.decision import Decision

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
ALLOW_ALL = auth_pb2.CheckResponse(status=status_pb2.Status(code=code_pb2.OK))


def request_view(request: auth_pb2.CheckRequest) -> RequestView:
    http = request.attributes.request.http
    source = request.attributes.source
    body = http.raw_body or http.body.encode("utf-8", "surrogatepass")
    return RequestView(
        method=http.method,
        authority=http.host,
        path=http.path,
        headers=http.headers,
        body=body,
        principal=source.principal,
        request_size=max(http.size, 0),
        certificate=source.certificate,
        # everything but the body, protobuf framing included: an upper bound of the headers' size
        headers_size=max(http.ByteSize() - len(body), 0),
    )


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE)


# the allow answer's shape, filled per decision (copying a template: ~2 us vs ~9 us building it)
_ALLOW_TEMPLATE = auth_pb2.CheckResponse(
    status=status_pb2.Status(code=code_pb2.OK),
    ok_response=auth_pb2.OkHttpResponse(
        headers=[_header("x-sae", ""), _header("x-sealgate-decision-id", "")],
        headers_to_remove=["x-sae-parent", "x-sealgate-approval"],
    ),
)


def to_check_response(decision: Decision) -> auth_pb2.CheckResponse:
    if decision.allowed:
        response = auth_pb2.CheckResponse()
        response.CopyFrom(_ALLOW_TEMPLATE)
        sae_header, id_header = response.ok_response.headers
        sae_header.header.value = decision.token
        id_header.header.value = decision.decision_id
        return response
    doc = {"decision_id": decision.decision_id, "reason_code": decision.reason, "message": decision.message}
    if decision.approval_request is not None:
        doc["approval_request"] = decision.approval_request
    body = json.dumps(doc)
    return auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message=decision.reason),
        denied_response=auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
            headers=[
                _header("content-type", "application/json"),
                _header("x-sae-denial", decision.token),
                _header("x-sealgate-reason", decision.reason),
                _header("x-sealgate-decision-id", decision.decision_id),
            ],
            body=body,
        ),
    )


def unsigned_denial(reason: str) -> auth_pb2.CheckResponse:
    """Last-resort answer when not even a denial can be signed: still a denial, with its reason."""
    return auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.PERMISSION_DENIED, message=reason),
        denied_response=auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Forbidden),
            headers=[_header("content-type", "application/json"), _header("x-sealgate-reason", reason)],
            body=json.dumps({"decision_id": None, "reason_code": reason, "message": reasons.MESSAGES[reason]}),
        ),
    )


UNSIGNED_DENIALS = {reason: unsigned_denial(reason)
                    for reason in (reasons.INTERNAL_ERROR, reasons.SIGNING_FAILED, reasons.EVIDENCE_UNAVAILABLE)}

