"""The Audit page: checkpoint and verification status, the event search and its hostile query
string, each event's detail, and receipts that ``bastion-verify`` accepts (SQLite and PostgreSQL).

The server signs no checkpoint by itself here (a one-hour interval): each test signs when it
needs one, so "not in a checkpoint yet" is deterministic.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import orjson
import pytest

from bastion.audit import offline
from bastion.audit.events import AdminAction, Event, RequestDecided
from bastion.audit.note import parse_verifier_key
from bastion.audit.receipt import verify_receipt
from bastion.console.audit import MAX_PAGE, MAX_QUERY, MAX_VALUE
from bastion.store import events as event_rows
from bastion.store.events import EventQuery
from bastion.store.tables import audit_events
from bastion.testing import running

from .conftest import CONSOLE_CONFIG, Browser, Clock, Console

pytestmark = pytest.mark.anyio

CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
FRONTIER = {"model": "cyber-frontier", "messages": [{"role": "user", "content": "hi"}]}
_ROW = re.compile(r'<tr data-event="([^"]+)">')
EVIL = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


@pytest.fixture
async def quiet(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
    clock: Clock,
) -> AsyncIterator[Console]:
    """The console fixture's Bastion, but its checkpointer waits an hour between signatures."""
    async with running(
        CONSOLE_CONFIG,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
        clock=clock,
        checkpoint_interval=3600.0,
    ) as harness:
        console = Console(harness, clock)
        yield console
        await console.close()


def _request(when: float, principal: str, model: str, *, allowed: bool = True) -> RequestDecided:
    return RequestDecided(
        time=when,
        principal=principal,
        org="lab",
        model=model,
        compartment="general",
        route="POST /v1/chat/completions",
        allowed=allowed,
        reasons=() if allowed else ("not_granted",),
        policies=(),
        epoch=1,
        source_ip="127.0.0.1",
        family=None,
        jkt=None,
        status=200 if allowed else 403,
        outcome="completed" if allowed else "denied",
    )


def _append(console: Console, *events: Event) -> None:
    services = console.harness.services
    with services.store.begin() as conn:
        services.audit.append(conn, list(events))


def _sign(console: Console) -> int:
    services = console.harness.services
    with services.store.begin() as conn:
        services.audit.checkpoint(conn)
        latest = event_rows.latest_checkpoint(conn)
    assert latest is not None
    return latest.size


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _ids(browser: Browser, query: str) -> list[str]:
    page = await browser.get("/console/audit" + query)
    assert page.status_code == 200, page.text[:2000]
    return _ROW.findall(page.text)


async def test_the_page_shows_the_latest_checkpoint_and_the_verification_status(
    quiet: Console,
) -> None:
    browser = await quiet.signed_in("audrey")
    page = await browser.get("/console/audit")
    assert page.status_code == 200
    assert "No checkpoint has been signed yet." in page.text
    size = _sign(quiet)
    assert quiet.harness.services.integrity is not None
    quiet.harness.services.integrity.check()
    page = await browser.get("/console/audit")
    services = quiet.harness.services
    with services.store.read() as conn:
        latest = event_rows.latest_checkpoint(conn)
    assert latest is not None
    assert latest.size == size
    assert f"<code>{services.audit.origin}</code>" in page.text
    assert f'data-field="size">{size}<' in page.text
    assert base64.b64encode(latest.root).decode() in page.text
    assert latest.note in page.text  # the signed note, whole
    assert services.audit.signer.verifier.text in page.text
    assert 'data-state="ok"' in page.text
    assert "this process" in page.text  # embedded: the watch verifies here
    download = await browser.get("/console/audit/checkpoint")
    assert download.status_code == 200
    assert download.text == latest.note
    assert download.headers["content-disposition"] == (
        f'attachment; filename="checkpoint-{size}.txt"'
    )


