"""OCSF 1.1 Network Activity events for refused (or audited) egress attempts."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from ext_authz import reasons
from ext_authz.egress.kernel import HOOKS, PROTOCOL_NAMES, C

REASONS = {
    C["REASON_DESTINATION"]: reasons.EGRESS_DESTINATION_NOT_ALLOWED,
    C["REASON_UNREGISTERED"]: reasons.EGRESS_UNREGISTERED_TASK,
    C["REASON_SOCKET_KIND"]: reasons.EGRESS_SOCKET_KIND,
    C["REASON_DEVICE"]: reasons.EGRESS_DEVICE_NOT_ALLOWED,
    C["REASON_NETNS"]: reasons.EGRESS_NETNS_NOT_ALLOWED,
    C["REASON_IP_OPTIONS"]: reasons.EGRESS_IP_OPTIONS,
    C["REASON_SOCKOPT"]: reasons.EGRESS_SOCKOPT_REROUTES,
    C["REASON_INBOUND"]: reasons.EGRESS_INBOUND_NOT_ALLOWED,
    C["REASON_FRAGMENT"]: reasons.EGRESS_FRAGMENT,
}
LOSS_CLASS = "Sealgate Egress Event Loss"


def seccomp_event(fields: dict[str, Any], agent: str, now_ms: int | None = None) -> dict[str, Any]:
    """OCSF 4001 Refuse for a call the agent's seccomp filter refused (from its audit record)."""
    return {
        "class_uid": 4001, "class_name": "Network Activity", "category_uid": 4, "activity_id": 5, "type_uid": 400105,
        "time": now_ms if now_ms is not None else int(time.time() * 1000),
        "severity_id": 3, "action_id": 2, "disposition_id": 2, "status_id": 2,
        "message": f"blocked {fields['syscall']} by agent {agent}: {reasons.EGRESS_SYSCALL_REFUSED}",
        "metadata": {"version": "1.1.0", "product": {"name": "Sealgate egress", "vendor_name": "Sealgate"}},
        "actor": {"process": {"pid": fields["pid"], "name": fields["comm"], "user": {"uid": fields["uid"]}}},
        "dst_endpoint": {"ip": None, "port": None},
        "connection_info": {"direction_id": 2, "protocol_num": None, "protocol_name": None, "protocol_ver_id": None},
        "unmapped": {"agent_id": agent, "hook": "seccomp", "reason_code": reasons.EGRESS_SYSCALL_REFUSED,
                     "syscall": fields["syscall"], "syscall_nr": fields["syscall_nr"], "seq": None},
    }


def loss_event(reported_before: int, dropped_total: int, now_ms: int | None = None) -> dict[str, Any]:
    """Events dropped_total - reported_before were lost (ring buffer full): drop numbers
    reported_before+1 .. dropped_total of the pinned counter, so a record repeated after a
    crash between writing it and saving the count is recognisable."""
    return {"class_name": LOSS_CLASS, "time": now_ms if now_ms is not None else int(time.time() * 1000),
            "dropped_events": dropped_total - reported_before, "dropped_from": reported_before,
            "dropped_total": dropped_total}


def ocsf_event(ev: Any, agents_by_index: dict[int, str], now_ms: int | None = None) -> dict[str, Any]:
    """OCSF 1.1 Network Activity (class 4001): Refuse (5) when blocked, Open (1) with action Allowed in audit."""
    blocked = ev.verdict == C["VERDICT_BLOCKED"]
    family = ev.family
    raw = bytes(ev.addr)
    if ev.hook in (C["HOOK_SOCK_CREATE"], C["HOOK_SETSOCKOPT"]):
        ip = None
    elif ev.addr_is_v4:  # includes a v4-mapped destination, judged (and reported) as IPv4
        ip = str(ipaddress.IPv4Address(raw[:4]))
    else:
        ip = str(ipaddress.IPv6Address(raw))
    activity = 5 if blocked else 1
    reason = REASONS.get(ev.reason, f"EGRESS_REASON_{ev.reason}")
    inbound = ev.hook in (C["HOOK_SKB_INGRESS"], C["HOOK_BIND4"], C["HOOK_BIND6"])
    agent = agents_by_index.get(ev.agent_idx, "unregistered" if ev.agent_idx == C["AGENT_UNREGISTERED"] else f"#{ev.agent_idx}")
    return {
        "class_uid": 4001,
        "class_name": "Network Activity",
        "category_uid": 4,
        "activity_id": activity,
        "type_uid": 400100 + activity,
        "time": now_ms if now_ms is not None else int(time.time() * 1000),
        "severity_id": 3 if blocked else 2,
        "action_id": 2 if blocked else 1,
        "disposition_id": 2 if blocked else 1,
        "status_id": 2 if blocked else 1,
        "message": f"{'blocked' if blocked else 'audited'} {HOOKS.get(ev.hook, ev.hook)} by agent {agent}: {reason}",
        "metadata": {"version": "1.1.0", "product": {"name": "Sealgate egress", "vendor_name": "Sealgate"}},
        "actor": {"process": {"pid": ev.pid, "name": bytes(ev.comm).split(b"\0", 1)[0].decode(errors="replace"),
                              "user": {"uid": str(ev.uid)}}},
        "dst_endpoint": {"ip": ip, "port": ev.port or None},
        "connection_info": {"direction_id": 1 if inbound else 2, "protocol_num": ev.proto,
                            "protocol_name": PROTOCOL_NAMES.get(ev.proto, str(ev.proto)),
                            "protocol_ver_id": 6 if family == 6 else 4},
        "unmapped": {"agent_id": agent, "cgroup_id": ev.cgroup_id, "agent_cgroup_id": ev.agent_cgroup_id,
                     "hook": HOOKS.get(ev.hook, str(ev.hook)), "socket_type": ev.sock_type, "reason_code": reason,
                     "seq": ev.seq, "ifindex": ev.ifindex or None,
                     "sockopt": [ev.detail >> 16, ev.detail & 0xFFFF] if ev.hook == C["HOOK_SETSOCKOPT"] else None},
    }

