"""Cluster faults (issue 7), with real processes: three ``bastion serve`` gateways and one
``bastion worker`` (``bench/cluster_stack.py``) on a PostgreSQL and a Redis owned by the test
(``private_servers.py``), which it stops and starts again; the machine's shared servers are never
touched. Clients sign for the public URL and spread their calls over every gateway, as behind a
load balancer. Each test is bounded in requests and time and stops by itself.

What a deployer relies on (``docs/deploy.md``, "What fails how"):

1. Redis stopped for 10 s under load: ``internal`` compartments keep being served; the
   compartments that need Redis (``restricted``/``critical``, ``lock_view.strict``) and the token
   endpoint are refused at once with a clear 503, never left hanging; once Redis is back the
   gateways use it again and resubscribe by themselves, and a lock reaches all of them within a
   second.
2. PostgreSQL stopped for 10 s under load: no new tokens; ``audit: required`` refused;
   best-effort served; strict refused once the lock view is older than its bound; everything
   served again once it is back, and the audit log verifies.
3. A gateway killed (SIGKILL) in the middle of streams: the others keep serving; every response
   the gateways acknowledged for an ``audit: required`` model has its events in the log; the log
   verifies after the gateway is restarted.
4. The worker killed under load and restarted: findings for the traffic of its absence are
   raised, none twice.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

import httpx
import orjson
import pytest
import redis
import sqlalchemy as sa
from bench.cluster_stack import CHAT_PATH, CONFIG, PUBLIC_URL, Caller, Stack, cluster_stack

from bastion.cluster import cluster_status
from bastion.identity.assertions import ASSERTION_TYPE, make_client_assertion
from bastion.identity.dpop import DPoPSigner
from bastion.store import Store

from .private_servers import PrivatePostgres, PrivateRedis, private_servers

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

OUTAGE = 10.0  # seconds Redis or PostgreSQL is stopped
BUDGET = 2.0  # no request may take longer than this, whatever is down (Redis budget: 1 s)
HUGE_QUOTA = 1_000_000  # metered-chat: quotas are exercised, never exhausted


@dataclass(frozen=True, slots=True)
class Sample:
    """One call as the client saw it."""

    sent: float  # time.monotonic() when sent
    latency: float
    gateway: int
    principal: str
    model: str
    status: int  # 0: no response (connection refused or cut)
    code: str = ""  # the error code of the body (or of a stream's final error event), if any
    event: str = ""  # the x-bastion-event header
    complete: bool = False  # the whole body arrived (a stream: its [DONE])


def error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("code", ""))
        if isinstance(error, str):  # the OAuth endpoints' shape
            return error
    return ""


def chat(
    client: httpx.Client,
    stack: Stack,
    gateway: int,
    caller: Caller,
    model: str,
    *,
    stream: bool = False,
    chunks: int = 0,
    delay: float = 0.0,
    on_chunk: Callable[[int], None] | None = None,
) -> Sample:
    """One chat call to ``gateway``; a stream is read to its end (or until it breaks)."""
    headers = caller.headers()
    if chunks:
        headers |= {"x-example-chunks": str(chunks), "x-example-chunk-delay": str(delay)}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    started = time.monotonic()
    status, code, event, complete = 0, "", "", False
    try:
        with client.stream(
            "POST", stack.urls[gateway] + CHAT_PATH, json=body, headers=headers
        ) as response:
            status = response.status_code
            event = response.headers.get("x-bastion-event", "")
            if stream and status == 200:
                seen, failed = 0, False
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        seen += 1
                        if on_chunk is not None:
                            on_chunk(seen)
                        if failed:  # the final error event: its code
                            code = str(orjson.loads(line[6:])["error"]["code"])
                    failed = line == "event: error" or failed
                    complete = line == "data: [DONE]" or complete
            else:
                response.read()
                code = error_code(response) if status != 200 else ""
                complete = status == 200 and isinstance(response.json(), dict)
    except (httpx.TransportError, ValueError):
        pass  # no response, or a response cut short: not complete
    latency = time.monotonic() - started
    return Sample(started, latency, gateway, caller.principal, model, status, code, event, complete)


def token_status(stack: Stack, gateway: int, caller: Caller) -> tuple[int, str, float]:
    """Ask ``gateway`` for a new token: (status, error code, seconds it took)."""
    endpoint = "/oauth/token"
    started = time.monotonic()
    try:
        response = httpx.post(
            stack.urls[gateway] + endpoint,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": make_client_assertion(
                    caller.private, client_id=caller.principal, audience=PUBLIC_URL + endpoint
                ),
            },
            headers={
                "DPoP": DPoPSigner(caller.private).proof(method="POST", url=PUBLIC_URL + endpoint)
            },
            timeout=10,
        )
    except httpx.TransportError:
        return 0, "", time.monotonic() - started
    code = "" if response.status_code == 200 else error_code(response)
    return response.status_code, code, time.monotonic() - started


@dataclass
class Load:
    """Background callers: one thread per gateway, each cycling through ``models`` and
    ``callers`` until stopped (at most ``limit`` seconds and ``max_calls`` calls each)."""

    stack: Stack
    callers: Sequence[Caller]
    models: Sequence[str]
    gateways: Sequence[int]
    limit: float = 60.0
    max_calls: int = 5_000
    pause: float = 0.01
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, gateway: int) -> None:
        deadline = time.monotonic() + self.limit
        with httpx.Client(timeout=10) as client:
            for n in range(self.max_calls):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                caller = self.callers[(n + gateway) % len(self.callers)]
                model = self.models[n % len(self.models)]
                sample = chat(client, self.stack, gateway, caller, model)
                with self._lock:
                    self.samples.append(sample)
                time.sleep(self.pause)

    def __enter__(self) -> Load:
        for gateway in self.gateways:
            thread = threading.Thread(target=self._run, args=(gateway,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def between(self, start: float, end: float, model: str | None = None) -> list[Sample]:
        with self._lock:
            return [
                s
                for s in self.samples
                if start <= s.sent and s.sent + s.latency <= end and model in (None, s.model)
            ]

    def first_served_after(self, at: float, model: str, gateway: int) -> float | None:
        """Seconds from ``at`` until ``gateway`` answered 200 to a call to ``model`` sent
        after ``at``."""
        with self._lock:
            times = [
                s.sent + s.latency - at
                for s in self.samples
                if s.sent >= at and s.model == model and s.gateway == gateway and s.status == 200
            ]
        return min(times) if times else None


def eventually(check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> float:
    """Wait until ``check()``; the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true after {timeout}s: {what}")
        time.sleep(every)
    return time.monotonic() - started


