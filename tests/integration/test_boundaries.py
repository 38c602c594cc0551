"""Vendor boundaries and compartment networks, as a decision matrix: principal, model, source
address → status and reason. Source addresses come through a trusted proxy (loopback)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest

from bastion.testing import Harness, running

pytestmark = pytest.mark.anyio


def iso(delta_days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=delta_days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def closed_hours() -> str:
    """A working-hours window (start, end lines) that does not include the current UTC hour."""
    hour = datetime.now(UTC).hour
    start, end = ("20:00", "21:00") if hour < 12 else ("02:00", "03:00")
    return f'"{start}"\n      end: "{end}"'


def boundary_config() -> str:
    return f"""\
version: 1
upstreams:
  up: {{base_url: "http://upstream.test/v1", api: openai, api_key_env: EXAMPLE_UPSTREAM_KEY}}
models:
  - {{name: demo-chat, upstream: up, upstream_model: example-gpt, compartment: general}}
  - {{name: net-chat, upstream: up, upstream_model: example-gpt, compartment: netsec}}
  - {{name: secret-chat, upstream: up, upstream_model: example-gpt, compartment: secret}}
compartments:
  general:
    level: internal
    grants: {{orgs: [lab, acme, expired, future, orphan, nightco]}}
  netsec:
    level: internal
    allowed_networks: [198.51.100.0/24]
    grants: {{orgs: [lab]}}
  secret:
    level: restricted
    grants: {{orgs: [lab, acme]}}
orgs:
  lab: {{kind: internal}}
  acme:
    kind: vendor
    sponsor: bob
    contract: {{start: "{iso(-30)}", end: "{iso(30)}"}}
    allowed_networks: [203.0.113.0/24]
    seat_limit: 2
    ceiling: internal
  expired: {{kind: vendor, sponsor: bob, contract: {{start: "{iso(-60)}", end: "{iso(-1)}"}}}}
  future: {{kind: vendor, sponsor: bob, contract: {{start: "{iso(1)}", end: "{iso(60)}"}}}}
  orphan: {{kind: vendor, contract: {{start: "{iso(-30)}", end: "{iso(30)}"}}}}
  nightco:
    kind: vendor
    sponsor: bob
    contract: {{start: "{iso(-30)}", end: "{iso(30)}"}}
    working_hours:
      timezone: UTC
      days: [mon, tue, wed, thu, fri, sat, sun]
      start: {closed_hours()}
principals:
  alice: {{kind: user, org: lab}}
  bob: {{kind: user, org: lab}}
  v1: {{kind: user, org: acme}}
  v2: {{kind: user, org: acme}}
  v3: {{kind: user, org: acme}}
  x1: {{kind: user, org: expired}}
  f1: {{kind: user, org: future}}
  o1: {{kind: user, org: orphan}}
  n1: {{kind: user, org: nightco}}
"""


@pytest.fixture
async def bounded(
    tmp_path: Path, upstream_env: dict[str, str], upstream_transport: httpx2.ASGITransport
) -> AsyncIterator[Harness]:
    async with running(
        boundary_config(),
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        trusted_proxies=("127.0.0.1/32",),
    ) as harness:
        yield harness


async def call(harness: Harness, principal: str, model: str, source: str) -> tuple[int, list[str]]:
    profile = harness.profiles.get(principal) or await harness.enroll(principal)
    async with harness.client(profile) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            headers={"x-forwarded-for": source},
        )
    reasons = (
        response.json().get("error", {}).get("reasons", []) if response.status_code != 200 else []
    )
    return response.status_code, reasons


MATRIX = [
    # principal, model, source address, status, reasons
    ("alice", "demo-chat", "10.0.0.1", 200, []),
    ("v1", "demo-chat", "203.0.113.5", 200, []),
    ("v1", "demo-chat", "192.0.2.9", 403, ["network_not_allowed"]),
    ("v3", "demo-chat", "203.0.113.5", 403, ["over_seat_limit"]),
    ("x1", "demo-chat", "10.0.0.1", 403, ["outside_contract"]),
    ("f1", "demo-chat", "10.0.0.1", 403, ["outside_contract"]),
    ("o1", "demo-chat", "10.0.0.1", 403, ["sponsor_inactive"]),
    ("n1", "demo-chat", "10.0.0.1", 403, ["outside_working_hours"]),
    ("v1", "secret-chat", "203.0.113.5", 403, ["above_vendor_ceiling"]),
    ("alice", "secret-chat", "10.0.0.1", 200, []),
    ("alice", "net-chat", "10.0.0.1", 403, ["network_not_allowed"]),
    ("alice", "net-chat", "198.51.100.7", 200, []),
    ("v1", "net-chat", "198.51.100.7", 403, ["network_not_allowed"]),  # outside acme's networks
]


async def test_decision_matrix(bounded: Harness) -> None:
    results = [
        (principal, model, source, *await call(bounded, principal, model, source))
        for principal, model, source, _, _ in MATRIX
    ]
    assert results == [(p, m, s, status, reasons) for p, m, s, status, reasons in MATRIX]


async def test_a_locked_sponsor_suspends_the_vendor(bounded: Harness) -> None:
    assert await call(bounded, "v1", "demo-chat", "203.0.113.5") == (200, [])
    bounded.services.locks.lock("principal", "bob", reason="sponsor left", author="test")
    await bounded.reload()
    assert await call(bounded, "v1", "demo-chat", "203.0.113.5") == (403, ["sponsor_inactive"])


async def test_spoofed_forwarding_from_an_untrusted_peer_is_ignored(
    tmp_path: Path, upstream_env: dict[str, str], upstream_transport: httpx2.ASGITransport
) -> None:
    async with running(
        boundary_config(), tmp_path, upstream=upstream_transport, env=upstream_env
    ) as harness:  # no trusted proxies: the socket peer (127.0.0.1) is the source
        assert await call(harness, "alice", "net-chat", "198.51.100.7") == (
            403,
            ["network_not_allowed"],
        )
