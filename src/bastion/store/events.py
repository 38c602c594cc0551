"""The audit log's rows: events (by leaf index), complete-subtree nodes, signed checkpoints."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
import sqlalchemy as sa

from bastion.store.tables import audit_checkpoints, audit_events, audit_nodes, state


@dataclass(frozen=True, slots=True)
class EventRow:
    idx: int
    id: str
    name: str
    time: float
    body: str
    leaf: str


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    size: int
    root: bytes
    note: str
    created_at: float


def take_append_lock(conn: sa.Connection) -> int:
    """Serialize appenders: this write takes PostgreSQL's row lock or SQLite's write lock for the
    rest of the transaction, so reading the tree size afterwards is race-free. Returns the
    append counter after this append (it counts appends and checkpoints, by anyone)."""
    value = conn.execute(
        state.update()
        .where(state.c.key == "audit_appends")
        .values(value=state.c.value + 1)
        .returning(state.c.value)
    ).scalar_one()
    return int(value)


def size(conn: sa.Connection) -> int:
    value = conn.execute(sa.select(sa.func.max(audit_events.c.idx))).scalar_one()
    return 0 if value is None else int(value) + 1


def insert(conn: sa.Connection, rows: Sequence[EventRow]) -> None:
    if rows:
        conn.execute(
            audit_events.insert(),
            [
                {
                    "idx": r.idx,
                    "id": r.id,
                    "name": r.name,
                    "time": r.time,
                    "body": r.body,
                    "leaf": r.leaf,
                }
                for r in rows
            ],
        )


def insert_nodes(conn: sa.Connection, nodes: Iterable[tuple[int, int, bytes]]) -> None:
    values = [{"level": level, "idx": index, "hash": digest} for level, index, digest in nodes]
    if values:
        conn.execute(audit_nodes.insert(), values)


def node(conn: sa.Connection, level: int, index: int) -> bytes | None:
    row = conn.execute(
        sa.select(audit_nodes.c.hash).where(
            audit_nodes.c.level == level, audit_nodes.c.idx == index
        )
    ).first()
    return bytes(row[0]) if row else None


def leaf_nodes(conn: sa.Connection, start: int, end: int) -> dict[int, bytes]:
    """The stored leaf hashes (level 0) for indices in [start, end), in one query."""
    result = conn.execute(
        sa.select(audit_nodes.c.idx, audit_nodes.c.hash).where(
            audit_nodes.c.level == 0, audit_nodes.c.idx >= start, audit_nodes.c.idx < end
        )
    )
    return {int(idx): bytes(digest) for idx, digest in result}


def after(conn: sa.Connection, idx: int, limit: int = 500) -> list[EventRow]:
    """Events with index greater than ``idx``, in order."""
    rows = conn.execute(
        sa.select(audit_events)
        .where(audit_events.c.idx > idx)
        .order_by(audit_events.c.idx)
        .limit(limit)
    )
    return [EventRow(**row._mapping) for row in rows]


def by_id(conn: sa.Connection, event_id: str) -> EventRow | None:
    row = conn.execute(sa.select(audit_events).where(audit_events.c.id == event_id)).first()
    return EventRow(**row._mapping) if row else None


def last(conn: sa.Connection, count: int, name_prefix: str | None = None) -> list[EventRow]:
    query = sa.select(audit_events).order_by(audit_events.c.idx.desc()).limit(count)
    if name_prefix:
        query = query.where(audit_events.c.name.startswith(name_prefix))
    rows = list(conn.execute(query))
    return [EventRow(**row._mapping) for row in reversed(rows)]


def count(conn: sa.Connection) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(audit_events)).scalar_one())


def add_checkpoint(conn: sa.Connection, row: CheckpointRow) -> None:
    conn.execute(
        audit_checkpoints.insert().values(
            size=row.size, root=row.root, note=row.note, created_at=row.created_at
        )
    )


def latest_checkpoint(conn: sa.Connection) -> CheckpointRow | None:
    row = conn.execute(
        sa.select(audit_checkpoints).order_by(audit_checkpoints.c.size.desc()).limit(1)
    ).first()
    return CheckpointRow(**row._mapping) if row else None


def checkpoints(conn: sa.Connection) -> list[CheckpointRow]:
    rows = conn.execute(sa.select(audit_checkpoints).order_by(audit_checkpoints.c.size))
    return [CheckpointRow(**row._mapping) for row in rows]


@dataclass(frozen=True, slots=True)
class EventQuery:
    """A search of the log, newest first (the console's Audit page).

    ``principal`` matches an event's ``principal`` field, its ``actor`` ``principal:<name>``, or
    the ``target`` of an admin action on that principal; ``model`` the ``model`` field; ``name``
    the event name exactly, or every name starting with it when it ends with ``*``. ``since`` <=
    time < ``until``. ``before`` is a leaf index (exclusive): the next page starts below the
    last index shown. The fields are matched in the canonical body (sorted keys, compact JSON),
    where ``"key":"value"`` can only be that field: a quote inside a string is always escaped.
    """

    principal: str | None = None
    model: str | None = None
    name: str | None = None
    since: float | None = None
    until: float | None = None
    before: int | None = None
    limit: int = 50


def _field(key: str, value: str) -> str:
    return f'"{key}":' + orjson.dumps(value).decode()


def search(conn: sa.Connection, query: EventQuery) -> list[EventRow]:
    """At most ``query.limit`` events matching ``query``, newest (highest index) first."""
    body = audit_events.c.body
    select = sa.select(audit_events).order_by(audit_events.c.idx.desc()).limit(query.limit)
    if query.principal is not None:
        select = select.where(
            sa.or_(
                body.contains(_field("principal", query.principal), autoescape=True),
                body.contains(_field("actor", "principal:" + query.principal), autoescape=True),
                sa.and_(
                    body.contains(_field("target", query.principal), autoescape=True),
                    body.contains(_field("target_type", "principal"), autoescape=True),
                ),
            )
        )
    if query.model is not None:
        select = select.where(body.contains(_field("model", query.model), autoescape=True))
    if query.name is not None:
        if query.name.endswith("*"):
            select = select.where(audit_events.c.name.startswith(query.name[:-1], autoescape=True))
        else:
            select = select.where(audit_events.c.name == query.name)
    if query.since is not None:
        select = select.where(audit_events.c.time >= query.since)
    if query.until is not None:
        select = select.where(audit_events.c.time < query.until)
    if query.before is not None:
        select = select.where(audit_events.c.idx < query.before)
    return [EventRow(**row._mapping) for row in conn.execute(select)]
