"""An incident's timeline: the audit events that name what it implicates, in order.

The timeline is read from the audit log when asked for (the log is the evidence; a copy would
go stale and could disagree). :func:`read_window` walks a time window by the ``time`` index in
batches and hands each parsed event to visitors — the timeline here and the blast radius
(``blast_radius.py``) — so both come from one pass. A busy window can hold millions of events,
so one pass reads at most :data:`MAX_SCANNED`: half forward from the start (how it began), the
rest backward from now (where it stands); what was not read, and what was read but not kept,
is said, never silently dropped.

Summaries are one line of plain text built from names, addresses, counts and reasons (events
never carry prompts, tokens or keys); control characters are replaced, and renderers still
treat them as text, never markup.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa

from bastion.store.tables import audit_events

from .entities import Implicated, network_of

MAX_SCANNED = 50_000
MAX_KEPT = 2_000
BATCH = 1_000
MAX_SUMMARY = 300
KINDS = ("request", "token", "admin", "finding", "response")
# Admin actions on these targets name an implicated entity of the given kind.
_TARGET_KINDS = {
    "principal": "principals",
    "stepup": "principals",
    "throttle": "principals",
    "org": "orgs",
    "family": "families",
    "key": "keys",
}

_Row = tuple[int, str, str, float, str]  # idx, id, name, time, body
Visitor = Callable[[int, str, float, str, Mapping[str, Any]], None]


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    idx: int  # the event's leaf index in the audit log (proofs are asked for by it)
    id: str
    time: float
    name: str
    kind: str  # request | token | admin | finding | response
    summary: str


@dataclass(frozen=True, slots=True)
class Window:
    """What one pass over the audit log read."""

    start: float
    end: float
    scanned: int
    unscanned: tuple[float, float] | None = None  # a stretch left unread (too many events)


@dataclass(frozen=True, slots=True)
class Timeline:
    start: float
    end: float
    entries: tuple[TimelineEntry, ...]
    scanned: int  # events read
    matched: int  # events read that named the incident
    unscanned: tuple[float, float] | None = None
    omitted: int = 0  # matched but not kept (the middle of a long timeline)

    @property
    def truncated(self) -> bool:
        return self.unscanned is not None or self.omitted > 0

    @property
    def note(self) -> str:
        """What is missing, in a sentence ("" when nothing is)."""
        parts = []
        if self.unscanned is not None:
            parts.append(
                f"the window held more than {self.scanned} events: those between "
                f"{self.unscanned[0]:.3f} and {self.unscanned[1]:.3f} were not read"
            )
        if self.omitted:
            parts.append(
                f"{self.omitted} of {self.matched} matching events in the middle are not shown"
            )
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "scanned": self.scanned,
            "matched": self.matched,
            "omitted": self.omitted,
            "truncated": self.truncated,
            "unscanned": list(self.unscanned) if self.unscanned else None,
            "note": self.note,
            "entries": [
                {
                    "idx": e.idx,
                    "id": e.id,
                    "time": e.time,
                    "name": e.name,
                    "kind": e.kind,
                    "summary": e.summary,
                }
                for e in self.entries
            ],
        }


def read_window(
    conn: sa.Connection,
    start: float,
    end: float,
    visitors: Sequence[Visitor],
    *,
    max_scanned: int = MAX_SCANNED,
    batch: int = BATCH,
) -> Window:
    """Hand every event with ``start <= time <= end`` to the visitors (unparseable bodies are
    skipped), reading at most ``max_scanned``: forward from the start, then backward from the
    end until the two passes meet or the budget is spent."""
    forward_budget = max(1, max_scanned // 2)
    scanned, last_forward = 0, (start, -1)
    for row in _rows(conn, start, end, None, None, forward=True, batch=batch):
        if scanned >= forward_budget:
            break
        _visit(row, visitors)
        scanned += 1
        last_forward = (row[3], row[0])
    else:
        return Window(start, end, scanned)
    earliest_backward = end
    for row in _rows(conn, start, end, None, last_forward, forward=False, batch=batch):
        if scanned >= max_scanned:
            return Window(start, end, scanned, (last_forward[0], earliest_backward))
        _visit(row, visitors)
        scanned += 1
        earliest_backward = row[3]
    return Window(start, end, scanned)


def _visit(row: _Row, visitors: Sequence[Visitor]) -> None:
    idx, event_id, name, time, body = row
    try:
        record = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    if not isinstance(record, dict):
        return
    for visit in visitors:
        visit(idx, event_id, time, name, record)


def _rows(
    conn: sa.Connection,
    start: float,
    end: float,
    cursor: tuple[float, int] | None,
    stop: tuple[float, int] | None,
    *,
    forward: bool,
    batch: int,
) -> Iterator[_Row]:
    """Events in the window in (time, idx) order (or reverse), by keyset pages; a backward
    walk ends at ``stop``, where the forward one ended."""
    t, i = audit_events.c.time, audit_events.c.idx
    columns = (i, audit_events.c.id, audit_events.c.name, t, audit_events.c.body)
    while True:
        query = sa.select(*columns).where(t >= start, t <= end)
        if cursor is not None:
            after = (t > cursor[0]) | ((t == cursor[0]) & (i > cursor[1]))
            before = (t < cursor[0]) | ((t == cursor[0]) & (i < cursor[1]))
            query = query.where(after if forward else before)
        if stop is not None:
            query = query.where((t > stop[0]) | ((t == stop[0]) & (i > stop[1])))
        order = (t.asc(), i.asc()) if forward else (t.desc(), i.desc())
        rows = [
            (int(r.idx), str(r.id), str(r.name), float(r.time), str(r.body))
            for r in conn.execute(query.order_by(*order).limit(batch))
        ]
        yield from rows
        if len(rows) < batch:
            return
        cursor = (rows[-1][3], rows[-1][0])


# -- what names the incident ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """What an incident's timeline follows: its entities, itself, its findings and actions."""

    entities: Implicated
    incident: str
    findings: frozenset[str] = frozenset()
    actions: frozenset[str] = frozenset()
    locks: frozenset[str] = frozenset()
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, default=()
    )

    def __post_init__(self) -> None:
        parsed = []
        for cidr in self.entities.networks:
            try:
                parsed.append(ipaddress.ip_network(cidr, strict=False))
            except ValueError:
                continue
        object.__setattr__(self, "_networks", tuple(parsed))

    def names(self, name: str, record: Mapping[str, Any]) -> bool:
        """Whether an event is about the incident's entities, the incident or its parts."""
        e = self.entities
        if _str(record.get("principal")) in e.principals or self._by_actor(record):
            return True
        if _str(record.get("family")) in e.families or _str(record.get("jkt")) in e.keys:
            return True
        if self.from_networks(record.get("source_ip")):
            return True
        if name == "finding.raised":
            return self._finding(record)
        if "target_type" in record:
            return self._admin(record)
        return False

    def from_networks(self, source: object) -> bool:
        """Whether a source address is in one of the incident's (/24 or /64) networks."""
        networks = self.entities.networks
        return isinstance(source, str) and bool(source) and network_of(source) in networks

    def _by_actor(self, record: Mapping[str, Any]) -> bool:
        actor = _str(record.get("actor"))
        principals = self.entities.principals
        if actor in principals or actor.removeprefix("principal:") in principals:
            return True
        act = record.get("act")
        return isinstance(act, list) and any(_str(a) in principals for a in act)

    def _finding(self, record: Mapping[str, Any]) -> bool:
        if _str(record.get("finding")) in self.findings:
            return True
        entity_type, entity = _str(record.get("entity_type")), _str(record.get("entity"))
        if entity_type == "network":
            return self._overlaps(entity)
        kind = _TARGET_KINDS.get(entity_type)
        return kind is not None and entity in getattr(self.entities, kind)

    def _admin(self, record: Mapping[str, Any]) -> bool:
        target_type, target = _str(record.get("target_type")), _str(record.get("target"))
        if target_type == "incident":
            return target == self.incident
        kind = _TARGET_KINDS.get(target_type)
        if kind is not None and target in getattr(self.entities, kind):
            return True
        if target_type == "network" and self._overlaps(target):
            return True
        detail = record.get("detail")
        return isinstance(detail, dict) and self._detail(detail)

    def _detail(self, detail: Mapping[str, Any]) -> bool:
        if _str(detail.get("incident")) == self.incident:
            return True
        if _str(detail.get("finding")) in self.findings:
            return True
        if _str(detail.get("action_id")) in self.actions or _str(detail.get("lock")) in self.locks:
            return True
        locks = detail.get("locks")
        return isinstance(locks, list) and any(_str(lock) in self.locks for lock in locks)

    def _overlaps(self, target: str) -> bool:
        try:
            network = ipaddress.ip_network(target, strict=False)
        except ValueError:
            return False
        return any(
            mine.version == network.version and network.overlaps(mine) for mine in self._networks
        )


