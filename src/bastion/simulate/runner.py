"""Drive the simulated traffic through a real Bastion, in-process, on a simulated clock.

The runner writes the world's ``bastion.yaml`` and IP databases to a work directory, starts
Bastion there with :func:`bastion.testing.running` (real store, Cedar, token service, gateway,
detection engine) behind the stand-in upstream, with loopback as a trusted proxy so each
caller's address travels in ``X-Forwarded-For``, and a clock that only the runner moves: the
server and every client read it, so a week passes in about a minute.

Setup happens three days before the start (the admin enrolls everyone's device key; one lab
member is added through the admin service rather than the file). Then every planned call runs
in time order, each client session authenticating like a real one (DPoP, ``private_key_jwt``
logins, refresh as tokens expire) with its own user agent and source address. Before the clock
moves on by more than ``SETTLE_GAP``, the audit recorder is flushed and detection catches up:
in production the engine works within milliseconds while calls are seconds apart, so every
event reaches the log in the order it happened and every finding (and the risk score it
raises) is in place before the next call — deterministically, whatever the machine's speed.
Time to detect is measured in event time either way.
"""

from __future__ import annotations

import contextlib
import random
import secrets
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import sqlalchemy as sa

from bastion.client.auth import DPoPAuth
from bastion.client.profile import Profile
from bastion.config.models import BastionConfig
from bastion.detect.detectors import default_detectors
from bastion.detect.findings import Finding
from bastion.errors import BadRequest, BastionError
from bastion.identity.keys import generate_private_jwk, public_jwk
from bastion.store import events as event_rows
from bastion.testing import BASE_URL, Harness, running

from .files import UPSTREAM_KEY_ENV, config_text, write_databases
from .plan import DAY, START, Call
from .population import Planner
from .scenarios import CATALOGUE, build_scenarios, contract_ends
from .story import Scenario
from .upstream import StandInUpstream
from .world import ADMIN, API_OF, HONEYTOKEN, World, build_world

SETUP = -3 * DAY  # when the admin enrolls everyone, relative to the start
SETTLE_GAP = 0.5  # before the clock moves further than this, let detection catch up
MAX_DAYS = 28


@dataclass(frozen=True, slots=True)
class Options:
    seed: int = 1
    days: int = 7
    database_url: str = ""
    scenarios: tuple[str, ...] = ()  # empty: every scenario


@dataclass(frozen=True, slots=True)
class Sent:
    """A malicious call as it went: when (epoch seconds), its status, its decision event."""

    at: float
    status: int
    event: str = ""


