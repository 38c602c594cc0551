"""Audit events as OCSF-shaped JSON lines, for a SIEM — each line also verifiable.

Each line is an OCSF 1.x ``API Activity`` (class 6003) record built from the stored event, plus
two Bastion fields that make the export checkable offline: ``index`` (the leaf index) and
``leaf`` (the exact committed bytes). ``bastion-verify export`` recomputes the tree from those.
Sensitive fields appear as they are in the leaf (HMAC'd), never raw.
"""

from __future__ import annotations

from typing import Any

import orjson

from bastion.store.events import EventRow

OCSF_VERSION = "1.3.0"
API_ACTIVITY = 6003
_ACTIVITY = {"request": 99, "token": 99, "lock": 3, "principal": 1, "key": 1, "enrollment": 1}


def ocsf_line(row: EventRow) -> str:
    leaf: dict[str, Any] = orjson.loads(row.leaf)
    subject = row.name.split(".", 1)[0]
    allowed = leaf.get("allowed")
    status_id = 0 if allowed is None else (1 if allowed else 2)
    record: dict[str, Any] = {
        "class_uid": API_ACTIVITY,
        "category_uid": 6,
        "activity_id": _ACTIVITY.get(subject, 99),
        "type_uid": API_ACTIVITY * 100 + _ACTIVITY.get(subject, 99),
        "time": int(row.time * 1000),
        "severity_id": 1,
        "status_id": status_id,
        "status": {0: "Unknown", 1: "Success", 2: "Failure"}[status_id],
        "message": row.name,
        "actor": {"user": {"name": leaf.get("principal") or leaf.get("actor") or ""}},
        "api": {"operation": row.name, "service": {"name": "bastion"}},
        "src_endpoint": {"ip": leaf.get("source_ip") or ""},
        "metadata": {
            "version": OCSF_VERSION,
            "uid": row.id,
            "product": {"name": "Bastion", "vendor_name": "Bastion"},
        },
        "unmapped": {k: v for k, v in leaf.items() if k not in ("id", "name", "time")},
        "index": row.idx,
        "leaf": row.leaf,
    }
    return orjson.dumps(record).decode()
