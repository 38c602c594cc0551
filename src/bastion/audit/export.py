"""Audit events as OCSF-shaped JSON lines, for a SIEM — each line also verifiable.

Each line is an OCSF 1.x ``API Activity`` (class 6003) record built from the stored event, plus
two Bastion fields that make the export checkable offline: ``index`` (the leaf index) and
``leaf`` (the exact committed bytes). ``bastion-verify export`` recomputes the tree from those.
Sensitive fields appear as they are in the leaf (HMAC'd), never raw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson


class Row(Protocol):
    """What an export line is made from (``store.events.EventRow`` fits); a protocol, so the
    offline verifier can rebuild lines without importing the store."""

    @property
    def idx(self) -> int: ...
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def time(self) -> float: ...
    @property
    def leaf(self) -> str: ...


@dataclass(frozen=True, slots=True)
class _Leaf:
    idx: int
    id: str
    name: str
    time: float
    leaf: str


OCSF_VERSION = "1.3.0"
API_ACTIVITY = 6003
_ACTIVITY = {"request": 99, "token": 99, "lock": 3, "principal": 1, "key": 1, "enrollment": 1}


def rebuilt_line(index: int, leaf: str) -> dict[str, Any] | None:
    """The export line an (index, leaf) pair must have been exported as, or None if the leaf is
    not an event commitment. Every field a SIEM shows is derived from the verified leaf, so an
    edited field is caught by comparing the line with this."""
    try:
        data = orjson.loads(leaf)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        row = _Leaf(index, str(data["id"]), str(data["name"]), float(data["time"]), leaf)
    except (KeyError, TypeError, ValueError):
        return None
    rebuilt: dict[str, Any] = orjson.loads(ocsf_line(row))
    return rebuilt


def ocsf_line(row: Row) -> str:
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