def _str(value: object) -> str:
    """A field as a string to compare ("" for anything else: nothing matches "")."""
    return value if isinstance(value, str) else ""


class TimelineBuilder:
    """A visitor: keeps the events the scope names, then the first and last of them."""

    def __init__(self, scope: Scope, *, max_kept: int = MAX_KEPT) -> None:
        self._scope = scope
        self._max_kept = max_kept
        self._entries: list[TimelineEntry] = []

    def __call__(
        self, idx: int, event_id: str, time: float, name: str, record: Mapping[str, Any]
    ) -> None:
        if self._scope.names(name, record):
            self._entries.append(
                TimelineEntry(idx, event_id, time, name, kind_of(name), summary(name, record))
            )

    def timeline(self, window: Window) -> Timeline:
        entries = sorted(self._entries, key=lambda e: (e.time, e.idx))
        matched, omitted = len(entries), 0
        if matched > self._max_kept:
            head = self._max_kept // 2
            entries = entries[:head] + entries[matched - (self._max_kept - head) :]
            omitted = matched - self._max_kept
        return Timeline(
            start=window.start,
            end=window.end,
            entries=tuple(entries),
            scanned=window.scanned,
            matched=matched,
            unscanned=window.unscanned,
            omitted=omitted,
        )


# -- one readable line per event ------------------------------------------------------------------