def recovery(load: Load, up: float, models: Sequence[str]) -> dict[int, float]:
    """Per gateway, seconds from ``up`` until it had served every one of ``models`` again."""
    found: dict[int, float] = {}

    def served(gateway: int) -> bool:
        times = [load.first_served_after(up, model, gateway) for model in models]
        if any(t is None for t in times):
            return False
        found[gateway] = max(t for t in times if t is not None)
        return True

    for gateway in range(3):
        eventually(partial(served, gateway), 15, f"gateway {gateway} serves every model again")
    return found


def summary(samples: Sequence[Sample]) -> dict[str, int]:
    """How many calls got each status/code, e.g. {"200": 40, "503 audit_unavailable": 12}."""
    counts: dict[str, int] = {}
    for s in samples:
        key = f"{s.status} {s.code}".strip()
        counts[key] = counts.get(key, 0) + 1
    return counts


def report(name: str, **figures: object) -> None:
    """The measured behaviour, printed for ``pytest -s`` (docs/deploy.md takes it from here)."""
    print(f"\n[{name}] " + json.dumps(figures, default=str, sort_keys=True))


@dataclass
class Outage:
    """When (``time.monotonic()``) the server was down, asked to start again, and back."""

    down: float
    restarting: float = 0.0
    up: float = 0.0


