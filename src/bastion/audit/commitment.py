"""What a Merkle leaf commits to: the event, with its sensitive fields replaced by HMACs.

A leaf is the canonical JSON (sorted keys, compact, UTF-8) of the event's record in which token
family ids, device-key thumbprints, the targets of key and family locks and (if configured)
source addresses are replaced by ``hmac-sha256:<hex>`` under the log's secret salt. Checkpoints,
proofs and receipts can then be handed to an auditor without handing over those identifiers;
whoever holds the salt (the operator) can still recompute every leaf from the stored event and
so detect an edit of either. Prompts and completions are never part of an event.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

import orjson

SENSITIVE_FIELDS = ("family", "jkt")
ADDRESS_FIELDS = ("source_ip",)
SENSITIVE_TARGETS = ("key", "family")
PREFIX = "hmac-sha256:"


def canonical(record: Mapping[str, Any]) -> bytes:
    """The one serialization of a record: sorted keys, no whitespace, UTF-8."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


class Committer:
    """Turns event records into leaf bytes under one salt."""

    def __init__(self, salt: bytes, *, hash_addresses: bool = False) -> None:
        if len(salt) < 16:
            raise ValueError("the audit salt must be at least 16 bytes")
        self._salt = salt
        self._fields = SENSITIVE_FIELDS + (ADDRESS_FIELDS if hash_addresses else ())

    def _mac(self, name: str, value: str) -> str:
        # the one-shot digest: the same HMAC as hmac.new(...).hexdigest(), several times faster
        return PREFIX + hmac.digest(self._salt, f"{name}\x00{value}".encode(), "sha256").hex()

    def leaf(self, record: Mapping[str, Any]) -> bytes:
        """The leaf bytes for an event record (as stored in ``audit_events.body``)."""
        committed = dict(record)
        for name in self._fields:
            value = committed.get(name)
            if isinstance(value, str) and value:
                committed[name] = self._mac(name, value)
        if committed.get("target_type") in SENSITIVE_TARGETS and committed.get("target"):
            committed["target"] = self._mac("target", str(committed["target"]))
        return canonical(committed)