async def test_the_page_shows_a_tampered_log(quiet: Console) -> None:
    denied = _request(quiet.clock(), "alice", "demo-chat", allowed=False)
    _append(quiet, denied)
    services = quiet.harness.services
    assert services.integrity is not None
    services.integrity.check()
    with services.store.begin() as conn:
        row = event_rows.by_id(conn, denied.id)
        assert row is not None
        idx = row.idx
        edited = row.body.replace('"allowed":false', '"allowed":true')
        assert edited != row.body
        conn.execute(audit_events.update().where(audit_events.c.idx == idx).values(body=edited))
    for _ in range(10):  # the watch's re-check sweep finds the edit within a cycle
        if services.integrity.check()["state"] == "tampered":
            break
    browser = await quiet.signed_in("audrey")
    page = await browser.get("/console/audit")
    assert page.status_code == 200
    assert 'data-state="tampered"' in page.text
    assert "TAMPERED" in page.text
    assert f"<dd>{idx}</dd>" in page.text  # the first bad entry
    assert services.integrity.status()["problem"] in page.text


async def test_search_by_principal_model_name_and_time(quiet: Console) -> None:
    base = float(int(quiet.clock()) - 600)
    _append(
        quiet,
        _request(base, "alice", "demo-chat"),
        _request(base + 60, "bob", "demo-chat"),
        _request(base + 120, "alice", "cyber-frontier", allowed=False),
        AdminAction(
            time=base + 180,
            actor="principal:root",
            action="lock.created",
            target_type="principal",
            target="alice",
        ),
        AdminAction(
            time=base + 240,
            actor="principal:alice",
            action="key.enrolled",
            target_type="key",
            target="k1",
        ),
    )
    with quiet.harness.services.store.read() as conn:
        ours = event_rows.search(conn, EventQuery(since=base - 1, until=base + 300, limit=10))
    assert len(ours) == 5
    a_chat, b_chat, a_frontier, lock, enrolled = (row.id for row in reversed(ours))
    browser = await quiet.signed_in("audrey")
    window = f"&from={_iso(base - 1)}&to={_iso(base + 300)}"
    # principal: the field, the actor principal:<name>, the target of an action on the principal
    assert await _ids(browser, "?principal=alice" + window) == [enrolled, lock, a_frontier, a_chat]
    assert await _ids(browser, "?principal=bob" + window) == [b_chat]
    assert await _ids(browser, "?principal=ali" + window) == []  # whole names only
    assert await _ids(browser, "?model=demo-chat" + window) == [b_chat, a_chat]
    assert await _ids(browser, "?model=cyber-frontier&principal=alice") == [a_frontier]
    assert await _ids(browser, "?name=lock.created") == [lock]
    assert await _ids(browser, "?name=key.*" + window) == [enrolled]
    assert await _ids(browser, "?name=request.decided&principal=alice") == [a_frontier, a_chat]
    # from <= time < to, in UTC or with an offset
    assert await _ids(browser, f"?from={_iso(base + 60)}&to={_iso(base + 180)}") == [
        a_frontier,
        b_chat,
    ]
    shifted = _iso(base + 60 + 3600).replace("Z", "") + "%2B01:00"
    assert await _ids(browser, f"?from={shifted}&to={_iso(base + 61)}") == [b_chat]
    # the page shows index, time, name, principal, model and decision
    page = await browser.get("/console/audit?principal=alice&model=cyber-frontier")
    row = page.text.split(f'data-event="{a_frontier}"', 1)[1].split("</tr>", 1)[0]
    for shown in ("request.decided", "alice", "cyber-frontier", "denied", "UTC"):
        assert shown in row
    assert f'href="/console/audit/events/{a_frontier}/receipt"' in row
    # empty fields are ignored (a submitted form sends every field)
    assert a_chat in await _ids(browser, "?principal=&model=&name=&from=&to=&limit=200")