@contextlib.contextmanager
def stopped(server: PrivatePostgres | PrivateRedis) -> Iterator[Outage]:
    """Stop ``server``; start it again on exit, whatever happened."""
    server.stop()
    outage = Outage(time.monotonic())
    try:
        yield outage
    finally:
        outage.restarting = time.monotonic()
        server.start()
        outage.up = time.monotonic()


def audit_rows(stack: Stack, name: str) -> list[dict[str, object]]:
    """The stored bodies of the audit events called ``name`` (read straight from the table)."""
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            bodies = conn.execute(
                sa.text("SELECT body FROM audit_events WHERE name = :name"), {"name": name}
            ).scalars()
            return [orjson.loads(body) for body in bodies]
    finally:
        engine.dispose()


def live(stack: Stack) -> int:
    """How many processes ``bastion cluster status`` shows as live (heartbeat under 10 s old)."""
    store = Store(stack.database_url)
    try:
        report = cluster_status(store, time.time())
    finally:
        store.close()
    return sum(1 for process in report.processes if not process.stale)


def verify(stack: Stack) -> str:
    """``bastion audit verify`` (raises if it fails)."""
    return stack.cli("audit", "verify")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    with private_servers() as both:
        yield both


# -- 1. Redis down -------------------------------------------------------------------------------


def test_redis_down_strict_refused_others_served_and_the_gateways_reconnect(
    servers: tuple[PrivatePostgres, PrivateRedis],
) -> None:
    postgres, private_redis = servers
    with cluster_stack(
        3, database_url=postgres.url, redis_url=private_redis.url, quota=HUGE_QUOTA
    ) as stack:
        *callers, spare, target = stack.callers_for([f"svc-{n}" for n in range(8)])
        # spare asks for tokens during the outage; target is locked after recovery
        channel = f"{stack.prefix}:epoch"
        with redis.Redis.from_url(private_redis.url) as r:
            subscribers = eventually(
                lambda: r.pubsub_numsub(channel)[0][1] >= 3, 10, "three gateways subscribed"
            )
            subscribed = int(r.pubsub_numsub(channel)[0][1])
        models = ["chat", "strict-chat", "ledger-chat", "metered-chat"]
        with Load(stack, callers, models, [0, 1, 2]) as load:
            time.sleep(2.0)
            baseline = load.between(0, time.monotonic())
            with stopped(private_redis) as outage:
                time.sleep(1.0)
                tokens = [token_status(stack, g, spare) for g in range(3)]
                time.sleep(max(0.0, OUTAGE - (time.monotonic() - outage.down)))
            down, up = outage.down, outage.up
            during = load.between(down, outage.restarting)
            recovered = recovery(load, up, models)
            with redis.Redis.from_url(private_redis.url) as r:
                eventually(
                    lambda: r.pubsub_numsub(channel)[0][1] >= subscribed,
                    15,
                    "every process subscribed to the epoch channel again",
                )
            resubscribed = time.monotonic() - up
            settled = time.monotonic()
            time.sleep(1.0)
            after = load.between(settled, time.monotonic())
        token_after = token_status(stack, 0, spare)

        # A lock placed now reaches every gateway within a second of its publication.
        reached: dict[int, float] = {}
        published: list[float] = []
        halt = threading.Event()

        def watch(gateway: int) -> None:
            with httpx.Client(timeout=10) as client:
                for _ in range(2_000):
                    if halt.is_set():
                        return
                    sample = chat(client, stack, gateway, target, "chat")
                    if sample.status == 403:
                        reached[gateway] = time.monotonic()  # enforced by then, at the latest
                        return

        def listen() -> None:
            with redis.Redis.from_url(private_redis.url) as r, r.pubsub() as pubsub:
                pubsub.subscribe(channel)
                while not halt.is_set() and not published:
                    if pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05):
                        published.append(time.monotonic())

        threads = [threading.Thread(target=watch, args=(g,), daemon=True) for g in range(3)]
        threads.append(threading.Thread(target=listen, daemon=True))
        for thread in threads:
            thread.start()
        try:
            time.sleep(0.3)
            out = stack.cli("lock", "principal", target.principal, "--reason", "fault test")
            eventually(lambda: len(reached) == 3, 5, "the lock enforced by every gateway")
        finally:
            halt.set()
            for thread in threads:
                thread.join(15)
        assert published, "the lock was published on the epoch channel"
        propagation = {g: round(at - published[0], 3) for g, at in sorted(reached.items())}

        report(
            "redis-down",
            subscribed_before=subscribed,
            subscribe_wait=round(subscribers, 2),
            during={m: summary([s for s in during if s.model == m]) for m in models},
            max_latency_during=round(max(s.latency for s in during), 3),
            tokens_during=tokens,
            recovered_after_s={g: round(t, 3) for g, t in recovered.items()},
            resubscribed_after_s=round(resubscribed, 3),
            after=summary(after),
            token_after=token_after,
            lock_cli=out.strip().splitlines(),
            lock_propagation_s=propagation,
        )
        assert summary(baseline) == {"200": len(baseline)}
        assert during, "calls were made during the outage"
        assert max(s.latency for s in during) < BUDGET
        for model in ("chat", "metered-chat"):
            served = [s for s in during if s.model == model]
            assert served, model
            assert summary(served) == {"200": len(served)}, model
            assert {s.gateway for s in served} == {0, 1, 2}
        for model in ("strict-chat", "ledger-chat"):
            refused = [s for s in during if s.model == model]
            assert refused, model
            assert summary(refused) == {"503 replay_cache_unavailable": len(refused)}, model
        assert [t[:2] for t in tokens] == [(503, "temporarily_unavailable")] * 3
        assert all(t[2] < BUDGET for t in tokens)
        assert max(recovered.values()) < 5.0
        assert summary(after) == {"200": len(after)}
        assert token_after[:2] == (200, "")
        assert sorted(propagation) == [0, 1, 2]
        assert max(propagation.values()) < 1.0, propagation
        assert "enforced by" in out


