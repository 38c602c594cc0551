"""The state epoch (bumped with every change the gateways must see) and live-process heartbeats."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import sqlalchemy as sa

from bastion.store.tables import processes, state


def epoch(conn: sa.Connection) -> int:
    value = conn.execute(sa.select(state.c.value).where(state.c.key == "epoch")).scalar_one()
    return int(value)


# ``Connection.info`` key under which a transaction remembers the epoch it bumped to, so
# ``Store.begin`` can announce it once the commit made it visible (never before).
BUMPED = "bastion.bumped_epoch"


def bump_epoch(conn: sa.Connection) -> int:
    """Advance the epoch inside the caller's transaction and return the new value."""
    conn.execute(state.update().where(state.c.key == "epoch").values(value=state.c.value + 1))
    value = epoch(conn)
    conn.info[BUMPED] = value
    return value


@dataclass(frozen=True, slots=True)
class ProcessRow:
    id: str
    kind: str
    pid: int
    host: str
    started_at: float
    heartbeat_at: float
    epoch: int
    lock_view_at: float | None = None  # wall-clock time the lock view was last proved current


def heartbeat(conn: sa.Connection, row: ProcessRow) -> None:
    updated = conn.execute(
        processes.update()
        .where(processes.c.id == row.id)
        .values(heartbeat_at=row.heartbeat_at, epoch=row.epoch, lock_view_at=row.lock_view_at)
    )
    if updated.rowcount == 0:
        conn.execute(processes.insert().values(**asdict(row)))


def remove_process(conn: sa.Connection, process_id: str) -> None:
    conn.execute(processes.delete().where(processes.c.id == process_id))


def live_processes(conn: sa.Connection, since: float) -> list[ProcessRow]:
    rows = conn.execute(sa.select(processes).where(processes.c.heartbeat_at >= since))
    return [ProcessRow(**row._mapping) for row in rows]
