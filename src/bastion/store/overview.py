"""Read-only counts for the console's overview, from the shared tables (cluster-correct: every
gateway's request events are in the one audit log).

A request is a ``request.decided`` event; whether it was denied is read from its canonical body
(sorted keys, compact JSON), where ``"allowed":false`` can only be the field itself: a quote
inside a string value is always escaped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from bastion.store.tables import audit_events, findings, incidents, locks

REQUEST = "request.decided"
_DENIED = audit_events.c.body.contains('"allowed":false', autoescape=True)
MAX_REASON_SAMPLE = 2000  # the latest denials read for the top reasons


@dataclass(frozen=True, slots=True)
class Counts:
    allowed: int
    denied: int


def requests_since(conn: sa.Connection, since: float) -> Counts:
    """Allowed and denied requests decided at or after ``since``."""
    denied = sa.func.sum(sa.case((_DENIED, 1), else_=0))
    row = conn.execute(
        sa.select(sa.func.count(), denied).where(
            audit_events.c.name == REQUEST, audit_events.c.time >= since
        )
    ).one()
    total, refused = int(row[0]), int(row[1] or 0)
    return Counts(total - refused, refused)


def request_minutes(conn: sa.Connection, since: float, width: float = 60.0) -> dict[int, Counts]:
    """Allowed and denied requests per ``width``-second bucket since ``since`` (bucket number
    ``floor((time - since) / width)``), only the buckets that have any."""
    offset = (audit_events.c.time - since) / width
    # floor() is not in every SQLite build; times are after ``since``, so truncation is floor
    bucket = (
        sa.func.floor(offset) if conn.dialect.name == "postgresql" else sa.cast(offset, sa.Integer)
    )
    denied = sa.func.sum(sa.case((_DENIED, 1), else_=0))
    rows = conn.execute(
        sa.select(bucket.label("bucket"), sa.func.count(), denied)
        .where(audit_events.c.name == REQUEST, audit_events.c.time >= since)
        .group_by(sa.literal_column("bucket"))  # the label: one expression, one set of binds
    )
    out: dict[int, Counts] = {}
    for index, total, refused in rows:
        refused = int(refused or 0)
        out[int(index)] = Counts(int(total) - refused, refused)
    return out


def top_denial_reasons(conn: sa.Connection, since: float, limit: int = 5) -> list[tuple[str, int]]:
    """The most frequent reasons among the latest denials since ``since``."""
    rows = conn.execute(
        sa.select(audit_events.c.body)
        .where(audit_events.c.name == REQUEST, audit_events.c.time >= since, _DENIED)
        .order_by(audit_events.c.idx.desc())
        .limit(MAX_REASON_SAMPLE)
    )
    counter: Counter[str] = Counter()
    for (body,) in rows:
        reasons = orjson.loads(body).get("reasons") or ()
        counter.update(str(reason) for reason in reasons)
    return counter.most_common(limit)


def open_findings(conn: sa.Connection) -> int:
    query = sa.select(sa.func.count()).select_from(findings).where(findings.c.status == "open")
    return int(conn.execute(query).scalar_one())


def open_incidents(conn: sa.Connection) -> int:
    query = (
        sa.select(sa.func.count()).select_from(incidents).where(incidents.c.status != "resolved")
    )
    return int(conn.execute(query).scalar_one())


def active_locks(conn: sa.Connection, now: float) -> int:
    query = (
        sa.select(sa.func.count())
        .select_from(locks)
        .where(
            locks.c.released_at.is_(None),
            sa.or_(locks.c.expires_at.is_(None), locks.c.expires_at > now),
        )
    )
    return int(conn.execute(query).scalar_one())
