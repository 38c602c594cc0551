"""The Access page: approve / deny with the two-person rule visible, grants with countdowns,
vendors and compartments; refusals are clear pages that change nothing; input is escaped."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from bastion.store import access as access_rows
from bastion.store import events as event_rows
from bastion.store.access import RequestRow

from .conftest import Browser, Console

pytestmark = pytest.mark.anyio

DAY = 86400.0


async def _ask(console: Console, who: str, reason: str = "incident 42 triage") -> str:
    """``who`` asks for the frontier compartment through the admin API, as the CLI does."""
    client = await console.dpop(who)
    response = await client.post(
        "/admin/v1/access/requests",
        json={"target": "frontier", "reason": reason, "duration_seconds": 7200},
    )
    assert response.status_code == 200, response.text
    request_id = response.json()["id"]
    assert isinstance(request_id, str)
    return request_id


async def _signed_in(console: Console, who: str) -> Browser:
    """Signed in and on the Access page (bob and alice hold no role: no overview for them)."""
    browser = await console.signed_in_plain(who)
    await browser.load_csrf("/console/access")
    return browser


async def _events(console: Console, name: str) -> list[dict[str, Any]]:
    await console.settle()
    with console.harness.services.store.read() as conn:
        rows = event_rows.after(conn, -1, limit=100_000)
    found = []
    for row in rows:
        if row.name == name:
            body = orjson.loads(row.body)
            assert isinstance(body, dict)
            found.append(body)
    return found


def _article(html: str, request_id: str) -> str:
    match = re.search(
        rf'<article class="request" data-request="{request_id}">(.*?)</article>', html, re.S
    )
    assert match is not None, html[:2000]
    return match.group(1)


def _status(console: Console, request_id: str) -> str:
    return console.harness.services.access.get(request_id).status


async def test_two_approvers_turn_a_request_into_a_grant(console: Console) -> None:
    request_id = await _ask(console, "alice")
    bob = await _signed_in(console, "bob")
    page = await bob.get("/console/access")
    assert page.status_code == 200
    card = _article(page.text, request_id)
    assert "0 of 2 approvals" in card
    assert "still needed: 2 more from bob, audrey" in card
    assert f'action="/console/access/requests/{request_id}/approve"' in card
    assert 'id="grants"' not in page.text  # bob holds no directory_read

    done = await bob.post(
        f"/console/access/requests/{request_id}/approve",
        {"csrf": bob.csrf, "reason": "on call this week"},
    )
    assert done.status_code == 303
    assert done.headers["location"].startswith(
        f"/console/access?notice=approved&request={request_id}"
    )
    after = await bob.get(done.headers["location"])
    assert "still needs more approvals" in after.text
    card = _article(after.text, request_id)
    assert "1 of 2 approvals" in card
    assert "bob" in card
    assert "on call this week" in card
    assert "still needed: 1 more from audrey" in card
    assert "/approve" not in card  # bob decided: no second vote offered
    assert _status(console, request_id) == "pending"
    (approved,) = await _events(console, "access.approved")
    assert approved["actor"] == "bob"

    audrey = await _signed_in(console, "audrey")
    done = await audrey.post(
        f"/console/access/requests/{request_id}/approve", {"csrf": audrey.csrf, "reason": ""}
    )
    assert done.status_code == 303
    assert "notice=granted" in done.headers["location"]
    assert _status(console, request_id) == "approved"
    page = await audrey.get("/console/access")
    assert f'data-request="{request_id}"' not in page.text
    (grant,) = console.harness.services.access.grants()
    row = re.search(rf'<tr data-grant="{grant.id}">(.*?)</tr>', page.text, re.S)
    assert row is not None
    assert "alice" in row.group(1)
    assert "frontier" in row.group(1)
    assert 'class="countdown" data-seconds="7200">2 h 00 min<' in row.group(1)
    assert [e["actor"] for e in await _events(console, "access.approved")] == ["bob", "audrey"]
    assert len(await _events(console, "grant.created")) == 1
    # the grant counts at once in this process: alice may now call the frontier model
    alice = await console.dpop("alice")
    frontier = {"model": "cyber-frontier", "messages": [{"role": "user", "content": "hi"}]}
    assert (await alice.post("/v1/chat/completions", json=frontier)).status_code == 200


async def test_a_denial_needs_a_reason_and_closes_the_request(console: Console) -> None:
    request_id = await _ask(console, "alice")
    audrey = await _signed_in(console, "audrey")
    before = await console.audit_names()
    path = f"/console/access/requests/{request_id}/deny"
    for data in ({"csrf": audrey.csrf}, {"csrf": audrey.csrf, "reason": "   "}):
        refused = await audrey.post(path, data)
        assert refused.status_code == 400
        assert "a denial needs a reason" in refused.text
    assert await console.audit_names() == before
    assert _status(console, request_id) == "pending"

    done = await audrey.post(path, {"csrf": audrey.csrf, "reason": "no incident open"})
    assert done.status_code == 303
    assert "notice=denied" in done.headers["location"]
    assert _status(console, request_id) == "denied"
    (denied,) = await _events(console, "access.denied")
    assert (denied["actor"], denied["reason"]) == ("audrey", "no incident open")
    again = await audrey.post(
        f"/console/access/requests/{request_id}/approve", {"csrf": audrey.csrf}
    )
    assert again.status_code == 409
    assert "already denied" in again.text


async def test_the_requester_cannot_approve_their_own_request(console: Console) -> None:
    request_id = await _ask(console, "bob")  # bob is an approver of frontier, but asks himself
    bob = await _signed_in(console, "bob")
    card = _article((await bob.get("/console/access")).text, request_id)
    assert "This is your own request" in card
    assert "/approve" not in card
    assert "still needed: 2 more from audrey" in card  # never the requester
    before = await console.audit_names()
    refused = await bob.post(
        f"/console/access/requests/{request_id}/approve", {"csrf": bob.csrf, "reason": "me"}
    )
    assert refused.status_code == 403
    assert "the requester cannot approve their own request" in refused.text
    assert "Traceback" not in refused.text
    assert await console.audit_names() == before
    assert _status(console, request_id) == "pending"
    with console.harness.services.store.read() as conn:
        assert access_rows.approvals_of(conn, request_id) == []


async def test_bad_form_input_is_refused_clearly_and_changes_nothing(console: Console) -> None:
    request_id = await _ask(console, "alice")
    audrey = await _signed_in(console, "audrey")
    root = await console.signed_in("root")  # an admin, but not an approver of frontier
    before = await console.audit_names()
    approve = f"/console/access/requests/{request_id}/approve"
    cases: list[tuple[Browser, str, dict[str, str], int, str]] = [
        (audrey, "/console/access/requests/rq_000000000000/approve", {}, 404, "no access request"),
        (audrey, "/console/access/requests/x/approve", {}, 404, "no such access request"),
        (audrey, "/console/access/requests/RQ_<b>/deny", {"reason": "x"}, 404, "no such access"),
        (audrey, approve, {"reason": "x" * 501}, 400, "longer than 500 characters"),
        (audrey, approve, {"reason": "x" * 2001}, 400, "longer than 2000 characters"),
        (audrey, approve, {"reason": "bad\x00byte"}, 400, "control characters"),
        (
            root,
            approve,
            {"reason": "ok"},
            403,
            "&#39;root&#39; is not an approver of &#39;frontier&#39;",
        ),
    ]
    for browser, path, data, status, message in cases:
        response = await browser.post(path, {"csrf": browser.csrf, **data})
        assert response.status_code == status, (path, data, response.text[:300])
        assert message in response.text, (path, data)
    get = await audrey.get(approve)
    assert get.status_code == 405  # a decision is never a GET
    assert await console.audit_names() == before
    assert _status(console, request_id) == "pending"


async def test_markup_in_names_reasons_and_comments_is_escaped(console: Console) -> None:
    request_id = await _ask(console, "alice", reason='<script>alert("r")</script><b>bold</b>')
    bob = await _signed_in(console, "bob")
    done = await bob.post(
        f"/console/access/requests/{request_id}/approve",
        {"csrf": bob.csrf, "reason": "<img src=x onerror=alert(1)>"},
    )
    assert done.status_code == 303
    # a request whose requester is no principal (e.g. written by an older version): shown, inert
    now = console.clock()
    with console.harness.services.store.begin() as conn:
        access_rows.add_request(
            conn,
            RequestRow(
                "rq_00000000abcd",
                '<i id="x">mallory</i>',
                "frontier",
                "<u>why</u>",
                3600.0,
                "pending",
                now,
                now + 3600,
                None,
            ),
        )
    audrey = await _signed_in(console, "audrey")
    html = (await audrey.get("/console/access")).text
    for raw in ("<script>alert", "<b>bold", "<img src=x", '<i id="x">', "<u>why"):
        assert raw not in html, raw
    assert "&lt;script&gt;alert(&#34;r&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;i id=&#34;x&#34;&gt;mallory&lt;/i&gt;" in html
    injected = _article(html, "rq_00000000abcd")
    assert "nobody eligible is left" in injected  # the service could not place its requester
    assert "/approve" not in injected


async def test_vendors_compartments_and_an_overdue_review(console: Console) -> None:
    services = console.harness.services
    config = services.holder.require().config
    services.reviews.open_due(config)  # (the lifecycle sweep may have opened it already)
    (opened,) = services.reviews.reviews(config, "audrey", open_only=True)
    console.clock.advance(91 * DAY)  # the 90-day review of acme is now past due
    await console.harness.reload()
    audrey = await _signed_in(console, "audrey")
    html = (await audrey.get("/console/access")).text
    vendor = re.search(r'<tr data-vendor="acme" class="overdue">(.*?)</tr>', html, re.S)
    assert vendor is not None, html[:3000]
    row = vendor.group(1)
    assert "alice" in row  # the sponsor
    assert "2026-01-01 00:00 UTC → 2099-01-01 00:00 UTC" in row
    assert "1 / no limit" in row  # victor holds a seat
    assert f"{opened.id} overdue since" in row
    assert ">overdue<" in row
    frontier = re.search(r'data-compartment="frontier">(.*?)</article>', html, re.S)
    assert frontier is not None
    text = frontier.group(1)
    assert "level-critical" in text
    assert "cyber-frontier" in text
    assert "<dt>standing grants</dt><dd>carol</dd>" in text
    for control in ("token binding", "approval rule", "2 of [bob, audrey]", "max grant", "8 h"):
        assert control in text, control
    # alice (no role) sees pending requests only, and may not decide on her own
    alice = await _signed_in(console, "alice")
    page = await alice.get("/console/access")
    assert page.status_code == 200
    assert 'id="vendors"' not in page.text
    assert 'id="compartments"' not in page.text


async def test_anonymous_and_vendor_visitors_cannot_decide(console: Console) -> None:
    request_id = await _ask(console, "alice")
    path = f"/console/access/requests/{request_id}/approve"
    session_id = console.guard.sessions.start("victor", method="link", mfa_pending=False)
    before = await console.audit_names()
    anonymous = await console.browser().post(path, {"csrf": "x", "reason": "x"})
    assert anonymous.status_code in (303, 403)
    vendor = console.browser()
    vendor.client.cookies.set("bastion_console", session_id, domain="bastion.test", path="/console")
    for target in ("/console/access", path):
        response = await (vendor.get(target) if target.endswith("access") else vendor.post(target))
        assert response.status_code == 403, target
        assert "vendor_control_plane" in response.text
    # nothing changed; the vendor's two refusals are on record for detection (D13)
    assert await console.audit_names() == [*before, "admin.denied", "admin.denied"]
    assert _status(console, request_id) == "pending"