def kind_of(name: str) -> str:
    for prefix, kind in (
        ("request.", "request"),
        ("token.", "token"),
        ("finding.", "finding"),
        ("response.", "response"),
    ):
        if name.startswith(prefix):
            return kind
    return "admin"


def summary(name: str, record: Mapping[str, Any]) -> str:
    """One line a responder reads at a glance, e.g. ``request.decided vic → model
    frontier-cyber DENIED not_granted from 10.1.9.7``."""
    if name in ("request.decided", "request.authorized"):
        text = _request(name, record)
    elif name.startswith("token."):
        text = _token(name, record)
    elif name == "finding.raised":
        text = (
            f"{name} {_f(record, 'detection')} {_f(record, 'severity')} on "
            f"{_f(record, 'entity_type')} {_f(record, 'entity')}: {_f(record, 'explanation', 200)}"
        )
    elif name.startswith("response."):
        found = record.get("detail")
        detail: Mapping[str, Any] = found if isinstance(found, dict) else {}
        text = (
            f"{name} {_f(record, 'target_type')} {_f(record, 'target')}: "
            f"{_f(detail, 'status')} ({_f(detail, 'mode')})"
        )
    else:
        reason = _f(record, "reason", 120, "")
        text = (
            f"{name} by {_f(record, 'actor')} on {_f(record, 'target_type')} "
            f"{_f(record, 'target')}" + (f": {reason}" if reason else "")
        )
    return _clean(text)[:MAX_SUMMARY]


def _request(name: str, record: Mapping[str, Any]) -> str:
    head = f"{name} {_f(record, 'principal')} → model {_f(record, 'model')}"
    source = f"from {_f(record, 'source_ip')}"
    if name == "request.authorized":
        return f"{head} authorized (audit required) {source}"
    if not record.get("allowed"):
        reasons = _join(record.get("reasons"))
        return f"{head} DENIED {reasons} {source}"
    tokens = record.get("tokens_out")
    usage = f", {tokens} tokens out" if isinstance(tokens, int) else ""
    return f"{head} allowed ({_f(record, 'outcome')}{usage}) {source}"


def _token(name: str, record: Mapping[str, Any]) -> str:
    text = f"{name} {_f(record, 'principal')} family {_f(record, 'family')}"
    jkt = _f(record, "jkt", 12, "")
    if jkt:
        text += f" key {jkt}"
    text += f" from {_f(record, 'source_ip')}"
    error = _f(record, "error", 60, "")
    reason = _f(record, "reason", 120, "")
    return text + (f" error {error}" if error else "") + (f" ({reason})" if reason else "")


def _f(record: Mapping[str, Any], key: str, limit: int = 80, default: str = "-") -> str:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return default
    text = str(value)
    return (text[:limit] + "…" if len(text) > limit else text) or default


def _join(values: object) -> str:
    if not isinstance(values, list):
        return "-"
    return ",".join(str(v)[:40] for v in values[:5] if isinstance(v, str)) or "-"


def _clean(text: str) -> str:
    """Control and other unprintable characters become spaces (one line, no terminal codes)."""
    return "".join(ch if ch.isprintable() else " " for ch in text)