async def test_search_pages_are_bounded_and_link_to_older_events(quiet: Console) -> None:
    base = quiet.clock() - 100
    _append(quiet, *(_request(base + i, "carol", "demo-embed") for i in range(7)))
    browser = await quiet.signed_in("audrey")
    first = await browser.get("/console/audit?principal=carol&limit=3")
    ids = _ROW.findall(first.text)
    assert len(ids) == 3
    older = re.search(r'<a href="([^"]+)" rel="next">', first.text)
    assert older is not None
    link = older.group(1).replace("&amp;", "&")
    assert "principal=carol" in link
    assert "limit=3" in link
    assert "before=" in link
    second = _ROW.findall((await browser.get(link)).text)
    assert len(second) == 3
    assert not set(second) & set(ids)
    with quiet.harness.services.store.read() as conn:
        rows = event_rows.search(conn, EventQuery(principal="carol", limit=MAX_PAGE))
    assert [row.id for row in rows[:6]] == ids + second
    assert [row.idx for row in rows] == sorted((row.idx for row in rows), reverse=True)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?principle=alice", "unknown search field &#39;principle&#39;"),
        ("?principal=a&principal=b", "principal: given more than once"),
        ("?from=yesterday", "from: &#39;yesterday&#39; is not a time; use ISO 8601"),
        ("?to=2026-13-01T00:00", "to: &#39;2026-13-01T00:00&#39; is not a time"),
        ("?from=" + "2" * 41, "from: the time is longer than 40 characters"),
        (
            "?from=2026-11-27T16:00&to=2026-11-27T15:00",
            "from must be earlier than to",
        ),
        ("?principal=" + "a" * (MAX_VALUE + 1), f"principal: at most {MAX_VALUE} characters"),
        ("?model=a%00b", "model: control characters are not allowed"),
        ("?name=Request.Decided", "name: &#39;Request.Decided&#39; is not an event name"),
        ("?name=token.*.x", "is not an event name"),
        ("?limit=0", f"limit: must be between 1 and {MAX_PAGE}"),
        ("?limit=201", f"limit: must be between 1 and {MAX_PAGE}"),
        ("?limit=ten", "limit: &#39;ten&#39; is not a whole number"),
        ("?limit=-1", "limit: &#39;-1&#39; is not a whole number"),
        ("?before=99999999999999999999", "before: must be between 1 and"),
        ("?before=0", "before: must be between 1"),
        ("?principal=" + "a" * MAX_QUERY, f"the query string is longer than {MAX_QUERY}"),
    ],
)
async def test_bad_search_parameters_are_refused_clearly(
    quiet: Console, query: str, message: str
) -> None:
    browser = await quiet.signed_in("audrey")
    page = await browser.get("/console/audit" + query)
    assert page.status_code == 400
    assert message in page.text
    assert "<h1>Bad request</h1>" in page.text
    assert "Traceback" not in page.text


