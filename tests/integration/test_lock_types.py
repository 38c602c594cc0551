"""Network, step-up and throttle locks end to end, with the official openai SDK, on SQLite and
PostgreSQL.

Callers from other networks come through a trusted proxy hop: loopback is a trusted proxy and
the client address is in ``X-Forwarded-For``. The server and its clients share a settable clock
(as in test_mfa.py), so "30 seconds later" takes no time and TOTP codes are computed for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import openai
import orjson
import pyotp
import pytest
from openai.types.chat import ChatCompletionMessageParam

from bastion.client import Profile
from bastion.identity.assertions import ASSERTION_TYPE, make_client_assertion
from bastion.identity.dpop import sign_proof
from bastion.identity.mfa import STEP_SECONDS
from bastion.respond.locks import LockService
from bastion.store import events as event_rows
from bastion.testing import BASE_URL, Harness, running
from tests.conftest import CONFIG
from tests.integration.conftest import Cli, People

pytestmark = pytest.mark.anyio

LOCKS_CONFIG = CONFIG.replace(
    "  audrey: {kind: user, org: lab, roles: [auditor]}\n",
    "  audrey: {kind: user, org: lab, roles: [auditor]}\n"
    "  root: {kind: user, org: lab, roles: [admin]}\n",
)
TOKEN = BASE_URL + "/oauth/token"
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
LOCKED_NET, INSIDE, ELSEWHERE = "203.0.113.0/24", "203.0.113.7", "198.51.100.7"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def harness(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
    clock: Clock,
) -> AsyncIterator[Harness]:
    assert "root: {kind: user, org: lab, roles: [admin]}" in LOCKS_CONFIG
    async with running(
        LOCKS_CONFIG,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
        clock=clock,
        trusted_proxies=("127.0.0.1/32",),
    ) as running_harness:
        yield running_harness


@pytest.fixture
async def people(harness: Harness) -> AsyncIterator[People]:
    crowd = People(harness)
    yield crowd
    await crowd.close()


async def sdk(
    harness: Harness, who: str, source: str = ELSEWHERE, mfa: Callable[[], str] | None = None
) -> openai.AsyncOpenAI:
    """The openai SDK as ``who``, calling from ``source`` (through the trusted proxy hop)."""
    profile = harness.profiles.get(who) or await harness.enroll(who)
    return openai.AsyncOpenAI(
        base_url=BASE_URL + "/v1",
        api_key="unused",
        http_client=harness.sdk_client(profile, mfa=mfa),
        default_headers={"x-forwarded-for": source},
        max_retries=0,  # the SDK would otherwise wait out a 429's Retry-After and try again
    )


async def chat(client: openai.AsyncOpenAI) -> str:
    reply = await client.chat.completions.create(model="demo-chat", messages=HI)
    return reply.choices[0].message.content or ""


async def lock(harness: Harness, target_type: str, target: str, **options: Any) -> str:
    row, _ = harness.services.locks.lock(
        target_type, target, reason="integration test", author="test", **options
    )
    await harness.reload()
    return str(row.id)


async def unlock(harness: Harness, target_type: str, target: str) -> None:
    harness.services.locks.unlock(target_type, target, author="test", reason="done")
    await harness.reload()


async def events(harness: Harness, prefix: str) -> list[dict[str, Any]]:
    await harness.services.recorder.flush()
    with harness.services.store.read() as conn:
        rows = event_rows.last(conn, 1000, prefix)
    return [orjson.loads(row.body) for row in rows]


async def grant(harness: Harness, profile: Profile, source: str, **form: str) -> httpx.Response:
    """A raw token request from ``source``: client_credentials unless ``form`` says otherwise."""
    now = harness.clock()
    if "grant_type" not in form:
        assertion = make_client_assertion(
            profile.private_jwk, client_id=profile.client_id, audience=TOKEN, now=now
        )
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
    proof = sign_proof(profile.private_jwk, method="POST", url=TOKEN, now=now)
    async with harness.client() as client:
        return await client.post(
            "/oauth/token", data=form, headers={"DPoP": proof, "x-forwarded-for": source}
        )


# -- network locks --------------------------------------------------------------------------------


async def test_a_network_lock_refuses_that_network_and_serves_the_others(
    harness: Harness,
) -> None:
    inside, elsewhere = await sdk(harness, "alice", INSIDE), await sdk(harness, "bob", ELSEWHERE)
    assert "You said: hi" in await chat(inside)
    lock_id = await lock(harness, "network", LOCKED_NET)

    for client in (inside, await sdk(harness, "carol", "203.0.113.200")):
        with pytest.raises(openai.PermissionDeniedError) as denied:
            await chat(client)
        assert denied.value.status_code == 403
        assert denied.value.body["reasons"] == ["locked_network"]  # type: ignore[index]
    assert "You said: hi" in await chat(elsewhere)
    assert "You said: hi" in await chat(await sdk(harness, "alice", "203.0.114.7"))  # next /24

    refused = [e for e in await events(harness, "request.decided") if not e["allowed"]]
    assert [(e["source_ip"], e["reasons"], e["policies"], e["status"]) for e in refused] == [
        (INSIDE, ["locked_network"], [f"lock:{lock_id}"], 403),
        ("203.0.113.200", ["locked_network"], [f"lock:{lock_id}"], 403),
    ]

    await unlock(harness, "network", LOCKED_NET)
    assert "You said: hi" in await chat(inside)


async def test_no_token_is_issued_or_refreshed_from_a_locked_network(harness: Harness) -> None:
    profile = await harness.enroll("alice")
    first = await grant(harness, profile, INSIDE)
    assert first.status_code == 200, first.text
    await lock(harness, "network", LOCKED_NET)

    for response in (
        await grant(harness, profile, INSIDE),
        await grant(
            harness,
            profile,
            "203.0.113.8",
            grant_type="refresh_token",
            refresh_token=first.json()["refresh_token"],
        ),
    ):
        assert response.status_code == 400, response.text
        assert response.json() == {
            "error": "invalid_grant",
            "error_description": "the network this request comes from is locked",
        }
    assert (await grant(harness, profile, ELSEWHERE)).status_code == 200
    refused = await events(harness, "token.refused")
    assert [(e["source_ip"], e["principal"]) for e in refused] == [
        (INSIDE, "alice"),
        ("203.0.113.8", "alice"),
    ]


async def test_an_ipv6_network_lock_covers_its_slash_64(harness: Harness) -> None:
    client = await sdk(harness, "alice", "2001:db8:1:2:aaaa::9")
    assert "You said: hi" in await chat(client)
    await lock(harness, "network", "2001:db8:1:2::/64")
    with pytest.raises(openai.PermissionDeniedError) as denied:
        await chat(client)
    assert denied.value.body["reasons"] == ["locked_network"]  # type: ignore[index]
    assert "You said: hi" in await chat(await sdk(harness, "alice", "2001:db8:1:3::9"))


async def test_a_network_lock_applies_to_the_admin_api(harness: Harness, people: People) -> None:
    root = await people("root")
    assert (
        await root.get("/admin/v1/orgs", headers={"x-forwarded-for": INSIDE})
    ).status_code == 200
    await lock(harness, "network", LOCKED_NET)
    denied = await root.get("/admin/v1/orgs", headers={"x-forwarded-for": INSIDE})
    assert denied.status_code == 403
    assert denied.json()["error"]["reasons"] == ["locked_network"]
    served = await root.get("/admin/v1/orgs", headers={"x-forwarded-for": ELSEWHERE})
    assert served.status_code == 200


class SlowStream:
    """An upstream that streams a long chat completion slowly, chunk by chunk (the stand-in
    upstream behind ``httpx2.ASGITransport`` would answer only once it had finished), and says
    when the first chunks are out."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.sent = 0

    async def handler(self, request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, headers={"content-type": "text/event-stream"}, content=self._events()
        )

    async def _events(self) -> AsyncIterator[bytes]:
        for _ in range(400):
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "example-gpt",
                "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": None}],
            }
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
            self.sent += 1
            if self.sent == 3:
                self.started.set()
            await anyio.sleep(0.05)
        yield b"data: [DONE]\n\n"


