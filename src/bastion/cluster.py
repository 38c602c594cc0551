"""What ``bastion cluster status`` reports: the processes sharing this database, and how fresh.

Every gateway and worker heartbeats into the ``processes`` table (``sync.py``) every couple of
seconds with the state epoch it enforces, and deletes its row on a clean shutdown. A process
killed outright leaves its row behind: it shows as *stale* once it has been silent for longer
than ``STALE_AFTER``, and drops out of the report after ``FORGET_AFTER``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bastion.store import Store, state

STALE_AFTER = 10.0  # seconds without a heartbeat before a process is reported stale
FORGET_AFTER = 3600.0  # rows silent for longer are left out (a process killed long ago)


@dataclass(frozen=True, slots=True)
class ProcessStatus:
    """One process as the report shows it; ``row`` holds every column the heartbeat writes."""

    row: dict[str, Any]
    age: float  # seconds since the last heartbeat
    stale: bool
    behind: int  # epochs this process is behind the current one (0: enforcing the latest)

    @property
    def lock_view_age(self) -> float | None:
        """How old the process's lock view was at its last heartbeat: seconds since it had last
        proved it current (it re-proves at every epoch poll); None if it never had."""
        at = self.row.get("lock_view_at")
        return None if at is None else max(0.0, self.row["heartbeat_at"] - at)

    def as_json(self) -> dict[str, Any]:
        age = self.lock_view_age
        return {
            **self.row,
            "heartbeat_age": round(self.age, 3),
            "lock_view_age": None if age is None else round(age, 3),
            "stale": self.stale,
            "epochs_behind": self.behind,
        }


@dataclass(frozen=True, slots=True)
class ClusterStatus:
    epoch: int
    processes: tuple[ProcessStatus, ...]

    def as_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "processes": [p.as_json() for p in self.processes]}


def cluster_status(store: Store, now: float, stale_after: float = STALE_AFTER) -> ClusterStatus:
    """The current epoch and every process heard from in the last ``FORGET_AFTER`` seconds,
    workers first, then gateways, oldest first."""
    with store.read() as conn:
        current = state.epoch(conn)
        rows = state.live_processes(conn, since=now - FORGET_AFTER)
    processes = [
        ProcessStatus(
            row=asdict(row),
            age=max(0.0, now - row.heartbeat_at),
            stale=now - row.heartbeat_at > stale_after,
            behind=max(0, current - row.epoch),
        )
        for row in rows
    ]
    processes.sort(key=lambda p: (p.row["kind"] != "worker", p.row["started_at"], p.row["id"]))
    return ClusterStatus(epoch=current, processes=tuple(processes))
