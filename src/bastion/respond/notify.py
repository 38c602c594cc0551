"""Webhook notifications: signed JSON (or Slack-compatible) messages, never on the caller's time.

:meth:`Notifier.notify` only appends to a bounded in-memory queue (thread-safe, O(1); when the
queue is full the notification is dropped and counted) and returns. A background task
(:meth:`Notifier.run`) delivers each one with ``httpx.AsyncClient`` (5 s timeout), a few at a
time so one hanging receiver cannot hold up the others, retrying failures with exponential
backoff and jitter; after the last attempt the notification is stored as a dead letter
(``store/deliveries.py``) and logged by webhook name and delivery id.

Every body is signed: ``X-Bastion-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`` with the webhook's secret (read from the environment variable the config
names). Receivers check the MAC over the raw body and refuse stale timestamps
(:func:`verify` is the reference; docs/response.md has a standalone snippet). Webhook URLs and
secrets are never logged, stored or put in an error: errors are recorded as ``HTTP 500`` or an
exception's class name.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import orjson

from bastion.background import finish_on_cancel, wait_set
from bastion.config.response import Webhook
from bastion.detect.findings import Finding, Severity
from bastion.errors import ConfigError
from bastion.store import Store
from bastion.store import deliveries as delivery_rows
from bastion.tls import client_context

log = logging.getLogger("bastion.respond.notify")
SIGNATURE_HEADER = "X-Bastion-Signature"
DELIVERY_HEADER = "X-Bastion-Delivery"
TOLERANCE = 300  # seconds a receiver should accept between t and its own clock


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(
    secret: bytes, body: bytes, header: str, now: float, tolerance: float = TOLERANCE
) -> bool:
    """What a receiver does: the MAC matches the raw body and ``t`` is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def backoff(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Delay after failed attempt ``attempt`` (1-based): ``base * 2**(attempt-1)`` capped at
    ``cap``, with "equal jitter" (between half and all of it) so receivers are not stampeded."""
    delay = min(cap, base * 2.0 ** (attempt - 1))
    return delay / 2 + rand() * delay / 2


def finding_payload(finding: Finding) -> dict[str, Any]:
    """What a receiver learns about a finding: no evidence bodies, no request content."""
    return {
        "id": finding.id,
        "detection": finding.detection,
        "severity": str(finding.severity),
        "confidence": finding.confidence,
        "techniques": list(finding.techniques),
        "entity_type": finding.entity_type,
        "entity": finding.entity,
        "principal": finding.principal,
        "org": finding.org,
        "explanation": finding.explanation,
        "first_seen": finding.first_seen,
        "status": finding.status,
    }


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(kind: str, payload: Mapping[str, Any]) -> str:
    """One line a human reads in a Slack channel."""
    if kind == "finding":
        line = (
            f"[{str(payload.get('severity', '')).upper()}] Bastion finding "
            f"{payload.get('detection', '')} on {payload.get('entity_type', '')} "
            f"{payload.get('entity', '')}: {payload.get('explanation', '')}"
        )
    elif kind == "response":
        done = ", ".join(
            f"{a.get('action')} {a.get('target')} ({a.get('status')})"
            for a in payload.get("actions", ())
            if isinstance(a, Mapping)
        )
        line = (
            f"[{str(payload.get('severity', '')).upper()}] Bastion response to "
            f"{payload.get('detection', '')} on {payload.get('entity_type', '')} "
            f"{payload.get('entity', '')}: {done or 'no action'}"
            + (f"; incident {payload['incident']}" if payload.get("incident") else "")
        )
    else:
        line = f"Bastion {kind}: {orjson.dumps(payload).decode()}"
    return _slack_escape(line)


@dataclass(frozen=True, slots=True)
class Target:
    """A configured webhook with its secret resolved from the environment."""

    name: str
    url: str
    secret: bytes
    format: str
    min_rank: int
    events: frozenset[str]

    def __repr__(self) -> str:  # the URL and secret stay out of reprs and tracebacks
        return f"Target(name={self.name!r})"

    def wants(self, kind: str, payload: Mapping[str, Any]) -> bool:
        if kind not in self.events:
            return False
        severity = payload.get("severity")
        if severity is None:
            return True
        try:
            return Severity(severity).rank >= self.min_rank
        except ValueError:
            return True  # an unknown severity is not a reason to stay silent


def targets(webhooks: Sequence[Webhook], env: Mapping[str, str], source: str) -> list[Target]:
    """Resolve secrets; a webhook whose secret is not set stops startup (fail closed)."""
    problems = [
        f"response.webhooks[{n}].secret_env: {hook.secret_env} is not set (or empty) in "
        f"Bastion's environment"
        for n, hook in enumerate(webhooks)
        if not env.get(hook.secret_env)
    ]
    if problems:
        raise ConfigError(source, problems)
    return [
        Target(
            name=hook.name,
            url=hook.url,
            secret=env[hook.secret_env].encode(),
            format=hook.format,
            min_rank=Severity(hook.min_severity).rank,
            events=frozenset(hook.events),
        )
        for hook in webhooks
    ]


@dataclass(frozen=True, slots=True)
class _Job:
    target: Target
    id: str
    kind: str
    payload: dict[str, Any]
    created_at: float


def body_of(job: _Job) -> bytes:
    """The exact bytes sent (and signed) for a job."""
    if job.target.format == "slack":
        return orjson.dumps({"text": slack_text(job.kind, job.payload)})
    message = {"id": job.id, "kind": job.kind, "created_at": job.created_at, "data": job.payload}
    return orjson.dumps(message)


class Notifier:
    """Queue notifications from any thread; deliver them from one background task."""

    def __init__(
        self,
        targets: Sequence[Target],
        store: Store | None,
        *,
        queue_size: int = 1000,
        attempts: int = 5,
        base_delay: float = 4.0,
        max_delay: float = 32.0,
        timeout: float = 5.0,
        concurrency: int = 8,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.targets = tuple(targets)
        self._store = store
        self._queue: deque[_Job] = deque()
        self._queue_size = queue_size
        self._mutex = threading.Lock()
        self._attempts = max(attempts, 1)
        self._base, self._cap = base_delay, max_delay
        self._timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._transport = transport
        self._clock, self._rand = clock, rand
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._inflight: dict[asyncio.Task[None], _Job] = {}
        self._settled: set[str] = set()  # jobs that reached their dead letter themselves
        self._tries: dict[str, int] = {}  # attempts made so far, per job in flight
        self._client: httpx.AsyncClient | None = None
        self._counts = dict.fromkeys(
            ("queued", "dropped", "delivered", "failed_attempts", "dead", "dead_letter_errors"), 0
        )

    # -- the caller's side (any thread, never blocks on I/O) -------------------------------------

    def notify(self, kind: str, payload: Mapping[str, Any]) -> None:
        """Queue ``payload`` for every webhook that wants ``kind`` at its severity."""
        wanted = [target for target in self.targets if target.wants(kind, payload)]
        if not wanted:
            return
        now = self._clock()
        with self._mutex:
            for target in wanted:
                if len(self._queue) >= self._queue_size:
                    self._counts["dropped"] += 1
                    continue
                job_id = "dl_" + secrets.token_hex(8)
                self._queue.append(_Job(target, job_id, kind, dict(payload), now))
                self._counts["queued"] += 1
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us: the job waits
                loop.call_soon_threadsafe(wake.set)

    def stats(self) -> dict[str, int]:
        with self._mutex:
            return {**self._counts, "pending": len(self._queue), "in_flight": len(self._inflight)}

    # -- the background task ---------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver queued notifications until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._wake = wake = asyncio.Event()
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=self._timeout,
                follow_redirects=False,
                verify=client_context(),
            )
        client = self._client
        while True:
            wake.clear()  # before looking, so a notify() in between is never missed
            job = self._next()
            if job is None:
                await wait_set(wake, 1.0)
                continue
            await self._slots.acquire()
            task = asyncio.create_task(self._deliver(client, job))
            self._inflight[task] = job
            task.add_done_callback(self._done)

    async def stop(self, grace: float = 5.0) -> None:
        """Shutdown: give deliveries in flight ``grace`` seconds, then dead-letter what is left
        (in flight or still queued) so nothing is lost silently."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=grace)
        running = dict(self._inflight)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(set(running))
        left = [job for job in running.values() if job.id not in self._settled]
        with self._mutex:
            left.extend(self._queue)
            self._queue.clear()
        for job in left:
            await self._dead(job, self._tries.pop(job.id, 0), "not delivered before shutdown")
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _next(self) -> _Job | None:
        with self._mutex:
            return self._queue.popleft() if self._queue else None

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._slots.release()

    async def _deliver(self, client: httpx.AsyncClient, job: _Job) -> None:
        error = ""
        for attempt in range(1, self._attempts + 1):
            self._tries[job.id] = attempt
            error = await self._attempt(client, job)
            if not error:
                self._tries.pop(job.id, None)
                self._count("delivered")
                return
            self._count("failed_attempts")
            if attempt < self._attempts:
                await asyncio.sleep(backoff(attempt, self._base, self._cap, self._rand))
        log.warning(
            "webhook %s: delivery %s failed after %d attempts (%s); stored as a dead letter",
            job.target.name,
            job.id,
            self._attempts,
            error,
        )
        self._settled.add(job.id)
        self._tries.pop(job.id, None)
        await self._dead(job, self._attempts, error)
        self._settled.discard(job.id)  # kept only if shutdown cancelled us while storing it

    async def _attempt(self, client: httpx.AsyncClient, job: _Job) -> str:
        """One POST; "" on a 2xx answer, else a short error that names no URL or secret."""
        body = body_of(job)
        headers = {
            "content-type": "application/json",
            "user-agent": "bastion-webhook/1",
            SIGNATURE_HEADER: sign(job.target.secret, body, int(self._clock())),
            DELIVERY_HEADER: job.id,
        }
        try:
            response = await client.post(job.target.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if 200 <= response.status_code < 300:
            return ""
        return f"HTTP {response.status_code}"

    async def _dead(self, job: _Job, attempts: int, error: str) -> None:
        self._count("dead")
        if self._store is None:
            return
        now = self._clock()
        letter = delivery_rows.Delivery(
            id=job.id,
            webhook=job.target.name,
            kind=job.kind,
            payload=job.payload,
            attempts=attempts,
            last_error=error,
            created_at=job.created_at,
            delivered_at=None,
            dead_at=now,
        )
        try:
            await finish_on_cancel(anyio.to_thread.run_sync(self._store_letter, letter))
        except Exception:  # the store is down: the loss is at least counted and logged
            self._count("dead_letter_errors")
            log.warning("webhook %s: could not store dead letter %s", job.target.name, job.id)

    def _store_letter(self, letter: delivery_rows.Delivery) -> None:
        assert self._store is not None
        with self._store.begin() as conn:
            delivery_rows.add(conn, letter)

    def _count(self, name: str) -> None:
        with self._mutex:
            self._counts[name] += 1