async def test_a_network_lock_cuts_a_stream_from_that_network(
    tmp_path: Path, upstream_env: dict[str, str], database_url: str
) -> None:
    upstream = SlowStream()
    async with running(
        LOCKS_CONFIG,
        tmp_path,
        upstream=httpx2.MockTransport(upstream.handler),
        env=upstream_env,
        database_url=database_url,
        trusted_proxies=("127.0.0.1/32",),
    ) as harness:
        client = await sdk(harness, "alice", INSIDE)
        received: list[str] = []
        errors: list[openai.APIError] = []

        async def consume() -> None:
            stream = await client.chat.completions.create(
                model="demo-chat",
                messages=HI,
                stream=True,
            )
            try:
                async for chunk in stream:
                    received.extend(c.delta.content or "" for c in chunk.choices)
            except openai.APIError as error:
                errors.append(error)

        async def lock_once_streaming() -> None:
            with anyio.fail_after(10):
                await upstream.started.wait()
            await lock(harness, "network", LOCKED_NET)

        started = time.monotonic()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(consume)
            tasks.start_soon(lock_once_streaming)
        assert time.monotonic() - started < 10  # all 400 chunks would take 20 s
        assert 3 <= len(received) < 400
        assert upstream.sent < 400  # the upstream read stopped too
        assert [str(error) for error in errors] == ["stream ended: locked_network"]
        decided = (await events(harness, "request.decided"))[-1]
        assert (decided["outcome"], decided["reasons"]) == ("cut", ["granted", "locked_network"])


