"""Audit events: frozen dataclasses named ``subject.action``, with context copied in when made.

Each event serializes canonically (sorted keys, compact orjson) so the same event always yields the
same bytes — the form a Merkle leaf commits to. Events hold names, ids, addresses and counts; never
a token, a proof, a key or request content.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import orjson


def new_event_id() -> str:
    return "ev_" + secrets.token_hex(10)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    name: ClassVar[str] = "event"
    id: str = field(default_factory=new_event_id)
    time: float = field(default_factory=time.time)
    actor: str = ""

    @property
    def event_name(self) -> str:
        """The ``subject.action`` name this event is recorded under."""
        return self.name

    def record(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["name"] = self.event_name
        return data

    def canonical(self) -> bytes:
        return orjson.dumps(self.record(), option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestDecided(Event):
    """One gateway request: the decision and, once the response ended, its outcome and usage."""

    name: ClassVar[str] = "request.decided"
    principal: str | None
    org: str | None
    model: str | None
    compartment: str | None
    route: str
    allowed: bool
    reasons: tuple[str, ...]
    policies: tuple[str, ...]
    epoch: int | None
    source_ip: str
    family: str | None
    jkt: str | None
    status: int
    act: tuple[str, ...] = ()  # delegation: who made the call for ``principal`` (RFC 8693)
    outcome: str  # completed | denied | error | cut | client_closed
    error: str | None = None  # the error code the caller got, if any
    stream: bool = False
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_ms: float = 0.0
    # Detection signals computed at the gateway (never request content): the caller's user agent
    # (printable, at most 200 characters); the content classifier's label and score (D10); whether
    # the upstream refused to answer; the source's ASN, country and origin (D11:
    # anonymizer | hosting) from the IP intelligence databases.
    client: str = ""
    content_label: str = ""
    content_score: float = 0.0
    refused: bool = False
    asn: int = 0
    country: str = ""
    origin: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestAuthorized(Event):
    """An allowed request to an ``audit: required`` compartment, made durable before it is
    forwarded; its ``request.decided`` event follows when the response ends."""

    name: ClassVar[str] = "request.authorized"
    principal: str
    org: str
    model: str
    compartment: str
    route: str
    policies: tuple[str, ...]
    epoch: int
    source_ip: str
    family: str
    jkt: str
    act: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AdminAction(Event):
    """A change made through the CLI, API or console: who did what to which target, and why."""

    name: ClassVar[str] = "admin.action"
    action: str  # the recorded name: principal.created, lock.created, key.enrolled, ...
    target_type: str
    target: str
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def event_name(self) -> str:
        return self.action


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenEvent(Event):
    """The token service issued, refreshed or refused a token, or revoked a family."""

    name: ClassVar[str] = "token.event"
    action: str  # issued | refreshed | refused | family_revoked | enrolled
    principal: str | None
    family: str | None = None
    jkt: str | None = None
    source_ip: str = ""
    error: str | None = None
    grant_type: str = ""
    reason: str = ""
    act: tuple[str, ...] = ()  # delegation: who acted for ``principal`` (RFC 8693)
    amr: tuple[str, ...] = ()  # how an issued token's caller authenticated: pop, otp
    client: str = ""  # the caller's user agent (printable, at most 200 characters)

    @property
    def event_name(self) -> str:
        return f"token.{self.action}"


@dataclass(frozen=True, slots=True, kw_only=True)
class FindingRaised(Event):
    """The detection engine raised a new finding (repeats update the stored finding only)."""

    name: ClassVar[str] = "finding.raised"
    finding: str
    detection: str
    severity: str
    status: str
    entity_type: str
    entity: str
    principal: str
    org: str
    explanation: str
    evidence: tuple[str, ...]
    techniques: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditTamperDetected(Event):
    """The running server found the stored audit log changed: the first bad entry's ``index``
    and ``event_id`` (``None`` and ``""`` when the problem has no single entry, such as a
    checkpoint whose root differs) and what was wrong. The field names are stable: response
    playbooks key on them."""

    name: ClassVar[str] = "audit.tamper_detected"
    index: int | None
    event_id: str
    problem: str