@dataclass
class RunResult:
    seed: int
    days: int
    start: float  # epoch seconds of the first simulated instant
    scenarios: list[Scenario]
    sent: dict[str, list[Sent]]
    findings: list[Finding]
    principal_days: int  # benign principals by days on which they made at least one call
    benign_calls: int
    benign_denied: int
    malicious_calls: int
    events: int  # audit events recorded
    detectors: tuple[str, ...]  # the streaming detectors in the pipeline
    engine: dict[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0


class SimClock:
    """The time of the server and of every client: moved only by the runner."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Origin(httpx.AsyncBaseTransport):
    """Where the caller of the moment sits: its address, sent through the trusted proxy hop
    (loopback) as ``X-Forwarded-For``, and its user agent — on every request, token requests
    included, exactly as a caller behind a load balancer would appear."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner
        self.source = ""
        self.agent = ""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["x-forwarded-for"] = self.source
        request.headers["user-agent"] = self.agent
        return await self._inner.handle_async_request(request)


def plan(options: Options) -> tuple[World, list[Scenario], list[Call], dict[str, float]]:
    """The run's world, its scenarios and every call in time order (deterministic per seed;
    the world, the benign traffic and the attacks each draw from their own random stream, so
    choosing scenarios never changes the population or what it does)."""
    world = build_world(_stream(options.seed, "world"), options.days)
    ends = contract_ends(options.days, options.scenarios)
    scenarios = build_scenarios(
        world, options.days, _stream(options.seed, "attacks"), options.scenarios
    )
    calls = Planner(world, options.days, ends).calls(_stream(options.seed, "benign"))
    calls += [call for scenario in scenarios for call in scenario.calls]
    calls.sort(key=lambda c: (c.at, c.principal, c.session))
    return world, scenarios, calls, ends


def _stream(seed: int, name: str) -> random.Random:
    return random.Random(f"{seed}:{name}")  # noqa: S311 (a seeded simulation, not secrets)


def check(options: Options, workdir: Path | None = None) -> None:
    """Refuse bad options before anything starts: unknown scenarios, a work directory that is
    not new or empty, a database URL that is malformed, unreachable or not empty (the run
    writes a whole population into it: it must be a scratch database)."""
    unknown = [name for name in options.scenarios if name not in CATALOGUE]
    if unknown:
        raise BadRequest(f"unknown scenario {unknown[0]!r} (known: {', '.join(CATALOGUE)})")
    if not 1 <= options.days <= MAX_DAYS:
        raise BadRequest(f"days must be between 1 and {MAX_DAYS}")
    if workdir is not None and workdir.exists() and not _empty_directory(workdir):
        raise BadRequest(f"{workdir} is not an empty directory; give a new one")
    if options.database_url:
        _check_database(options.database_url)


def _empty_directory(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _check_database(url: str) -> None:
    try:
        engine = sa.create_engine(sa.engine.make_url(url))
    except (sa.exc.ArgumentError, ValueError):
        raise BadRequest("the database URL is not a valid SQLAlchemy URL") from None
    except ImportError:
        raise BadRequest("no driver for that database URL is installed") from None
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
    except sa.exc.SQLAlchemyError:
        raise BadRequest("cannot connect to the database at that URL") from None
    finally:
        engine.dispose()
    if tables:
        raise BadRequest(
            "the database is not empty; the simulation writes a whole population into it: "
            "give it an empty scratch database"
        )


async def simulate(options: Options, workdir: Path | None = None) -> RunResult:
    """Run the simulation (in ``workdir``, else a temporary directory removed afterwards)."""
    check(options, workdir)
    if workdir is not None:
        await anyio.Path(workdir).mkdir(parents=True, exist_ok=True)
        return await _simulate(options, workdir)
    with tempfile.TemporaryDirectory(prefix="bastion-simulate-") as tmp:
        return await _simulate(options, Path(tmp))


async def _simulate(options: Options, workdir: Path) -> RunResult:
    began = time.perf_counter()
    world, scenarios, calls, ends = plan(options)
    write_databases(world, workdir / "ipintel")
    text = config_text(world, ends, workdir / "ipintel")
    start = START.timestamp()
    clock = SimClock(start + SETUP)
    key = secrets.token_urlsafe(24)  # the upstream key the gateway presents
    async with _bastion(text, workdir, options, clock, key) as harness:
        driver = Driver(harness, world, clock, start)
        await driver.setup()
        await driver.run(calls)
        result = await driver.result(options, scenarios)
    result.wall_seconds = round(time.perf_counter() - began, 2)
    return result


@contextlib.asynccontextmanager
async def _bastion(
    text: str, workdir: Path, options: Options, clock: SimClock, key: str
) -> AsyncIterator[Harness]:
    upstream = httpx2.ASGITransport(app=StandInUpstream(key))
    async with running(
        text,
        workdir,
        upstream=upstream,
        env={UPSTREAM_KEY_ENV: key},
        clock=clock,
        database_url=options.database_url,
        trusted_proxies=("127.0.0.1/32",),
    ) as harness:
        yield harness


class Driver:
    """Executes planned calls against the running Bastion and keeps the tallies."""

    def __init__(self, harness: Harness, world: World, clock: SimClock, start: float) -> None:
        self.harness = harness
        self.world = world
        self.clock = clock
        self.start = start
        self.origin = Origin(harness.transport)
        self.http = httpx.AsyncClient(transport=self.origin, base_url=BASE_URL, timeout=30)
        self.profiles: dict[str, Profile] = {}
        self.sessions: dict[str, DPoPAuth] = {}
        self.sent: dict[str, list[Sent]] = {}
        self.active: set[tuple[str, int]] = set()
        self.benign = Counter[str]()

    async def setup(self) -> None:
        """Three days before the start: the admin adds the one lab member not in the file and
        enrolls a device key for everyone there from the start (and the honeytoken's)."""
        services = self.harness.services
        config = self._config()
        for person in self.world.people.values():
            if not person.declared and person.joins == 0:
                services.principals.add(
                    config, person.name, kind=person.kind, org=person.org, author=ADMIN
                )
        for name in sorted(self.world.people):
            if self.world.people[name].joins == 0:
                self._enroll(name)
        self._enroll(HONEYTOKEN)
        await self.harness.reload()

    def _config(self) -> BastionConfig:
        snapshot = self.harness.services.holder.current
        assert snapshot is not None  # running() returns once the first snapshot is built
        config: BastionConfig = snapshot.config
        return config

    def _enroll(self, name: str) -> None:
        private = generate_private_jwk("EdDSA")
        self.harness.services.principals.enroll(name, public_jwk(private), author=ADMIN)
        self.profiles[name] = Profile(server=BASE_URL, client_id=name, private_jwk=private)

    async def run(self, calls: list[Call]) -> None:
        detection = self.harness.services.detection
        for call in calls:
            at = self.start + call.at
            if at - self.clock.now > SETTLE_GAP:
                await detection.catch_up()  # flushes the recorder, then runs the engine
            self.clock.now = max(self.clock.now, at)
            await self._do(call)
        await self.http.aclose()

    async def _do(self, call: Call) -> None:
        if call.kind in ("hire", "rekey"):
            await self._onboard(call)
            return
        status, event = await self._send(call)
        if call.scenario:
            self.sent.setdefault(call.scenario, []).append(Sent(self.clock.now, status, event))
            return
        self.active.add((call.principal, int(call.at // DAY)))
        self.benign["calls"] += 1
        if status >= 400:
            self.benign["denied"] += 1

    async def _onboard(self, call: Call) -> None:
        """The admin adds a new hire and enrolls their key, or enrolls someone's new laptop
        (sessions opened from then on use the new key)."""
        person = self.world.people[call.principal]
        services = self.harness.services
        if call.kind == "hire":
            config = self._config()
            services.principals.add(
                config, person.name, kind=person.kind, org=person.org, author=ADMIN
            )
        self._enroll(person.name)
        await self.harness.reload()

    async def _send(self, call: Call) -> tuple[int, str]:
        self.origin.source, self.origin.agent = call.source, call.agent
        auth = self.sessions.get(call.session)
        if auth is None:
            auth = DPoPAuth(self.profiles[call.principal], clock=self.clock)
            self.sessions[call.session] = auth
        try:
            response = await self._request(call, auth)
        except BastionError as error:  # the token endpoint refused the login
            return error.status, ""
        return response.status_code, response.headers.get("x-bastion-event", "")

    async def _request(self, call: Call, auth: DPoPAuth) -> httpx.Response:
        if call.kind == "models":
            return await self.http.get("/v1/models", auth=auth)
        if call.kind == "admin":
            headers = {"content-type": "application/json"} if call.prompt else {}
            content = call.prompt.encode() if call.prompt else None
            return await self.http.request(
                call.method, call.path, content=content, headers=headers, auth=auth
            )
        messages = [{"role": "user", "content": call.prompt}]
        body = {"model": call.model, "max_tokens": call.tokens, "messages": messages}
        if API_OF.get(call.model) == "anthropic":
            headers = {"anthropic-version": "2023-06-01"}
            return await self.http.post("/v1/messages", json=body, headers=headers, auth=auth)
        return await self.http.post("/v1/chat/completions", json=body, auth=auth)

    async def result(self, options: Options, scenarios: list[Scenario]) -> RunResult:
        services = self.harness.services
        await services.recorder.flush()
        await services.detection.catch_up()
        config = self._config()
        with services.store.read() as conn:
            events = event_rows.count(conn)
        stats = services.detection.stats()
        return RunResult(
            seed=options.seed,
            days=options.days,
            start=self.start,
            scenarios=scenarios,
            sent=self.sent,
            findings=services.detection.findings(limit=1_000_000),
            principal_days=len(self.active),
            benign_calls=self.benign["calls"],
            benign_denied=self.benign["denied"],
            malicious_calls=sum(len(sent) for sent in self.sent.values()),
            events=events,
            detectors=tuple(d.id for d in default_detectors(config)),
            engine=stats.get("engine", {}),
        )
