"""Rows for checking the audit log: the range reads verification makes, and the tamper mark.

The tamper mark is two rows of ``state`` every process and every restart share.

``audit_tampered`` is 0 while the log is believed intact; once a watch finds a problem it holds
the first bad index + 1 (or -1 when no index could be named). It is set at most once per
incident (compare-and-set from 0), so only one process records the detection event.
``audit_tamper_acks`` counts acknowledgements: a watch that sees it move starts verifying from
entry 0 again, whatever the mark says. The rows are created on first write, so no migration is
needed and a database that never saw tampering has neither.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from bastion.store.events import CheckpointRow, EventRow
from bastion.store.tables import audit_checkpoints, audit_events, state

TAMPERED = "audit_tampered"
ACKS = "audit_tamper_acks"
_UNLOCATED = -1


@dataclass(frozen=True, slots=True)
class TamperMark:
    tampered: bool
    index: int | None  # the first bad index, when one was named
    acks: int


def _ensure_rows(conn: sa.Connection) -> None:
    values = [{"key": TAMPERED, "value": 0}, {"key": ACKS, "value": 0}]
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    conn.execute(insert(state).values(values).on_conflict_do_nothing(index_elements=["key"]))


def read(conn: sa.Connection) -> TamperMark:
    query = sa.select(state.c.key, state.c.value).where(state.c.key.in_((TAMPERED, ACKS)))
    found = {str(key): int(value) for key, value in conn.execute(query)}
    value = found.get(TAMPERED, 0)
    index = value - 1 if value > 0 else None
    return TamperMark(value != 0, index, found.get(ACKS, 0))


def mark(conn: sa.Connection, index: int | None) -> bool:
    """Mark the log tampered (first bad ``index``) unless it is already; True if this call did."""
    _ensure_rows(conn)
    value = _UNLOCATED if index is None else index + 1
    updated = conn.execute(
        state.update().where(state.c.key == TAMPERED, state.c.value == 0).values(value=value)
    )
    return updated.rowcount == 1


def acknowledge(conn: sa.Connection) -> TamperMark | None:
    """Clear the mark and count the acknowledgement; the mark as it was, or ``None`` (and no
    change) if the log was not marked."""
    before = read(conn)
    cleared = conn.execute(
        state.update().where(state.c.key == TAMPERED, state.c.value != 0).values(value=0)
    )
    if not before.tampered or cleared.rowcount != 1:  # not marked, or another ack came first
        return None
    _ensure_rows(conn)
    conn.execute(state.update().where(state.c.key == ACKS).values(value=state.c.value + 1))
    return before


def checkpoints_between(conn: sa.Connection, low: int, high: int) -> list[CheckpointRow]:
    """The stored checkpoints of sizes in (``low``, ``high``], smallest first."""
    result = conn.execute(
        sa.select(audit_checkpoints)
        .where(audit_checkpoints.c.size > low, audit_checkpoints.c.size <= high)
        .order_by(audit_checkpoints.c.size)
    )
    return [CheckpointRow(**row._mapping) for row in result]


def events_between(conn: sa.Connection, start: int, end: int) -> list[EventRow]:
    """The stored events with indices in [``start``, ``end``), in order. Built positionally:
    verification reads every row of the log, and this is a third cheaper per row than
    ``events.after``."""
    result = conn.execute(
        sa.select(
            audit_events.c.idx,
            audit_events.c.id,
            audit_events.c.name,
            audit_events.c.time,
            audit_events.c.body,
            audit_events.c.leaf,
        )
        .where(audit_events.c.idx >= start, audit_events.c.idx < end)
        .order_by(audit_events.c.idx)
    )
    return [
        EventRow(idx, id_, name, time, body, leaf) for idx, id_, name, time, body, leaf in result
    ]