async def test_a_receipt_for_a_real_request_verifies_offline(
    quiet: Console, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alice = await quiet.dpop("alice")
    assert (await alice.post("/v1/chat/completions", json=CHAT)).status_code == 200
    await quiet.settle()
    browser = await quiet.signed_in("audrey")
    ids = await _ids(browser, "?principal=alice&model=demo-chat&name=request.decided")
    assert len(ids) == 1
    receipt_path = f"/console/audit/events/{ids[0]}/receipt"
    early = await browser.get(receipt_path)
    assert early.status_code == 503
    assert "is not in a signed checkpoint yet" in early.text
    detail = await browser.get(f"/console/audit/events/{ids[0]}")
    assert "Not in a signed checkpoint yet" in detail.text
    size = _sign(quiet)
    detail = await browser.get(f"/console/audit/events/{ids[0]}")
    assert f"In the signed checkpoint of size {size}" in detail.text
    assert f'href="{receipt_path}"' in detail.text
    download = await browser.get(receipt_path)
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/json"
    assert download.headers["content-disposition"] == (
        f'attachment; filename="bastion-receipt-{ids[0]}.json"'
    )
    receipt = orjson.loads(download.content)
    assert receipt["tree_size"] == size
    assert orjson.loads(receipt["leaf"])["id"] == ids[0]
    # the same receipt the CLI and the admin API produce
    api = await (await quiet.dpop("audrey")).get(
        "/admin/v1/audit/proofs/inclusion", params={"event_id": ids[0]}
    )
    assert api.status_code == 200, api.text
    assert api.json() == receipt
    key = quiet.harness.services.audit.signer.verifier.text
    assert verify_receipt(receipt, [parse_verifier_key(key)]).ok
    saved = tmp_path / "receipt.json"
    saved.write_bytes(download.content)
    with pytest.raises(SystemExit) as done:
        offline.main(["receipt", "--key", key, str(saved)])
    assert done.value.code == 0
    assert f"VERIFIED: entry {receipt['index']} is in" in capsys.readouterr().out
    # an edited receipt does not verify (the check can fail)
    receipt["leaf"] = receipt["leaf"].replace('"alice"', '"mallory"')
    saved.write_bytes(orjson.dumps(receipt))
    with pytest.raises(SystemExit) as refused:
        offline.main(["receipt", "--key", key, str(saved)])
    assert refused.value.code == 1
    assert "inclusion" in capsys.readouterr().out


async def test_an_unknown_or_malformed_event_id_is_a_404_page(quiet: Console) -> None:
    browser = await quiet.signed_in("audrey")
    for path in (
        "/console/audit/events/ev_00000000000000000000",
        "/console/audit/events/ev_00000000000000000000/receipt",
        "/console/audit/events/%3Cb%3Ex%3C%2Fb%3E",
        "/console/audit/events/" + "a" * 33 + "/receipt",
    ):
        page = await browser.get(path)
        assert page.status_code == 404, path
        assert "<h1>Not found</h1>" in page.text
        assert "<b>x</b>" not in page.text
        assert "content-disposition" not in page.headers


async def test_markup_in_recorded_events_and_the_query_is_escaped(quiet: Console) -> None:
    _append(
        quiet,
        _request(quiet.clock(), EVIL, EVIL, allowed=False),
        AdminAction(
            actor="principal:root",
            action="lock.created",
            target_type="principal",
            target=EVIL,
            reason=EVIL,
        ),
    )
    browser = await quiet.signed_in("audrey")
    escaped = "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"
    listing = await browser.get("/console/audit", params={"principal": EVIL})
    assert listing.status_code == 200
    ids = _ROW.findall(listing.text)
    assert len(ids) == 2  # the request (principal) and the lock (its target)
    assert "<img src=x" not in listing.text
    assert "<script>alert" not in listing.text
    assert f'value="{escaped}"' in listing.text  # the search box echoes the query, escaped
    assert f"<td>{escaped}</td>" in listing.text  # the principal and model columns
    for event_id in ids:
        detail = await browser.get(f"/console/audit/events/{event_id}")
        assert detail.status_code == 200
        assert "<img src=x" not in detail.text
        assert "<script>alert" not in detail.text
        assert "&lt;img src=x" in detail.text
    refused = await browser.get("/console/audit", params={EVIL: "x"})
    assert refused.status_code == 400
    assert "<img src=x" not in refused.text


async def test_only_auditors_and_admins_open_the_audit_page(quiet: Console) -> None:
    _append(quiet, _request(quiet.clock(), "alice", "demo-chat"))
    _sign(quiet)
    with quiet.harness.services.store.read() as conn:
        (row,) = event_rows.search(conn, EventQuery(principal="alice", limit=1))
    for who in ("audrey", "root"):
        browser = await quiet.signed_in(who)
        assert (await browser.get("/console/audit")).status_code == 200
        assert (await browser.get(f"/console/audit/events/{row.id}/receipt")).status_code == 200
    alice = await quiet.signed_in_plain("alice")
    for path in (
        "/console/audit",
        "/console/audit/checkpoint",
        f"/console/audit/events/{row.id}",
        f"/console/audit/events/{row.id}/receipt",
    ):
        page = await alice.get(path)
        assert page.status_code == 403, path
        assert "may not open this page (audit_read)" in page.text
        assert "content-disposition" not in page.headers
