"""A compartment's allowed hours end to end, on SQLite and PostgreSQL: inside the hours (in the
compartment's time zone) a granted caller is served; outside them the same caller is refused
with ``outside_compartment_hours``, the model drops out of its model list, the audit event says
why, and compartments without hours are unaffected.

The server and its clients share a settable clock, so "three hours later" takes no time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx2
import orjson
import pytest

from bastion.store import events as event_rows
from bastion.testing import Harness, running
from tests.conftest import CONFIG

pytestmark = pytest.mark.anyio

TOKYO = ZoneInfo("Asia/Tokyo")  # UTC+9 all year: no daylight saving time to reason about
HOURS_CONFIG = CONFIG.replace(
    "  general:\n    level: internal\n",
    "  general:\n    level: internal\n"
    "    allowed_hours:\n"
    "      timezone: Asia/Tokyo\n"
    "      days: [mon, tue, wed, thu, fri]\n"
    '      start: "09:00"\n'
    '      end: "17:00"\n',
    1,
)
CHAT: dict[str, object] = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
FRONTIER: dict[str, object] = {
    "model": "cyber-frontier",
    "messages": [{"role": "user", "content": "hi"}],
}


def last_wednesday_at(hour: int) -> float:
    """The latest Wednesday ``hour``:00 in Tokyo that is not in the future."""
    local = datetime.now(TOKYO)
    day = local - timedelta(days=(local.weekday() - 2) % 7)
    wednesday = day.replace(hour=hour, minute=0, second=0, microsecond=0)
    if wednesday > local:
        wednesday -= timedelta(days=7)
    return wednesday.timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(last_wednesday_at(15))  # inside the hours


@pytest.fixture
async def hours(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
    clock: Clock,
) -> AsyncIterator[Harness]:
    assert "allowed_hours:" in HOURS_CONFIG
    async with running(
        HOURS_CONFIG,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
        clock=clock,
    ) as harness:
        yield harness


async def call(harness: Harness, principal: str, body: dict[str, object]) -> tuple[int, list[str]]:
    """A fresh client (so a fresh token at the clock's time) makes one chat call."""
    profile = harness.profiles.get(principal) or await harness.enroll(principal)
    async with harness.client(profile) as client:
        response = await client.post("/v1/chat/completions", json=body)
    if response.status_code == 200:
        return 200, []
    return response.status_code, response.json()["error"]["reasons"]


async def listed(harness: Harness, principal: str) -> list[str]:
    profile = harness.profiles.get(principal) or await harness.enroll(principal)
    async with harness.client(profile) as client:
        response = await client.get("/v1/models")
    assert response.status_code == 200
    return [model["id"] for model in response.json()["data"]]


async def test_inside_the_hours_a_granted_caller_is_served(hours: Harness) -> None:
    assert await call(hours, "alice", CHAT) == (200, [])
    assert "demo-chat" in await listed(hours, "alice")


async def test_outside_the_hours_the_same_caller_is_refused_with_the_reason(
    hours: Harness, clock: Clock
) -> None:
    assert await call(hours, "alice", CHAT) == (200, [])
    clock.now += 3 * 3600  # Wednesday 18:00 in Tokyo
    assert await call(hours, "alice", CHAT) == (403, ["outside_compartment_hours"])
    await hours.services.recorder.flush()
    with hours.services.store.read() as conn:
        rows = event_rows.last(conn, 50, "request.decided")
    denied = [orjson.loads(row.body) for row in rows if not orjson.loads(row.body)["allowed"]]
    assert denied[-1]["reasons"] == ["outside_compartment_hours"]
    assert denied[-1]["policies"] == ["forbid-outside-compartment-hours"]


async def test_on_a_weekend_in_the_compartment_time_zone_it_is_closed(
    hours: Harness, clock: Clock
) -> None:
    clock.now = last_wednesday_at(11) + 3 * 86400  # Saturday 11:00 in Tokyo
    assert await call(hours, "alice", CHAT) == (403, ["outside_compartment_hours"])


async def test_outside_the_hours_the_model_leaves_the_list_but_others_stay(
    hours: Harness, clock: Clock
) -> None:
    clock.now += 3 * 3600
    assert "demo-chat" not in await listed(hours, "carol")
    assert "cyber-frontier" in await listed(hours, "carol")  # no hours on its compartment
    assert await call(hours, "carol", FRONTIER) == (200, [])
