"""The atomically swapped reference to the current snapshot, with swap listeners."""

from __future__ import annotations

from collections.abc import Callable

from bastion.errors import Unavailable

from .snapshot import Snapshot

Listener = Callable[[Snapshot], None]


class SnapshotHolder:
    """Holds the current snapshot. Readers take ``current`` once per request; a swap replaces the
    reference in one assignment, so a request never sees half of two snapshots. ``None`` means no
    snapshot was ever built: the gateway denies everything."""

    def __init__(self) -> None:
        self.current: Snapshot | None = None
        self.last_error: str | None = None
        # ``time.monotonic()`` when the process last proved its lock view current (an epoch read
        # from the store matched the snapshot); ``StateSync`` sets it, strict compartments read it.
        self.confirmed_at: float | None = None
        self._listeners: list[Listener] = []

    def require(self) -> Snapshot:
        """The current snapshot, for the control plane; ``Unavailable`` (503) before the first."""
        snapshot = self.current
        if snapshot is None:
            raise Unavailable("no policy snapshot yet")
        return snapshot

    def lock_view_age(self, now: float) -> float:
        """Seconds (monotonic ``now``) since the lock view was last proved current; infinite
        before the first proof. No I/O: the gateway calls it on the hot path."""
        confirmed = self.confirmed_at
        return float("inf") if confirmed is None else max(0.0, now - confirmed)

    def on_swap(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def swap(self, snapshot: Snapshot) -> None:
        self.current = snapshot
        self.last_error = None
        for listener in self._listeners:
            listener(snapshot)

    def failed(self, error: str) -> None:
        """A rebuild failed: keep the last good snapshot and remember why."""
        self.last_error = error
