"""OCSF 1.1 Network Activity events for refused (or audited) egress attempts."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from ext_authz.egress.kernel import HOOKS, PROTOCOL_NAMES, C


def ocsf_event(ev: Any, agents_by_index: dict[int, str], now_ms: int | None = None) -> dict[str, Any]:
    """OCSF 1.1 Network Activity (class 4001): Refuse (5) when blocked, Open (1) with action Allowed in audit."""
    blocked = ev.verdict == C["VERDICT_BLOCKED"]
    family = ev.family
    raw = bytes(ev.addr)
    if ev.hook == C["HOOK_SOCK_CREATE"]:
        ip = None
    elif ev.addr_is_v4:  # includes a v4-mapped destination, judged (and reported) as IPv4
        ip = str(ipaddress.IPv4Address(raw[:4]))
    else:
        ip = str(ipaddress.IPv6Address(raw))
    activity = 5 if blocked else 1
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
        "message": f"{'blocked' if blocked else 'audited'} {HOOKS.get(ev.hook, ev.hook)} by agent {agent}",
        "metadata": {"version": "1.1.0", "product": {"name": "Sealgate egress", "vendor_name": "Sealgate"}},
        "actor": {"process": {"pid": ev.pid, "name": bytes(ev.comm).split(b"\0", 1)[0].decode(errors="replace"),
                              "user": {"uid": str(ev.uid)}}},
        "dst_endpoint": {"ip": ip, "port": ev.port or None},
        "connection_info": {"direction_id": 2, "protocol_num": ev.proto,
                            "protocol_name": PROTOCOL_NAMES.get(ev.proto, str(ev.proto)),
                            "protocol_ver_id": 6 if family == 6 else 4},
        "unmapped": {"agent_id": agent, "cgroup_id": ev.cgroup_id, "agent_cgroup_id": ev.agent_cgroup_id,
                     "hook": HOOKS.get(ev.hook, str(ev.hook)), "socket_type": ev.sock_type},
    }