# -- step-up locks --------------------------------------------------------------------------------


@dataclass
class Totp:
    secret: str
    clock: Clock
    asked: int = 0

    def __call__(self) -> str:
        """The authenticator app's code: a new TOTP step each time, so no code is reused."""
        self.asked += 1
        self.clock.now = (int(self.clock.now // STEP_SECONDS) + 1) * STEP_SECONDS + 1
        return pyotp.TOTP(self.secret).at(self.clock.now)


async def test_a_step_up_lock_asks_for_mfa_and_a_fresh_mfa_login_is_served(
    harness: Harness, clock: Clock
) -> None:
    totp = Totp(harness.services.mfa.enroll("alice", author="test").secret, clock)
    plain = await sdk(harness, "alice")
    assert "You said: hi" in await chat(plain)
    await lock(harness, "stepup", "alice")
    clock.now += 42

    with pytest.raises(openai.AuthenticationError) as challenged:
        await chat(plain)
    assert challenged.value.status_code == 401
    assert challenged.value.code == "insufficient_user_authentication"
    challenge = challenged.value.response.headers["www-authenticate"]
    assert 'error="insufficient_user_authentication"' in challenge
    assert "max_age=42," in challenge

    stepped = await sdk(harness, "alice", mfa=totp)  # bastion.client logs in with MFA, retries
    assert "You said: hi" in await chat(stepped)
    assert "You said: hi" in await chat(stepped)
    assert totp.asked == 1
    with pytest.raises(openai.AuthenticationError):  # the old token's login had no MFA
        await chat(plain)
    assert "You said: hi" in await chat(await sdk(harness, "bob"))  # bob is not stepped up

    await unlock(harness, "stepup", "alice")
    assert "You said: hi" in await chat(plain)
    statuses = [e["status"] for e in await events(harness, "request.decided")]
    assert statuses == [200, 401, 401, 200, 200, 401, 200, 200]


async def test_a_step_up_lock_denies_the_admin_api(harness: Harness, people: People) -> None:
    root = await people("root")
    assert (await root.get("/admin/v1/orgs")).status_code == 200
    await lock(harness, "stepup", "root")
    denied = await root.get("/admin/v1/orgs")
    assert denied.status_code == 403
    assert denied.json()["error"]["reasons"] == ["insufficient_user_authentication"]


async def test_a_step_up_lock_asks_for_mfa_before_listing_models(harness: Harness) -> None:
    plain = await sdk(harness, "alice")
    assert "demo-chat" in [model.id async for model in plain.models.list()]
    await lock(harness, "stepup", "alice")
    with pytest.raises(openai.AuthenticationError) as challenged:
        await plain.models.list()
    assert challenged.value.code == "insufficient_user_authentication"


# -- throttle locks -------------------------------------------------------------------------------


async def test_a_throttle_lock_holds_the_principal_to_its_rate(
    harness: Harness, clock: Clock
) -> None:
    alice, bob = await sdk(harness, "alice"), await sdk(harness, "bob")
    lock_id = await lock(harness, "throttle", "alice", rate=2)
    assert "You said: hi" in await chat(alice)
    with pytest.raises(openai.RateLimitError) as throttled:  # every model counts, no burst
        await alice.embeddings.create(model="demo-embed", input="x")
    assert throttled.value.status_code == 429
    assert throttled.value.code == "throttled"
    assert throttled.value.response.headers["retry-after"] == "30"
    clock.now += 30
    reply = await alice.embeddings.create(model="demo-embed", input="x")
    assert reply.data
    assert throttled.value.message.endswith(
        "throttled: principal 'alice' is held to 2 requests per minute"
    )
    for _ in range(3):
        assert "You said: hi" in await chat(bob)  # another principal is unaffected

    clock.now += 30
    assert "You said: hi" in await chat(alice)
    with pytest.raises(openai.RateLimitError):
        await chat(alice)

    await unlock(harness, "throttle", "alice")
    for _ in range(3):
        assert "You said: hi" in await chat(alice)
    refused = [e for e in await events(harness, "request.decided") if e["status"] == 429]
    assert [(e["outcome"], e["error"], e["reasons"], e["policies"]) for e in refused] == [
        ("denied", "throttled", ["throttled"], [f"lock:{lock_id}"]),
    ] * 2


# -- placing them: admin API ----------------------------------------------------------------------


async def test_the_admin_api_places_the_new_lock_types(harness: Harness, people: People) -> None:
    root = await people("root")
    placed = {}
    for body in (
        {"target_type": "throttle", "target": "alice", "rate": 6, "reason": "D6 volume"},
        {"target_type": "network", "target": "2001:DB8:0:1::/64", "reason": "D2"},
        {"target_type": "network", "target": "203.0.113.9", "reason": "one host"},
        {"target_type": "stepup", "target": "bob", "reason": "D1 new device"},
    ):
        response = await root.post("/admin/v1/locks", json=body)
        assert response.status_code == 201, response.text
        placed[body["target"]] = response.json()["lock"]
    assert placed["alice"]["rate"] == 6
    assert placed["2001:DB8:0:1::/64"]["target"] == "2001:db8:0:1::/64"
    assert placed["203.0.113.9"]["target"] == "203.0.113.9/32"
    assert placed["bob"]["rate"] is None
    listed = (await root.get("/admin/v1/locks")).json()["locks"]
    assert {(lock["target_type"], lock["target"], lock["rate"]) for lock in listed} == {
        ("throttle", "alice", 6),
        ("network", "2001:db8:0:1::/64", None),
        ("network", "203.0.113.9/32", None),
        ("stepup", "bob", None),
    }


THROTTLE = {"target_type": "throttle", "target": "alice", "reason": "why", "rate": 6}
NETWORK = {"target_type": "network", "target": LOCKED_NET, "reason": "why"}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({**THROTTLE, "rate": None}, "a throttle lock needs a rate"),
        ({k: v for k, v in THROTTLE.items() if k != "rate"}, "a throttle lock needs a rate"),
        ({**NETWORK, "rate": 6}, "others take none"),
        ({**THROTTLE, "target_type": "principal"}, "others take none"),
        ({**THROTTLE, "rate": 0}, "body.rate"),
        ({**THROTTLE, "rate": -1}, "body.rate"),
        ({**THROTTLE, "rate": 10**9}, "body.rate"),
        ({**THROTTLE, "rate": float("nan")}, "body.rate"),
        ({**THROTTLE, "rate": float("inf")}, "body.rate"),
        ({**THROTTLE, "rate": "fast"}, "body.rate"),
        ({**THROTTLE, "target": "ali ce"}, "invalid throttle name"),
        ({**NETWORK, "target": "203.0.112.0/23"}, "network locks take IPv4 prefixes /32, /24"),
        ({**NETWORK, "target": "203.0.113.7/24"}, "host bits set: did you mean 203.0.113.0/24?"),
        ({**NETWORK, "target": "2001:db8::/56"}, "IPv6 prefixes /128, /64, /48 only"),
        ({**NETWORK, "target": "not-a-network"}, "invalid network for a lock target"),
        ({**NETWORK, "target": "::ffff:203.0.113.0/120"}, "by its IPv4 form"),
        ({**NETWORK, "target": "*"}, "invalid network"),
        ({**NETWORK, "target_type": "networks"}, "body.target_type"),
    ],
)
async def test_bad_new_lock_requests_change_nothing(
    harness: Harness, people: People, body: dict[str, Any], needle: str
) -> None:
    root = await people("root")
    # json.dumps writes NaN and Infinity as a hostile client may (orjson would refuse to)
    response = await root.post(
        "/admin/v1/locks",
        content=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]["message"]
    assert harness.services.locks.active() == []