# -- 2. PostgreSQL down --------------------------------------------------------------------------


def test_postgres_down_no_tokens_audit_required_refused_best_effort_served(
    servers: tuple[PrivatePostgres, PrivateRedis],
) -> None:
    postgres, private_redis = servers
    with cluster_stack(
        3, database_url=postgres.url, redis_url=private_redis.url, services=9
    ) as stack:
        *callers, spare, first, second = stack.callers_for([f"svc-{n}" for n in range(9)])
        models = ["chat", "strict-chat", "ledger-chat"]
        cut: list[Sample] = []

        def long_stream(gateway: int, caller: Caller) -> None:
            """An audit-required stream that ends while the database is down."""
            with httpx.Client(timeout=20) as client:
                cut.append(
                    chat(
                        client,
                        stack,
                        gateway,
                        caller,
                        "ledger-chat",
                        stream=True,
                        chunks=40,
                        delay=0.1,
                    )
                )

        streams = [
            threading.Thread(target=long_stream, args=(g, c), daemon=True)
            for g, c in ((1, first), (2, second))
        ]
        with Load(stack, callers, models, [0, 1, 2]) as load:
            time.sleep(1.0)
            for thread in streams:
                thread.start()
            time.sleep(1.0)
            baseline = load.between(0, time.monotonic())
            with stopped(postgres) as outage:
                time.sleep(1.0)
                tokens = [token_status(stack, g, spare) for g in range(3)]
                time.sleep(max(0.0, OUTAGE - (time.monotonic() - outage.down)))
            down, up = outage.down, outage.up
            during = load.between(down, outage.restarting)
            recovered = recovery(load, up, models)
            settled = time.monotonic()
            time.sleep(1.0)
            after = load.between(settled, time.monotonic())
        for thread in streams:
            thread.join(20)
        token_after = [token_status(stack, g, spare) for g in range(3)]
        authorized = {str(e["principal"]) for e in audit_rows(stack, "request.authorized")}
        heartbeats = eventually(lambda: live(stack) == 4, 15, "every process heartbeating again")
        verified = verify(stack)

        strict = [s for s in during if s.model == "strict-chat"]
        last_strict_served = max(
            (s.sent + s.latency - down for s in strict if s.status == 200), default=0.0
        )
        first_stale = min(
            (s.sent - down for s in strict if s.code == "lock_view_stale"), default=None
        )
        report(
            "postgres-down",
            during={m: summary([s for s in during if s.model == m]) for m in models},
            max_latency_during=round(max(s.latency for s in during), 3),
            strict_served_until_s=round(last_strict_served, 3),
            strict_refused_from_s=first_stale and round(first_stale, 3),
            tokens_during=tokens,
            recovered_after_s={g: round(t, 3) for g, t in recovered.items()},
            after=summary(after),
            tokens_after=token_after,
            streams_ending_during=[(s.status, s.complete, s.code) for s in cut],
            streams_ended_at_s=[round(s.sent + s.latency - down, 2) for s in cut],
            heartbeats_again_s=round(heartbeats, 2),
            verify=verified.strip().splitlines()[-1:],
        )
        assert summary(baseline) == {"200": len(baseline)}
        assert max(s.latency for s in during) < BUDGET
        served = [s for s in during if s.model == "chat"]
        assert served
        assert summary(served) == {"200": len(served)}
        assert {s.gateway for s in served} == {0, 1, 2}
        ledger = [s for s in during if s.model == "ledger-chat"]
        assert ledger
        assert summary(ledger) == {"503 audit_unavailable": len(ledger)}
        # strict: served while the last proof of the lock view is under 2 s old, then refused
        late = [s for s in strict if s.sent > down + 3.0]
        assert late
        assert summary(late) == {"503 lock_view_stale": len(late)}
        assert last_strict_served < 3.0
        assert [t[:2] for t in tokens] == [(503, "temporarily_unavailable")] * 3
        assert all(t[2] < BUDGET for t in tokens)
        assert max(recovered.values()) < 5.0
        assert summary(after) == {"200": len(after)}
        assert [t[:2] for t in token_after] == [(200, "")] * 3
        # Streams under way when the database went: no clean end (the log could not record
        # them), a final error event instead; their start was recorded before they began.
        assert (
            sorted((s.status, s.complete, s.code) for s in cut)
            == [(200, False, "audit_unavailable")] * 2
        )
        assert all(down < s.sent + s.latency < outage.restarting for s in cut)
        assert {first.principal, second.principal} <= authorized


