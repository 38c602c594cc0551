"""Keeping the hot path's snapshot in step with the config and the store.

``StateSync.reload`` reads the config file and the store (on a worker thread) and swaps in a new
snapshot; a failed build keeps the last good one and reports why. ``run`` polls the state epoch
(a one-row read) a few times a second and reloads when it moved, so a lock made by the CLI or by
another process takes effect within one poll; changes made in this process call ``reload``
directly and take effect before the response that made them. The process also records its
applied epoch as a heartbeat, which ``bastion lock`` waits on to confirm enforcement.

In cluster mode a Redis subscriber (``store/fanout.py``) nudges the poll the moment another
process commits a change; the poll stays, as the fallback. Each successful epoch read that matches
the snapshot (or a rebuild) proves the lock view current: ``freshness`` is the seconds since, and
strict compartments refuse calls when it is over their bound (``policy/lockview.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import anyio

from bastion.background import finish_on_cancel, wait_set
from bastion.config import BastionConfig, load_config
from bastion.detect.signals import NO_SIGNALS, Signals, SignalsLoader
from bastion.errors import BastionError
from bastion.logs import Outage
from bastion.policy.holder import SnapshotHolder
from bastion.policy.snapshot import Snapshot, build_snapshot
from bastion.store import Store, state
from bastion.store import access as access_rows
from bastion.store import keys as key_rows
from bastion.store import locks as lock_rows
from bastion.store import principals as principal_rows
from bastion.store import reviews as review_rows
from bastion.store.fanout import EpochSubscriber
from bastion.store.principals import PrincipalRow

log = logging.getLogger("bastion.sync")


def sync_config_principals(store: Store, config: BastionConfig, now: float) -> None:
    """Make the principals declared in the config exist in the store, as declared."""
    with store.begin() as conn:
        changed = False
        for name, declared in config.principals.items():
            row = principal_rows.get(conn, name)
            if row is None:
                principal_rows.insert(
                    conn,
                    PrincipalRow(
                        name, str(declared.kind), declared.org, "config", declared.disabled, now
                    ),
                )
                changed = True
            elif (row.kind, row.org, row.disabled) != (
                str(declared.kind),
                declared.org,
                declared.disabled,
            ):
                principal_rows.update(
                    conn,
                    name,
                    kind=str(declared.kind),
                    org=declared.org,
                    disabled=declared.disabled,
                )
                changed = True
        if changed:
            state.bump_epoch(conn)


def read_snapshot(
    store: Store, config: BastionConfig, env: Mapping[str, str], signals: Signals = NO_SIGNALS
) -> Snapshot:
    """Build a snapshot from a loaded config and the store's contents (blocking I/O)."""
    now = time.time()
    with store.read() as conn:
        epoch = state.epoch(conn)
        principals = principal_rows.list_all(conn)
        device_keys = key_rows.active(conn)
        locks = lock_rows.active(conn, now)
        grants = access_rows.active_grants(conn, now)
        reviews = review_rows.open_reviews(conn)
    return build_snapshot(
        epoch=epoch,
        config=config,
        principals=principals,
        device_keys=device_keys,
        locks=locks,
        env=env,
        grants=grants,
        reviews=reviews,
        signals=signals,
    )


