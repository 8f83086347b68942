"""Certificate lifecycle events (issued, renewed, revoked, expiry warning) as OCSF 1.1 JSON, one line each.

OCSF has no certificate class; these are Entity Management (class 3004, category 3 Identity & Access
Management): Create = issued, Update = renewed, Delete = revoked, Other (99) = expiry warning, the
certificate as the entity. A SIEM exporter reads the JSON lines file (`events.jsonl` in the PKI
directory) or the `sealgate.pki.events` logger.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("sealgate.pki.events")

ACTIVITIES = {"issued": (1, "Create"), "renewed": (3, "Update"), "revoked": (4, "Delete"), "expiry_warning": (99, "Other")}
SEVERITY = {"issued": 1, "renewed": 1, "revoked": 3, "expiry_warning": 3}  # informational; medium


def certificate_event(kind: str, *, serial: int, subject: str, not_before: int, not_after: int, issuer: str,
                      reason: str | None = None, now_ms: int | None = None) -> dict[str, Any]:
    """One lifecycle event; `subject` is the SPIFFE ID (or the CA's name), times are unix seconds."""
    if kind not in ACTIVITIES:
        raise ValueError(f"unknown certificate event {kind!r}")
    activity_id, activity = ACTIVITIES[kind]
    message = f"certificate {serial:x} for {subject} {kind.replace('_', ' ')}" + (f" ({reason})" if reason else "")
    event: dict[str, Any] = {
        "class_uid": 3004,
        "class_name": "Entity Management",
        "category_uid": 3,
        "category_name": "Identity & Access Management",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": 300400 + activity_id,
        "time": now_ms if now_ms is not None else int(time.time() * 1000),
        "severity_id": SEVERITY[kind],
        "status_id": 1,
        "message": message,
        "metadata": {"version": "1.1.0", "product": {"name": "Sealgate PKI", "vendor_name": "Sealgate"}},
        "entity": {"type": "certificate", "uid": f"{serial:x}", "name": subject,
                   "data": {"serial": f"{serial:x}", "subject_spiffe_id": subject, "issuer": issuer,
                            "not_before": not_before, "not_after": not_after}},
        "unmapped": {"lifecycle": kind},
    }
    if reason:
        event["entity"]["data"]["reason"] = reason
    return event


class EventLog:
    """Appends events to a JSON lines file (mode 0600), one write per event, and logs each."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()

    def emit(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, sort_keys=True, separators=(",", ":")) + "\n"
        log.info("%s", event["message"])
        if self.path is None:
            return
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)


def read_events(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines() if line] if p.exists() else []