# -- 3. a gateway killed mid-stream --------------------------------------------------------------


def test_gateway_killed_mid_stream_loses_no_acknowledged_audit_event(
    servers: tuple[PrivatePostgres, PrivateRedis],
) -> None:
    postgres, private_redis = servers
    with cluster_stack(
        3, database_url=postgres.url, redis_url=private_redis.url, services=12
    ) as stack:
        callers = dict(enumerate(stack.callers_for([f"svc-{n}" for n in range(12)])))
        doomed = [callers[n] for n in range(6)]  # one long stream each, on gateway 0
        survivors = {1: callers[6], 2: callers[7]}  # streams on the gateways that stay
        streams: list[Sample] = []
        progress: dict[str, int] = {}
        lock = threading.Lock()

        def stream(gateway: int, caller: Caller, chunks: int) -> None:
            def seen(n: int) -> None:
                progress[caller.principal] = n

            with httpx.Client(timeout=20) as client:
                sample = chat(
                    client, stack, gateway, caller, "ledger-chat",
                    stream=True, chunks=chunks, delay=0.1, on_chunk=seen,
                )  # fmt: skip
            with lock:
                streams.append(sample)

        threads = [
            threading.Thread(target=stream, args=(0, caller, 60), daemon=True) for caller in doomed
        ] + [
            threading.Thread(target=stream, args=(g, caller, 30), daemon=True)
            for g, caller in survivors.items()
        ]
        load_callers = [callers[n] for n in range(8, 12)]
        with Load(stack, load_callers, ["ledger-chat", "chat"], [0, 1, 2]) as load:
            for thread in threads:
                thread.start()
            eventually(
                lambda: all(progress.get(c.principal, 0) >= 5 for c in doomed),
                15,
                "every stream on gateway 0 under way",
            )
            killed = time.monotonic()
            stack.kill_gateway(0)
            for thread in threads:
                thread.join(20)
            time.sleep(1.0)
            since_kill = load.between(killed, time.monotonic())
            after_kill = [s for s in since_kill if s.gateway != 0]
            dead = [s for s in since_kill if s.gateway == 0]
        restart_started = time.monotonic()
        stack.start_gateway(0)
        restarted_in = time.monotonic() - restart_started
        with httpx.Client(timeout=10) as client:
            back = chat(client, stack, 0, callers[8], "ledger-chat")
        verified = verify(stack)

        decided = {str(e["id"]): e for e in audit_rows(stack, "request.decided")}
        authorized = [
            (str(e["principal"]), e["time"]) for e in audit_rows(stack, "request.authorized")
        ]
        # Acknowledged: the gateway answered 200 with the event id (its request.authorized event
        # was durable before anything went upstream); complete: the whole body arrived (its
        # request.decided event was durable before the last bytes were sent).
        acknowledged = [
            s
            for s in [*streams, *load.samples]
            if s.model == "ledger-chat" and s.status == 200 and s.event
        ]
        complete = [s for s in acknowledged if s.complete]
        per_principal: dict[str, int] = {}
        for s in acknowledged:
            per_principal[s.principal] = per_principal.get(s.principal, 0) + 1
        principals = {*per_principal, *(c.principal for c in doomed)}
        recorded = {p: sum(1 for a, _ in authorized if a == p) for p in principals}
        cut = [s for s in streams if s.gateway == 0]
        report(
            "gateway-killed",
            streams_cut=[(s.status, s.complete, bool(s.event)) for s in cut],
            survivor_streams=[(s.gateway, s.status, s.complete) for s in streams if s.gateway],
            other_gateways_after_kill=summary(after_kill),
            killed_gateway_after_kill=summary(dead),
            acknowledged_ledger_responses=len(acknowledged),
            complete_ledger_responses=len(complete),
            authorized_events_of_cut_streams={c.principal: recorded[c.principal] for c in doomed},
            restart_s=round(restarted_in, 2),
            after_restart=(back.status, back.code),
            verify=verified.strip().splitlines()[-1:],
        )
        # Calls to the killed gateway fail fast (connection refused); the others go on serving,
        # streams included.
        assert dead
        assert summary(dead) == {"0": len(dead)}
        assert after_kill
        assert summary(after_kill) == {"200": len(after_kill)}
        assert sorted((s.gateway, s.status, s.complete) for s in streams if s.gateway) == [
            (1, 200, True),
            (2, 200, True),
        ]
        # The streams on gateway 0 were cut, after it had acknowledged them (200, event id).
        assert len(cut) == 6
        assert all(s.status == 200 and s.event and not s.complete for s in cut)
        # Every acknowledged response has its request.authorized event (one call per principal
        # for the cut streams: exactly one each),
        assert {c.principal: recorded[c.principal] for c in doomed} == {
            c.principal: 1 for c in doomed
        }
        assert all(recorded[p] >= n for p, n in per_principal.items()), (per_principal, recorded)
        # and every complete one its request.decided event too, with the same time.
        assert complete
        assert [s.event for s in complete if s.event not in decided] == []
        assert all(decided[s.event]["outcome"] == "completed" for s in complete)
        pairs = set(authorized)
        assert all((s.principal, decided[s.event]["time"]) in pairs for s in complete)
        assert back.status == 200


