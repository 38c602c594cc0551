"""The overview: figures from the shared audit log and stores, and its bounded live stream."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest

from bastion.console.overview import Overview

from .conftest import Browser, Console

pytestmark = pytest.mark.anyio

CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
FRONTIER = {"model": "cyber-frontier", "messages": [{"role": "user", "content": "hi"}]}
_INITIAL = re.compile(r'<script type="application/json" id="initial-stats">(.*?)</script>', re.S)


async def _stats(browser: Browser) -> dict[str, Any]:
    page = await browser.get("/console/")
    assert page.status_code == 200
    match = _INITIAL.search(page.text)
    assert match is not None
    stats = orjson.loads(match.group(1))
    assert isinstance(stats, dict)
    return stats


async def test_the_overview_counts_requests_denials_and_locks(console: Console) -> None:
    browser = await console.signed_in("audrey")
    empty = await _stats(browser)
    assert (empty["allowed"], empty["denied"], empty["locks"]) == (0, 0, 0)
    alice = await console.dpop("alice")
    for _ in range(2):
        assert (await alice.post("/v1/chat/completions", json=CHAT)).status_code == 200
    assert (await alice.post("/v1/chat/completions", json=FRONTIER)).status_code == 403
    console.harness.services.locks.lock("principal", "bob", author="test", reason="drill")
    await console.settle()
    stats = await _stats(browser)
    assert stats["allowed"] == 2
    assert stats["denied"] == 1
    assert stats["rps"] == 0.3  # three requests in the last ten seconds
    assert stats["reasons"] == [{"reason": "not_granted", "count": 1}]
    assert stats["locks"] == 1
    assert stats["findings"] == 0
    assert stats["incidents"] == 0
    assert stats["audit_size"] >= 4  # the requests, the lock, the sign-in
    assert len(stats["series"]) <= 61
    assert sum(ok for ok, _ in stats["series"]) == 2
    assert sum(bad for _, bad in stats["series"]) == 1
    page = await browser.get("/console/")
    assert 'data-stat="allowed">2<' in page.text
    assert "not_granted" in page.text
    console.clock.advance(3600 + 60)  # an hour later the requests have left every figure
    await browser.get("/console/login")  # (any request: the session is idle-checked on use)
    later = await _stats(await console.signed_in("audrey"))
    assert (later["allowed"], later["denied"], later["rps"]) == (0, 0, 0.0)


async def _stream(browser: Browser) -> str:
    response = await browser.get("/console/overview/stream")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-store"
    return response.text


@pytest.fixture
def streaming(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once a live stream has sent its first figures (it passed its session check)."""
    sent = asyncio.Event()
    stats = Overview.stats

    async def counted(self: Overview, *, shared: bool = False) -> dict[str, Any]:
        figures = await stats(self, shared=shared)
        if shared:
            sent.set()
        return figures

    monkeypatch.setattr(Overview, "stats", counted)
    return sent


async def test_the_stream_ends_when_the_viewer_signs_out(
    console: Console, streaming: asyncio.Event
) -> None:
    browser = await console.signed_in("audrey")
    stream = asyncio.create_task(_stream(browser))
    await asyncio.wait_for(streaming.wait(), timeout=20)
    await browser.post("/console/logout", {"csrf": browser.csrf})
    text = await asyncio.wait_for(stream, timeout=15)
    assert "event: stats" in text
    assert text.rstrip().endswith("event: end\ndata: {}")
    first = text.split("event: stats\ndata: ", 1)[1].split("\n", 1)[0]
    assert {"rps", "allowed", "denied", "series", "audit_size"} <= set(orjson.loads(first))


async def test_the_stream_ends_when_the_principal_is_locked(
    console: Console, streaming: asyncio.Event
) -> None:
    browser = await console.signed_in("audrey")
    stream = asyncio.create_task(_stream(browser))
    await asyncio.wait_for(streaming.wait(), timeout=20)
    console.harness.services.locks.lock("principal", "audrey", author="test", reason="drill")
    await console.harness.reload()
    text = await asyncio.wait_for(stream, timeout=15)
    assert text.rstrip().endswith("event: end\ndata: {}")
    after = await browser.get("/console/")  # the stream already ended the session
    assert after.headers["location"].startswith("/console/login")


async def test_the_stream_is_refused_without_the_overview_action(console: Console) -> None:
    alice = await console.signed_in_plain("alice")
    refused = await alice.get("/console/overview/stream")
    assert refused.status_code == 403
    assert "text/event-stream" not in refused.headers["content-type"]


async def test_sign_in_lands_an_approver_without_a_role_on_the_access_page(
    console: Console,
) -> None:
    alice = await console.signed_in_plain("alice")  # internal, no control-plane role
    landing = await alice.get("/console/")
    assert landing.status_code == 303
    assert landing.headers["location"] == "/console/access"
    assert (await alice.get("/console/access")).status_code == 200
    audrey = await console.signed_in("audrey")  # an auditor sees the overview itself
    assert (await audrey.get("/console/")).status_code == 200
