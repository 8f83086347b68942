"""Stable reason codes: used in signed denials, 403 bodies, logs and metric labels.

Never rename a code; add new ones. Codes returned by the policy contract are
mirrored here so that an unknown code from a contract is caught.
"""

from __future__ import annotations

OK = "OK"

# request mapping (authorizer, before any chain read)
INPUT_MALFORMED = "INPUT_MALFORMED"
INPUT_OVERSIZED = "INPUT_OVERSIZED"
ROUTE_UNKNOWN = "ROUTE_UNKNOWN"
AMOUNT_INVALID = "AMOUNT_INVALID"
BODY_INVALID = "BODY_INVALID"
PARENT_SAE_INVALID = "PARENT_SAE_INVALID"
QUERY_NOT_ALLOWED = "QUERY_NOT_ALLOWED"  # a query parameter the route does not declare, or one given twice
CONTENT_TYPE_INVALID = "CONTENT_TYPE_INVALID"  # a route with an amount takes application/json only
HEADER_NOT_ALLOWED = "HEADER_NOT_ALLOWED"  # method-override / original-URL headers, or a header given twice

# human approval (authorizer, when the policy answered REQUIRE_APPROVAL)
APPROVAL_INVALID = "APPROVAL_INVALID"  # signature, approver, typ or lifetime
APPROVAL_MISMATCH = "APPROVAL_MISMATCH"  # signed for another agent or another action
APPROVAL_REPLAYED = "APPROVAL_REPLAYED"  # already used once

# identity
IDENTITY_MISSING = "IDENTITY_MISSING"
IDENTITY_INVALID = "IDENTITY_INVALID"
IDENTITY_REVOKED = "IDENTITY_REVOKED"  # the agent certificate is revoked (OCSP); the registry is the other path
IDENTITY_STATUS_UNKNOWN = "IDENTITY_STATUS_UNKNOWN"  # OCSP unknown, unreachable, or its answer did not verify

# policy contract (RuleBasedPolicy.evaluate)
AGENT_UNKNOWN = "AGENT_UNKNOWN"
AGENT_REVOKED = "AGENT_REVOKED"
POLICY_PAUSED = "POLICY_PAUSED"
ACTION_NOT_PERMITTED = "ACTION_NOT_PERMITTED"
DATA_CLASS_NOT_PERMITTED = "DATA_CLASS_NOT_PERMITTED"
AMOUNT_OVER_LIMIT = "AMOUNT_OVER_LIMIT"
HUMAN_APPROVAL_REQUIRED = "HUMAN_APPROVAL_REQUIRED"
KEY_NOT_BOUND = "KEY_NOT_BOUND"
MODEL_NOT_APPROVED = "MODEL_NOT_APPROVED"
RISK_TOO_HIGH = "RISK_TOO_HIGH"
OUTSIDE_TIME_WINDOW = "OUTSIDE_TIME_WINDOW"

# chain / internal (fail closed)
POLICY_STATE_STALE = "POLICY_STATE_STALE"
POLICY_EVALUATION_FAILED = "POLICY_EVALUATION_FAILED"
INTERNAL_ERROR = "INTERNAL_ERROR"
SIGNING_FAILED = "SIGNING_FAILED"  # the signer (HSM) failed: the only denial that cannot be signed
EVIDENCE_UNAVAILABLE = "EVIDENCE_UNAVAILABLE"  # the evidence store could not persist the record: nothing runs unrecorded
POLICY_STATE_UNAVAILABLE = "POLICY_STATE_UNAVAILABLE"  # the pinned EVM lacked this agent's state and the RPC did not answer in time

# enforcement point (envoy/pep.lua); listed here so every code has one home
SAE_MISSING = "SAE_MISSING"
SAE_INVALID = "SAE_INVALID"
SAE_TYPE_INVALID = "SAE_TYPE_INVALID"
SAE_BINDING_MISMATCH = "SAE_BINDING_MISMATCH"
SAE_REPLAYED = "SAE_REPLAYED"
SAE_BODY_MISMATCH = "SAE_BODY_MISMATCH"  # at the target: the body is not the one the SAE was issued for
PEP_ERROR = "PEP_ERROR"

# `sealgate verify` (auditor side)
NOT_ANCHORED = "NOT_ANCHORED"
ANCHOR_MISMATCH = "ANCHOR_MISMATCH"
MERKLE_INPUT_INVALID = "MERKLE_INPUT_INVALID"
MERKLE_LEAF_ABSENT = "MERKLE_LEAF_ABSENT"
SIGNING_KEY_UNREGISTERED = "SIGNING_KEY_UNREGISTERED"  # not in the SigningKeyRegistry at the token's block
SIGNING_KEY_REVOKED = "SIGNING_KEY_REVOKED"  # revoked before the token was anchored, or outside its window
BUNDLE_INVALID = "BUNDLE_INVALID"  # an evidence bundle that is malformed or does not hold together
REPLAY_MISMATCH = "REPLAY_MISMATCH"  # `--replay`: the policy at pol.block answers another verdict than recorded
REPLAY_FAILED = "REPLAY_FAILED"  # `--replay`: the archive node could not run the policy at pol.block

POLICY_CONTRACT_CODES = frozenset(
    {
        OK,
        AGENT_UNKNOWN,
        AGENT_REVOKED,
        POLICY_PAUSED,
        ACTION_NOT_PERMITTED,
        DATA_CLASS_NOT_PERMITTED,
        AMOUNT_OVER_LIMIT,
        HUMAN_APPROVAL_REQUIRED,
        KEY_NOT_BOUND,
        MODEL_NOT_APPROVED,
        RISK_TOO_HIGH,
        OUTSIDE_TIME_WINDOW,
    }
)

