"""The access scenario matrix: principal, compartment and situation → decision and reason, each
call made by the official ``openai`` SDK through Bastion's client helper, against the real app
(real store, real Cedar, real token service) on a clock the test moves.

Static rows need no set-up beyond the config; the dynamic scenarios (grant expiry, the two-person
rule, step-up, access reviews) drive the same services the CLI and admin API use. Source
addresses come through a trusted proxy hop (loopback), as in production behind a load balancer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import openai
import pyotp
import pytest

from bastion.config.models import BastionConfig
from bastion.errors import AccessDenied, Conflict
from bastion.testing import BASE_URL, Harness, running

pytestmark = pytest.mark.anyio
DAY = 86400.0
INSIDE = "203.0.113.5"  # inside acme's allowed network
OUTSIDE = "192.0.2.9"
STAFF = "10.0.0.1"


class Clock:
    """The server's and the clients' time: real time plus an offset the test moves forward, or
    (once ``freeze`` is called) only what the test moves."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.frozen: float | None = None

    def __call__(self) -> float:
        return (time.time() if self.frozen is None else self.frozen) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def freeze(self) -> None:
        """Stop real time: a test that counts seconds must not lose them to a slow machine."""
        self.frozen = time.time()


def iso(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def closed_hours() -> str:
    hour = datetime.now(UTC).hour
    start, end = ("20:00", "21:00") if hour < 12 else ("02:00", "03:00")
    return f'start: "{start}"\n      end: "{end}"'


def scenario_config() -> str:
    vendor = (
        f'kind: vendor\n    sponsor: bob\n    contract: {{start: "{iso(-30)}", end: "{iso(90)}"}}'
    )
    return f"""\
version: 1
upstreams:
  up: {{base_url: "http://upstream.test/v1", api: openai, api_key_env: EXAMPLE_UPSTREAM_KEY}}
models:
  - {{name: general-chat, upstream: up, upstream_model: example-gpt, compartment: general}}
  - {{name: restricted-chat, upstream: up, upstream_model: example-gpt, compartment: restricted}}
  - {{name: vault-chat, upstream: up, upstream_model: example-gpt, compartment: vault}}
  - {{name: frontier-chat, upstream: up, upstream_model: example-gpt, compartment: frontier}}
  - {{name: metered-chat, upstream: up, upstream_model: example-gpt, compartment: metered}}
compartments:
  general:
    level: internal
    grants: {{orgs: [lab, acme, lowco, globex, expired, future, nightco, leftco, crowded]}}
  restricted:
    level: restricted
    grants: {{principals: [alice, v1, lo1]}}
  vault:
    level: restricted
    access: {{approvals: 1, approvers: [bob], max_duration_hours: 1}}
  frontier:
    level: critical
    max_mfa_age_minutes: 10
    access: {{approvals: 2, approvers: [bob, audrey, carol], max_duration_hours: 4}}
  metered:
    level: internal
    grants: {{orgs: [lab]}}
    quotas: {{principal: {{requests_per_minute: 2}}}}
orgs:
  lab: {{kind: internal}}
  acme:
    {vendor}
    allowed_networks: [203.0.113.0/24]
    ceiling: restricted
    review_every_days: 30
  lowco:
    {vendor}
    ceiling: internal
  globex:
    {vendor}
  expired: {{kind: vendor, sponsor: bob, contract: {{start: "{iso(-60)}", end: "{iso(-1)}"}}}}
  future: {{kind: vendor, sponsor: bob, contract: {{start: "{iso(1)}", end: "{iso(60)}"}}}}
  nightco:
    {vendor}
    working_hours:
      timezone: UTC
      days: [mon, tue, wed, thu, fri, sat, sun]
      {closed_hours()}
  leftco: {{kind: vendor, sponsor: sam, contract: {{start: "{iso(-30)}", end: "{iso(90)}"}}}}
  crowded:
    {vendor}
    seat_limit: 1
principals:
  alice: {{kind: user, org: lab}}
  bob: {{kind: user, org: lab}}
  carol: {{kind: user, org: lab}}
  audrey: {{kind: user, org: lab, roles: [auditor]}}
  dave: {{kind: user, org: lab}}
  sam: {{kind: user, org: lab, disabled: true}}
  v1: {{kind: user, org: acme}}
  lo1: {{kind: user, org: lowco}}
  g1: {{kind: user, org: globex}}
  g2: {{kind: user, org: globex}}
  x1: {{kind: user, org: expired}}
  f1: {{kind: user, org: future}}
  n1: {{kind: user, org: nightco}}
  l1: {{kind: user, org: leftco}}
  c1: {{kind: user, org: crowded}}
  c2: {{kind: user, org: crowded}}
"""


@dataclass
class World:
    harness: Harness
    clock: Clock

    @property
    def config(self) -> BastionConfig:
        snapshot = self.harness.services.holder.current
        assert snapshot is not None
        return snapshot.config

    async def call(
        self,
        principal: str,
        model: str,
        source: str = STAFF,
        mfa: Callable[[], str] | None = None,
    ) -> tuple[int, list[str]]:
        """One chat completion by the official SDK; (status, reasons)."""
        harness = self.harness
        profile = harness.profiles.get(principal) or await harness.enroll(principal)
        http = harness.sdk_client(profile, mfa=mfa)
        sdk = openai.AsyncOpenAI(
            base_url=BASE_URL + "/v1",
            api_key="unused",
            http_client=http,
            max_retries=0,
            default_headers={"x-forwarded-for": source},
        )
        async with http:
            try:
                await sdk.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}]
                )
            except openai.APIStatusError as error:
                body = error.response.json().get("error", {})
                return error.status_code, list(body.get("reasons", [body.get("code")]))
        return 200, []