# -- placing them: CLI ----------------------------------------------------------------------------


def test_the_cli_places_lists_and_releases_the_new_lock_types(
    admin_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    throttled = admin_cli(
        "lock", "throttle", "alice", "--rate", "6", "--reason", "D6", "--ttl", "15m"
    )
    assert throttled.code == 0, throttled.err
    network = admin_cli("lock", "network", "2001:DB8:0:1::/64", "--reason", "D2")
    stepup = admin_cli("lock", "stepup", "bob", "--reason", "new device")
    assert (network.code, stepup.code) == (0, 0)
    rows = {row.target_type: row for row in LockService(admin_cli.store, admin_cli.audit).active()}
    assert rows["throttle"].rate == 6
    assert throttled.out.startswith(
        f"locked throttle alice to 6 requests/min ({rows['throttle'].id}, expires "
    )
    assert network.out.startswith(f"locked network 2001:db8:0:1::/64 ({rows['network'].id})")
    assert stepup.out.startswith(f"locked stepup bob ({rows['stepup'].id})")

    monkeypatch.setenv("COLUMNS", "200")
    listed = admin_cli("locks").out
    [row] = [line for line in listed.splitlines() if rows["throttle"].id in line]
    assert row.rstrip().rstrip("│").strip().endswith("6/min")

    released = admin_cli("unlock", "network", "2001:db8:0:1:0::/64", "--reason", "contained")
    assert (
        released.out.splitlines()[0] == f"unlocked network 2001:db8:0:1::/64 ({rows['network'].id})"
    )
    assert {row.target_type for row in LockService(admin_cli.store, admin_cli.audit).active()} == {
        "throttle",
        "stepup",
    }


NEEDS_RATE = "a throttle lock needs a rate (requests per minute); others take none"
BAD_RATE = "throttle rate must be above 0 and at most 10000 per minute"
NOT_A_CIDR = "invalid network for a lock target: use a CIDR such as 203.0.113.0/24"
UNKNOWN = "no stepup 'nobody' is known, so nothing was locked (check the name, or use --force"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["throttle", "alice"], NEEDS_RATE),
        (["principal", "alice", "--rate", "6"], NEEDS_RATE),
        *((["throttle", "alice", "--rate", rate], BAD_RATE) for rate in ("0", "-1", "1e9", "nan")),
        (["throttle", "alice", "--rate", "inf"], BAD_RATE),
        (["network", "203.0.112.0/23"], "network locks take IPv4 prefixes /32, /24, /16 only"),
        (["network", "203.0.113.7/24"], "host bits set: did you mean 203.0.113.0/24?"),
        (["network", "example.com"], NOT_A_CIDR),
        (["network"], NOT_A_CIDR),
        (["stepup", "nobody"], UNKNOWN + " to lock it before it exists)"),
    ],
)  # fmt: skip
def test_bad_new_locks_are_refused_by_the_cli_and_store_nothing(
    admin_cli: Cli, args: list[str], message: str
) -> None:
    result = admin_cli("lock", *args, "--reason", "r")
    assert (result.code, result.out) == (1, "")
    assert result.err.startswith("error: ")
    assert result.err.endswith(f"{message}\n")
    assert LockService(admin_cli.store, admin_cli.audit).active() == []


def test_a_rate_that_is_not_a_number_is_a_usage_error(admin_cli: Cli) -> None:
    result = admin_cli("lock", "throttle", "alice", "--rate", "fast", "--reason", "r")
    assert result.code == 2
    assert "Invalid value for '--rate'" in result.err
    assert LockService(admin_cli.store, admin_cli.audit).active() == []