# kernel egress (ext_authz/egress/events.py maps the programs' REASON_* numbers to these)
EGRESS_DESTINATION_NOT_ALLOWED = "EGRESS_DESTINATION_NOT_ALLOWED"
EGRESS_UNREGISTERED_TASK = "EGRESS_UNREGISTERED_TASK"
EGRESS_SOCKET_KIND = "EGRESS_SOCKET_KIND"
EGRESS_DEVICE_NOT_ALLOWED = "EGRESS_DEVICE_NOT_ALLOWED"
EGRESS_NETNS_NOT_ALLOWED = "EGRESS_NETNS_NOT_ALLOWED"
EGRESS_IP_OPTIONS = "EGRESS_IP_OPTIONS"
EGRESS_SOCKOPT_REROUTES = "EGRESS_SOCKOPT_REROUTES"
EGRESS_INBOUND_NOT_ALLOWED = "EGRESS_INBOUND_NOT_ALLOWED"
EGRESS_FRAGMENT = "EGRESS_FRAGMENT"
EGRESS_SYSCALL_REFUSED = "EGRESS_SYSCALL_REFUSED"  # by the agent's seccomp filter (reported from its audit record)

MESSAGES = {
    INPUT_MALFORMED: "the request could not be mapped to an action",
    INPUT_OVERSIZED: "the request exceeds a configured size limit",
    ROUTE_UNKNOWN: "no route-to-action rule matches this request",
    AMOUNT_INVALID: "the amount field is missing or not a non-negative integer",
    BODY_INVALID: "the request body is not the JSON object this route requires",
    PARENT_SAE_INVALID: "the parent SAE did not verify, or was issued to another agent outside this session",
    IDENTITY_MISSING: "no mTLS peer identity was presented",
    IDENTITY_INVALID: "the peer identity is not a SPIFFE ID of this trust domain",
    IDENTITY_REVOKED: "the agent's certificate has been revoked (OCSP)",
    IDENTITY_STATUS_UNKNOWN: "the agent's certificate status could not be established (OCSP): refused",
    AGENT_UNKNOWN: "the agent is not in the on-chain registry",
    AGENT_REVOKED: "the agent has been revoked in the on-chain registry",
    POLICY_PAUSED: "the policy is paused",
    ACTION_NOT_PERMITTED: "the agent's role may not perform this action on this target",
    DATA_CLASS_NOT_PERMITTED: "the data classification exceeds what the policy allows",
    AMOUNT_OVER_LIMIT: "the amount exceeds the policy limit",
    HUMAN_APPROVAL_REQUIRED: "the amount needs human approval: an approver signs the approval_request, "
                             "then send the same request again with it in x-sealgate-approval",
    APPROVAL_INVALID: "the approval is not signed by a configured approver, or is expired",
    APPROVAL_MISMATCH: "the approval is for another agent or another action",
    APPROVAL_REPLAYED: "the approval was already used",
    KEY_NOT_BOUND: "the certificate key is not the one registered for this agent",
    MODEL_NOT_APPROVED: "the agent's model is not registered, is deprecated, or is not the one this rule requires",
    RISK_TOO_HIGH: "the agent's risk score exceeds what the policy allows",
    OUTSIDE_TIME_WINDOW: "the action is outside the policy's allowed hours (UTC)",
    POLICY_STATE_STALE: "the pinned policy state is older than allowed",
    POLICY_EVALUATION_FAILED: "the policy contract could not be evaluated",
    INTERNAL_ERROR: "the authorizer failed; denied to fail closed",
    SIGNING_FAILED: "the authorizer could not sign (HSM unavailable); denied to fail closed, unsigned",
    EVIDENCE_UNAVAILABLE: "the authorizer could not record the decision durably (evidence store unavailable); "
                          "denied to fail closed, not recorded",
    POLICY_STATE_UNAVAILABLE: "the policy state this request needs is not cached and the chain did not answer in time; "
                              "denied to fail closed",
    EGRESS_DESTINATION_NOT_ALLOWED: "the destination (address, port, protocol) is not in the agent's egress allowlist",
    EGRESS_UNREGISTERED_TASK: "the task is under the agents' parent cgroup but in no registered agent cgroup",
    EGRESS_SOCKET_KIND: "agents may not open raw or ICMP sockets",
    EGRESS_DEVICE_NOT_ALLOWED: "the socket is bound to, or the packet leaves through, a device the rule does not name",
    EGRESS_NETNS_NOT_ALLOWED: "the socket is in another network namespace than the allow rule",
    EGRESS_IP_OPTIONS: "IPv4 options or IPv6 extension headers (source routes) are refused for agents",
    EGRESS_SOCKOPT_REROUTES: "a socket option that reroutes traffic (device binding, source routes, pktinfo) is refused",
    EGRESS_INBOUND_NOT_ALLOWED: "inbound traffic or a bind to a port the config does not open for the agent",
    EGRESS_FRAGMENT: "a non-first IP fragment from an agent socket (no ports to judge) is refused",
    EGRESS_SYSCALL_REFUSED: "the agent's seccomp filter refused the call (pidfd_getfd, ptrace, process_vm_*, io_uring, "
                            "a socket family other than unix, inet, inet6, netlink)",
}