@pytest.fixture
async def world(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[World]:
    clock = Clock()
    async with running(
        scenario_config(),
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        clock=clock,
        database_url=database_url,
        trusted_proxies=("127.0.0.1/32",),
    ) as harness:
        yield World(harness, clock)


MATRIX = [
    # principal, model, source, status, reasons
    ("alice", "general-chat", STAFF, 200, []),  # internal user with a grant
    ("alice", "restricted-chat", STAFF, 200, []),
    ("dave", "restricted-chat", STAFF, 403, ["not_granted"]),  # internal user without one
    ("v1", "general-chat", INSIDE, 200, []),  # vendor inside its networks, during the contract
    ("v1", "restricted-chat", INSIDE, 200, []),
    ("v1", "general-chat", OUTSIDE, 403, ["network_not_allowed"]),
    ("f1", "general-chat", STAFF, 403, ["outside_contract"]),  # before the contract
    ("x1", "general-chat", STAFF, 403, ["outside_contract"]),  # after it
    ("lo1", "restricted-chat", STAFF, 403, ["above_vendor_ceiling"]),  # granted above its ceiling
    ("n1", "general-chat", STAFF, 403, ["outside_working_hours"]),
    ("c1", "general-chat", STAFF, 200, []),
    ("c2", "general-chat", STAFF, 403, ["over_seat_limit"]),
    ("l1", "general-chat", STAFF, 403, ["sponsor_inactive"]),  # the sponsor has left
    # critical, nothing approved yet (and no MFA login: both reasons are given)
    ("g1", "frontier-chat", STAFF, 403, ["not_granted", "insufficient_user_authentication"]),
]


async def test_static_matrix(world: World) -> None:
    results = [
        (principal, model, source, *await world.call(principal, model, source))
        for principal, model, source, _, _ in MATRIX
    ]
    assert results == [tuple(row) for row in MATRIX]


async def test_a_grant_ends_exactly_at_its_expiry(world: World) -> None:
    world.clock.freeze()
    access = world.harness.services.access
    request = access.request(world.config, "dave", "vault", reason="incident 42", duration=60)
    access.decide(world.config, request.id, "bob", approve=True, reason="ok")
    await world.harness.reload()
    assert await world.call("dave", "vault-chat") == (200, [])
    world.clock.advance(59)
    assert await world.call("dave", "vault-chat") == (200, [])
    world.clock.advance(2)  # one second after expiry
    assert await world.call("dave", "vault-chat") == (403, ["not_granted"])


async def test_the_two_person_rule_on_a_critical_compartment(world: World) -> None:
    services = world.harness.services
    code = _enroll_totp(world, "g1")
    request = services.access.request(
        world.config, "g1", "frontier", reason="red-team engagement", duration=3600
    )
    with pytest.raises(AccessDenied, match="own request"):  # the requester approving
        services.access.decide(world.config, request.id, "g1", approve=True, reason="me")
    with pytest.raises(AccessDenied):  # a colleague from the requester's own vendor org
        services.access.decide(world.config, request.id, "g2", approve=True, reason="mate")
    services.access.decide(world.config, request.id, "bob", approve=True, reason="ok")
    await world.harness.reload()
    assert services.access.get(request.id).status == "pending"  # one approval is not enough
    assert await world.call("g1", "frontier-chat", mfa=code) == (
        403,
        ["not_granted", "insufficient_user_authentication"],
    )
    services.access.decide(world.config, request.id, "audrey", approve=True, reason="ok")
    await world.harness.reload()
    assert services.access.get(request.id).status == "approved"
    assert await world.call("g1", "frontier-chat", mfa=code) == (200, [])
    with pytest.raises(Conflict):  # a decided request takes no more approvals
        services.access.decide(world.config, request.id, "carol", approve=True, reason="late")


async def test_stale_mfa_steps_up_then_fresh_mfa_is_allowed(world: World) -> None:
    services = world.harness.services
    code = _enroll_totp(world, "g1")
    request = services.access.request(world.config, "g1", "frontier", reason="work", duration=7200)
    for approver in ("bob", "carol"):
        services.access.decide(world.config, request.id, approver, approve=True, reason="ok")
    await world.harness.reload()
    assert await world.call("g1", "frontier-chat") == (401, ["insufficient_user_authentication"])
    assert await world.call("g1", "frontier-chat", mfa=code) == (200, [])  # steps up
    world.clock.advance(11 * 60)  # the MFA login is now older than max_mfa_age (10 min)
    assert await world.call("g1", "frontier-chat") == (401, ["insufficient_user_authentication"])
    assert await world.call("g1", "frontier-chat", mfa=code) == (200, [])


async def test_an_overdue_review_suspends_the_vendor_until_it_is_done(world: World) -> None:
    services = world.harness.services
    await services.sweeper.once()  # opens acme's review, due in 30 days
    (review,) = [r for r in services.reviews.reviews(world.config, "bob") if r.org == "acme"]
    assert await world.call("v1", "restricted-chat", INSIDE) == (200, [])
    world.clock.advance(31 * DAY)
    assert await world.call("v1", "restricted-chat", INSIDE) == (403, ["review_overdue"])
    assert await world.call("v1", "general-chat", INSIDE) == (200, [])  # internal stays open
    services.reviews.decide(
        world.config, review.id, "v1", "bob", decision="keep", reason="still on the contract"
    )
    services.reviews.complete(world.config, review.id, "bob")
    await world.harness.reload()
    assert await world.call("v1", "restricted-chat", INSIDE) == (200, [])


async def test_an_exhausted_quota_is_429_with_retry_after(world: World) -> None:
    assert await world.call("alice", "metered-chat") == (200, [])
    assert await world.call("alice", "metered-chat") == (200, [])
    profile = world.harness.profiles["alice"]
    http = world.harness.sdk_client(profile)
    sdk = openai.AsyncOpenAI(
        base_url=BASE_URL + "/v1", api_key="unused", http_client=http, max_retries=0
    )
    async with http:
        with pytest.raises(openai.RateLimitError) as limited:
            await sdk.chat.completions.create(
                model="metered-chat", messages=[{"role": "user", "content": "hi"}]
            )
    assert int(limited.value.response.headers["retry-after"]) >= 1
    assert limited.value.response.json()["error"]["code"] == "quota_exceeded"


def _enroll_totp(world: World, principal: str) -> Callable[[], str]:
    """Enroll a TOTP factor; return a provider of the current code (on the test's clock)."""
    enrollment = world.harness.services.mfa.enroll(principal, author="test")
    totp = pyotp.TOTP(enrollment.secret)
    used: set[str] = set()

    def code() -> str:
        # A code's time step works once: move past a used one, as a person would wait for it.
        while (value := totp.at(world.clock())) in used:
            world.clock.advance(30)
        used.add(value)
        return value

    return code