# -- 4. the worker killed -----------------------------------------------------------------------

VAULT_MODELS = "".join(
    f"  - {{{{name: vault-{n}, upstream: stand-in, upstream_model: example-gpt, "
    "compartment: vault}}\n"
    for n in range(3)
)
VAULT_CONFIG = CONFIG.replace("models:\n", "models:\n" + VAULT_MODELS, 1).replace(
    "compartments:\n",
    "compartments:\n  vault:\n    level: internal\n    grants: {{principals: [ops]}}\n",
    1,
)


def test_worker_killed_and_restarted_resumes_without_raising_twice(
    servers: tuple[PrivatePostgres, PrivateRedis],
) -> None:
    postgres, private_redis = servers
    with cluster_stack(
        3, database_url=postgres.url, redis_url=private_redis.url, config=VAULT_CONFIG
    ) as stack:
        callers = stack.callers_for([f"svc-{n}" for n in range(6)])
        engine = sa.create_engine(stack.database_url)

        def d5() -> dict[str, int]:
            """Principal -> how many D5 findings it has."""
            with engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT principal FROM findings WHERE detection = 'D5'")
                ).scalars()
                found: dict[str, int] = {}
                for principal in rows:
                    found[principal] = found.get(principal, 0) + 1
                return found

        def raised() -> int:
            with engine.connect() as conn:
                query = "SELECT body FROM audit_events WHERE name = 'finding.raised'"
                bodies = [orjson.loads(b) for b in conn.execute(sa.text(query)).scalars()]
            return sum(1 for b in bodies if b.get("detection") == "D5")

        def probe(caller: Caller) -> list[int]:
            """Three models outside the caller's grants, on three gateways: enumeration."""
            with httpx.Client(timeout=10) as client:
                return [chat(client, stack, n, caller, f"vault-{n}").status for n in range(3)]

        try:
            with Load(stack, callers[2:], ["chat"], [0, 1, 2], pause=0.02) as load:
                assert probe(callers[0]) == [403, 403, 403]
                first = eventually(lambda: d5() == {"svc-0": 1}, 15, "D5 for svc-0")
                stack.kill_worker()
                killed = time.monotonic()
                # While it is away: a new prober, and the first one again.
                assert probe(callers[1]) == [403, 403, 403]
                assert probe(callers[0]) == [403, 403, 403]
                time.sleep(1.5)  # gateways do not detect: nothing new without the worker
                assert d5() == {"svc-0": 1}
                absent = time.monotonic() - killed
                restarted = time.monotonic()
                stack.start_worker()
                caught_up = eventually(
                    lambda: d5() == {"svc-0": 1, "svc-1": 1}, 20, "D5 for svc-1 after restart"
                )
                caught_up_from_restart = time.monotonic() - restarted
                served = summary(load.samples)
            # A last prober: once its finding is there, the worker has read the log to its end.
            assert probe(callers[5]) == [403, 403, 403]
            eventually(lambda: "svc-5" in d5(), 15, "D5 for the last prober")
            with engine.connect() as conn:
                query = "SELECT max(idx) FROM audit_events WHERE name = 'request.decided'"
                last_request = conn.execute(sa.text(query)).scalar_one()
            findings, raised_events = d5(), raised()
            assert stack.worker is not None
            stack.worker.stop()  # a clean stop saves the engine's position
            with engine.connect() as conn:
                saved = conn.execute(sa.text("SELECT data FROM detector_state")).scalars().all()
            positions = [int(json.loads(data).get("position", -1)) for data in saved]
        finally:
            engine.dispose()
        report(
            "worker-killed",
            first_finding_s=round(first, 3),
            worker_absent_s=round(absent, 2),
            finding_after_restart_s=round(caught_up_from_restart, 3),
            wait_after_start=round(caught_up, 3),
            findings=findings,
            finding_raised_events=raised_events,
            load=served,
            saved_positions=positions,
            last_request_index=last_request,
        )
        assert served == {"200": sum(served.values())}
        assert findings == {"svc-0": 1, "svc-1": 1, "svc-5": 1}
        assert raised_events == 3
        assert positions
        assert max(positions) >= last_request