class StateSync:
    def __init__(
        self,
        store: Store,
        holder: SnapshotHolder,
        config_file: Path,
        *,
        env: Mapping[str, str] | None = None,
        poll_interval: float = 0.25,
        kind: str = "gateway",
        signals: SignalsLoader | None = None,
        fanout: EpochSubscriber | None = None,
    ) -> None:
        self._store = store
        self._fanout = fanout  # cluster mode: Redis tells us when to look, the poll stays
        self._holder = holder
        self._config_file = config_file
        self._env = dict(os.environ) if env is None else dict(env)
        self._poll = poll_interval
        self._lock = asyncio.Lock()
        self._poll_outage = Outage(log, "state epoch poll")
        self._heartbeat_outage = Outage(log, "process heartbeat")
        self._nudged = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._config: BastionConfig | None = None
        self._config_error: str | None = None
        self._config_stamp: tuple[int, int] | None = None
        # Gateway-side detection signals (MMDB databases, content classifier): loaded with the
        # config, so a database that fails keeps the last good config in force.
        self._signals_loader = signals or SignalsLoader(config_file)
        self._signals = NO_SIGNALS
        self.process = state.ProcessRow(
            id=f"{kind}-{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}",
            kind=kind,
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=time.time(),
            heartbeat_at=time.time(),
            epoch=0,
        )

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = self._config_file.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def _load(self) -> Snapshot:
        """Re-read the config if the file changed; build from the last good config if it is now
        invalid, so new locks, keys and revocations still take effect (fail closed, not stale)."""
        stamp = self._stamp()
        if self._config is None or stamp != self._config_stamp:
            self._config_stamp = stamp
            try:
                config = load_config(self._config_file)
                self._signals = self._signals_loader.load(config)
                self._config = config
                self._config_error = None
                sync_config_principals(self._store, self._config, time.time())
            except BastionError as exc:
                if exc.message != self._config_error:
                    log.error("config invalid; keeping the last good one: %s", exc.message)
                self._config_error = exc.message
                if self._config is None:
                    raise
        return read_snapshot(self._store, self._config, self._env, self._signals)

    async def reload(self) -> Snapshot | None:
        """Rebuild and swap now. Returns the new snapshot, or None if the build failed."""
        async with self._lock:
            started = time.monotonic()  # the snapshot is the store as of a read after this
            try:
                snapshot = await finish_on_cancel(anyio.to_thread.run_sync(self._load))
            except BastionError as exc:
                self._holder.failed(exc.message)
                log.error("snapshot rebuild failed; keeping the last good one: %s", exc.message)
                return None
            except Exception:
                self._holder.failed("internal error while rebuilding the snapshot")
                log.exception("snapshot rebuild failed; keeping the last good one")
                return None
            self._holder.swap(snapshot)
            self._confirm(started)
            if self._config_error is not None:
                self._holder.failed(f"serving the last good config: {self._config_error}")
            await self._heartbeat(snapshot.epoch)
            return snapshot

    async def _heartbeat(self, epoch: int) -> None:
        now, age = time.time(), self.freshness(time.monotonic())
        self.process = replace(
            self.process,
            heartbeat_at=now,
            epoch=epoch,
            lock_view_at=None if age == float("inf") else now - age,
        )
        try:
            await finish_on_cancel(anyio.to_thread.run_sync(self._write_heartbeat))
        except Exception as exc:
            self._heartbeat_outage.failed(exc)
        else:
            self._heartbeat_outage.recovered()

    def _write_heartbeat(self) -> None:
        with self._store.begin() as conn:
            state.heartbeat(conn, self.process)

    def _read_epoch(self) -> int:
        with self._store.read() as conn:
            return state.epoch(conn)

    def _confirm(self, at: float) -> None:
        """The store was read at or after ``at`` (monotonic) and the snapshot matches it."""
        confirmed = self._holder.confirmed_at
        if confirmed is None or at > confirmed:
            self._holder.confirmed_at = at

    def freshness(self, now: float) -> float:
        """Seconds since this process last proved its lock view current (``now`` is
        ``time.monotonic()``); infinite before the first snapshot. Strict compartments refuse
        calls when it is over their bound."""
        return self._holder.lock_view_age(now)

    @property
    def listening(self) -> bool:
        """Cluster mode: whether the Redis subscriber is connected (else the poll carries all)."""
        return self._fanout is not None and self._fanout.connected

    def nudge(self) -> None:
        """Look at the epoch now rather than at the next poll (from any thread, never
        blocking): this process just changed state, e.g. a playbook placed a lock."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nothing left to serve
                loop.call_soon_threadsafe(self._nudged.set)

    async def run(self) -> None:
        """Poll the epoch and reload on change; heartbeat every couple of seconds. In cluster
        mode a Redis subscriber nudges the poll as soon as another process commits a change."""
        self._loop = asyncio.get_running_loop()
        listener = (
            asyncio.create_task(self._fanout.run(self.nudge)) if self._fanout is not None else None
        )
        try:
            await self._poll_forever()
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    async def _poll_forever(self) -> None:
        last_beat = time.monotonic()
        while True:
            await wait_set(self._nudged, self._poll)
            self._nudged.clear()
            started = time.monotonic()
            try:
                current = await finish_on_cancel(anyio.to_thread.run_sync(self._read_epoch))
            except Exception as exc:
                self._poll_outage.failed(exc, "serving from the last snapshot")
                continue
            self._poll_outage.recovered()
            snapshot = self._holder.current
            changed = self._stamp() != self._config_stamp
            if snapshot is None or current != snapshot.epoch or changed:
                await self.reload()
                last_beat = time.monotonic()
                continue
            self._confirm(started)
            if time.monotonic() - last_beat > 2.0:
                await self._heartbeat(snapshot.epoch)
                last_beat = time.monotonic()

    def deregister(self) -> None:
        try:
            with self._store.begin() as conn:
                state.remove_process(conn, self.process.id)
        except Exception:
            log.warning("could not deregister the process", exc_info=True)
