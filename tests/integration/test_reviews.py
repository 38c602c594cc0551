"""Vendor access reviews through the admin API, and dormant principals, on SQLite and PostgreSQL.

Time: the review service takes a clock, so a review completed "31 days ago" is made by a review
service whose clock is 31 days behind, against the same store; the gateway then judges the next
review's due time with the real clock. Dormancy uses principals created (or last active) 40 days
ago the same way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import orjson
import pytest

from bastion.access.reviews import ReviewService
from bastion.errors import AccessDenied, InvalidGrant
from bastion.identity.principals import PrincipalService
from bastion.respond.locks import LockService
from bastion.store import events as event_rows
from bastion.store import principals as principal_rows
from bastion.store import reviews as review_rows
from bastion.store import state
from bastion.testing import Harness, running
from tests.integration.conftest import Cli, People

pytestmark = pytest.mark.anyio
DAY = 86400.0

REVIEW_CONFIG = """\
version: 1
upstreams:
  up: {base_url: "http://upstream.test/v1", api: openai, api_key_env: EXAMPLE_UPSTREAM_KEY}
models:
  - {name: demo-chat, upstream: up, upstream_model: example-gpt, compartment: general}
  - {name: secret-chat, upstream: up, upstream_model: example-gpt, compartment: secret}
  - {name: vault-chat, upstream: up, upstream_model: example-gpt, compartment: vault}
compartments:
  general:
    level: internal
    grants: {orgs: [lab, acme]}
  secret:
    level: restricted
    grants: {orgs: [lab, acme]}
  vault:
    level: restricted
    access: {approvals: 1, approvers: [bob]}
orgs:
  lab: {kind: internal}
  acme:
    kind: vendor
    sponsor: alice
    contract: {start: "2025-01-01T00:00:00Z", end: "2099-01-01T00:00:00Z"}
    review_every_days: 30
principals:
  alice: {kind: user, org: lab}
  bob: {kind: user, org: lab}
  mallory: {kind: user, org: lab}
  audrey: {kind: user, org: lab, roles: [auditor]}
  root: {kind: user, org: lab, roles: [admin]}
  v1: {kind: user, org: acme}
  v2: {kind: user, org: acme}
lifecycle: {dormant_after_days: 30}
"""


@pytest.fixture
async def rv(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Harness]:
    async with running(
        REVIEW_CONFIG,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
    ) as harness:
        yield harness  # the startup sweep has run: the lifespan awaits it


@pytest.fixture
async def people(rv: Harness) -> AsyncIterator[People]:
    crowd = People(rv)
    yield crowd
    await crowd.close()


async def use(people: People, who: str, model: str = "demo-chat") -> tuple[int, list[str]]:
    response = await (await people(who)).post(
        "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
    )
    if response.status_code == 200:
        return 200, []
    return response.status_code, response.json()["error"].get("reasons", [])


async def open_review(people: People, who: str = "alice") -> dict[str, Any]:
    response = await (await people(who)).get("/admin/v1/reviews", params={"open": "true"})
    assert response.status_code == 200, response.text
    [review] = response.json()["reviews"]
    return dict(review)


async def decide(
    people: People, who: str, review_id: str, principal: str, decision: str = "keep", **extra: Any
) -> httpx.Response:
    body = {"principal": principal, "decision": decision, "reason": "checked with acme", **extra}
    return await (await people(who)).post(f"/admin/v1/reviews/{review_id}/decisions", json=body)


async def complete(people: People, who: str, review_id: str) -> httpx.Response:
    return await (await people(who)).post(f"/admin/v1/reviews/{review_id}/complete")


def event_names(harness: Harness) -> list[str]:
    with harness.services.store.read() as conn:
        return [row.name for row in event_rows.last(conn, 500)]


def decisions(harness: Harness, review_id: str) -> list[review_rows.DecisionRow]:
    with harness.services.store.read() as conn:
        return review_rows.decisions_of(conn, review_id)


def shifted(harness: Harness, days: float) -> ReviewService:
    """A review service on the same store whose clock is ``days`` off the real one."""
    services = harness.services

    def clock() -> float:
        return time.time() + days * DAY

    return ReviewService(
        services.store, services.audit, LockService(services.store, services.audit), clock
    )


# -- opening ----------------------------------------------------------------------------------


async def test_one_review_opens_per_vendor_org(rv: Harness, people: People) -> None:
    review = await open_review(people)
    assert review["org"] == "acme"
    assert review["due_at"] == pytest.approx(review["opened_at"] + 30 * DAY)
    assert review["overdue"] is False
    assert review["completed_at"] is None

    await rv.services.sweeper.once()
    await rv.services.sweeper.once()
    listed = (await (await people("root")).get("/admin/v1/reviews")).json()["reviews"]
    assert [r["id"] for r in listed] == [review["id"]]  # one per vendor org; none for lab
    assert event_names(rv).count("review.opened") == 1


# -- deciding ---------------------------------------------------------------------------------


async def test_sponsor_keeps_one_and_removes_another(rv: Harness, people: People) -> None:
    asked = await (await people("v2")).post(
        "/admin/v1/access/requests",
        json={"target": "vault", "reason": "pentest", "duration_seconds": 3600},
    )
    request_id = asked.json()["id"]
    approved = await (await people("bob")).post(
        f"/admin/v1/access/requests/{request_id}/approve", json={"reason": "ok"}
    )
    assert approved.json()["status"] == "approved"
    assert await use(people, "v2", "vault-chat") == (200, [])
    assert await use(people, "v1") == (200, [])

    review_id = (await open_review(people))["id"]
    shown = (await (await people("alice")).get(f"/admin/v1/reviews/{review_id}")).json()
    by_name = {p["principal"]: p for p in shown["principals"]}
    assert set(by_name) == {"v1", "v2"}
    assert by_name["v1"]["standing"] == ["general", "secret"]
    assert [g["compartment"] for g in by_name["v2"]["grants"]] == ["vault"]
    assert by_name["v1"]["decision"] is None
    assert shown["overdue"] is False

    assert (await decide(people, "alice", review_id, "v1", "keep")).status_code == 200
    removed = await decide(people, "alice", review_id, "v2", "remove")
    assert removed.status_code == 200, removed.text
    assert removed.json()["decided_by"] == "alice"

    assert await use(people, "v2") == (403, ["locked_principal"])
    assert await use(people, "v1") == (200, [])
    assert [g for g in rv.services.access.grants() if g.principal == "v2"] == []
    [lock] = [lock for lock in rv.services.locks.active() if lock.target == "v2"]
    assert lock.reason == f"removed in access review {review_id}"

    shown = (await (await people("alice")).get(f"/admin/v1/reviews/{review_id}")).json()
    verdicts = {p["principal"]: p["decision"]["decision"] for p in shown["principals"]}
    assert verdicts == {"v1": "keep", "v2": "remove"}

    done = await complete(people, "alice", review_id)
    assert done.status_code == 200, done.text
    assert done.json()["completed_by"] == "alice"
    names = event_names(rv)
    for name in ("review.decided", "lock.created", "grant.revoked", "review.completed"):
        assert name in names

    await rv.services.sweeper.once()  # the next review opens, due a period after completion
    following = await open_review(people)
    assert following["id"] != review_id
    assert following["due_at"] == pytest.approx(done.json()["completed_at"] + 30 * DAY)


async def test_only_the_sponsor_or_an_admin_decides(rv: Harness, people: People) -> None:
    review_id = (await open_review(people))["id"]

    stranger = await decide(people, "mallory", review_id, "v1")
    assert stranger.status_code == 403
    assert stranger.json()["error"]["reasons"] == ["not_a_reviewer"]
    assert (await (await people("mallory")).get("/admin/v1/reviews")).json()["reviews"] == []
    hidden = await (await people("mallory")).get(f"/admin/v1/reviews/{review_id}")
    assert hidden.status_code == 403

    vendor = await decide(people, "v1", review_id, "v2")
    assert vendor.status_code == 403
    assert vendor.json()["error"]["reasons"] == ["vendor_control_plane"]
    assert (await (await people("v1")).get("/admin/v1/reviews")).status_code == 403
    assert (await complete(people, "v1", review_id)).status_code == 403

    auditor = await people("audrey")
    assert (await auditor.get(f"/admin/v1/reviews/{review_id}")).status_code == 200
    assert (await decide(people, "audrey", review_id, "v1")).status_code == 403
    assert (await complete(people, "mallory", review_id)).status_code == 403
    assert decisions(rv, review_id) == []

    config = rv.services.holder.current.config
    with pytest.raises(AccessDenied) as caught:  # the service refuses vendors on its own too
        rv.services.reviews.decide(config, review_id, "v2", "v1", decision="keep", reason="x")
    assert caught.value.reasons == ("vendor_control_plane",)

    assert (await decide(people, "root", review_id, "v1")).status_code == 200
    [row] = decisions(rv, review_id)
    assert (row.principal, row.decided_by) == ("v1", "root")


async def test_completing_needs_a_decision_for_every_principal(rv: Harness, people: People) -> None:
    review_id = (await open_review(people))["id"]
    assert (await decide(people, "alice", review_id, "v1")).status_code == 200
    refused = await complete(people, "alice", review_id)
    assert refused.status_code == 409
    assert "1 principal(s) of 'acme' have no decision yet: v2" in refused.json()["error"]["message"]
    assert rv.services.reviews.get(review_id).completed_at is None

    # A principal who joins the org during the review needs a decision too.
    config = rv.services.holder.current.config
    rv.services.principals.add(config, "v3", kind="user", org="acme", author="test")
    await rv.reload()
    assert (await decide(people, "alice", review_id, "v2")).status_code == 200
    late = await complete(people, "alice", review_id)
    assert late.status_code == 409
    assert "v3" in late.json()["error"]["message"]
    assert (await decide(people, "alice", review_id, "v3")).status_code == 200
    assert (await complete(people, "alice", review_id)).status_code == 200


# -- overdue ----------------------------------------------------------------------------------


async def test_an_overdue_review_suspends_restricted_access_until_done(
    rv: Harness, people: People
) -> None:
    config = rv.services.holder.current.config
    first = (await open_review(people))["id"]
    month_ago = shifted(rv, -31)  # the last review was completed 31 days ago
    for principal in ("v1", "v2"):
        month_ago.decide(config, first, principal, "alice", decision="keep", reason="fine")
    month_ago.complete(config, first, "alice")
    await rv.services.sweeper.once()  # opens the next one, due 30 days after that: yesterday

    review = await open_review(people)
    assert review["overdue"] is True
    assert await use(people, "v1", "secret-chat") == (403, ["review_overdue"])
    assert await use(people, "v1", "demo-chat") == (200, [])  # internal stays reachable
    assert await use(people, "alice", "secret-chat") == (200, [])  # internal orgs: no review

    for principal in ("v1", "v2"):
        assert (await decide(people, "alice", review["id"], principal)).status_code == 200
    assert (await complete(people, "alice", review["id"])).status_code == 200
    assert await use(people, "v1", "secret-chat") == (200, [])
    await rv.services.sweeper.once()
    assert (await open_review(people))["overdue"] is False


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "extra", "status", "needle"),
    [
        ("nobody", {}, 404, "no principal named 'nobody'"),
        ("bob", {}, 400, "'bob' is not a principal of org 'acme'"),
        ("v1", {"decision": "maybe"}, 400, "decision"),
        ("v1", {"reason": "x" * 501}, 400, "reason"),
        ("v1", {"reason": ""}, 400, "reason"),
        ("v1", {"reason": "   "}, 400, "a reason of 1 to 500 characters"),
        ("v1", {"note": 1}, 400, "note"),
        ("v" * 65, {}, 400, "principal"),
    ],
)
async def test_bad_decisions_change_nothing(
    rv: Harness,
    people: People,
    principal: str,
    extra: dict[str, object],
    status: int,
    needle: str,
) -> None:
    review_id = (await open_review(people))["id"]
    response = await decide(people, "alice", review_id, principal, **extra)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]["message"]
    assert decisions(rv, review_id) == []
    assert rv.services.locks.active() == []


async def test_unknown_and_finished_reviews(rv: Harness, people: People) -> None:
    alice = await people("alice")
    for response in (
        await alice.get("/admin/v1/reviews/rv_nope"),
        await decide(people, "alice", "rv_nope", "v1"),
        await complete(people, "alice", "rv_nope"),
    ):
        assert response.status_code == 404
        assert "no access review 'rv_nope'" in response.json()["error"]["message"]

    review_id = (await open_review(people))["id"]
    assert (await decide(people, "alice", review_id, "v1")).status_code == 200
    again = await decide(people, "alice", review_id, "v1", "remove")
    assert again.status_code == 409
    assert "already has a decision" in again.text
    assert (await decide(people, "alice", review_id, "v2")).status_code == 200
    assert (await complete(people, "alice", review_id)).status_code == 200

    late = await decide(people, "alice", review_id, "v1", "remove")
    assert late.status_code == 409
    assert "already completed" in late.json()["error"]["message"]
    assert (await complete(people, "alice", review_id)).status_code == 409
    assert rv.services.locks.active() == []  # the refused removal locked nobody


# -- dormancy ---------------------------------------------------------------------------------


async def test_a_dormant_principal_gets_no_token_until_enabled(rv: Harness, people: People) -> None:
    services = rv.services
    config = services.holder.current.config
    long_ago = PrincipalService(services.store, services.audit, lambda: time.time() - 40 * DAY)
    long_ago.add(config, "olddie", kind="service", org="lab", author="test")
    profile = await rv.enroll("olddie")

    async with rv.client(profile) as client:
        with pytest.raises(InvalidGrant, match="dormant"):
            await client.post("/v1/models")

    await services.sweeper.once()
    await services.sweeper.once()
    assert disabled_events(rv, "olddie") == 1  # recorded once, however many sweeps

    services.dormancy.enable("olddie", author="test", reason="back from leave")
    await rv.reload()
    assert "principal.enabled" in event_names(rv)
    async with rv.client(profile) as client:
        response = await client.post(
            "/v1/chat/completions",
            json={"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert response.status_code == 200


async def test_a_live_token_of_a_dormant_principal_is_refused(rv: Harness, people: People) -> None:
    before = time.time()
    assert await use(people, "v1") == (200, [])
    with rv.services.store.read() as conn:
        row = principal_rows.get(conn, "v1")
    assert row is not None
    assert row.last_active_at is not None
    assert row.last_active_at >= before  # the token grant counted as activity
    with rv.services.store.begin() as conn:  # v1's last token was issued 40 days ago
        principal_rows.touch(conn, "v1", time.time() - 40 * DAY)
        state.bump_epoch(conn)
    await rv.reload()
    assert await use(people, "v1") == (403, ["dormant_principal"])
    async with rv.client(rv.profiles["v1"]) as fresh:
        with pytest.raises(InvalidGrant, match="dormant"):
            await fresh.post("/v1/models")


async def test_the_sweep_refreshes_a_snapshot_that_would_call_an_active_principal_dormant(
    rv: Harness,
) -> None:
    services = rv.services
    config = services.holder.current.config
    long_ago = PrincipalService(services.store, services.audit, lambda: time.time() - 40 * DAY)
    long_ago.add(config, "busy", kind="service", org="lab", author="test")
    await rv.reload()
    assert services.holder.current.dormant("busy", time.time())
    with services.store.begin() as conn:  # a token grant: activity, without an epoch bump
        principal_rows.touch(conn, "busy", time.time())
    assert services.holder.current.dormant("busy", time.time())  # the snapshot lags

    epoch = services.holder.current.epoch
    await services.sweeper.once()
    assert services.holder.current.epoch > epoch
    assert not services.holder.current.dormant("busy", time.time())
    assert disabled_events(rv, "busy") == 0  # active in the store: never recorded as dormant


async def test_the_startup_sweep_is_done_before_the_process_serves(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> None:
    def start() -> contextlib.AbstractAsyncContextManager[Harness]:
        return running(
            REVIEW_CONFIG,
            tmp_path,
            upstream=upstream_transport,
            env=upstream_env,
            database_url=database_url,
        )

    async with start() as first:
        services = first.services
        long_ago = PrincipalService(services.store, services.audit, lambda: time.time() - 40 * DAY)
        config = services.holder.current.config
        long_ago.add(config, "sleepy", kind="service", org="lab", author="test")
        assert disabled_events(first, "sleepy") == 0  # the next sweep is an interval away
    async with start() as second:
        assert disabled_events(second, "sleepy") == 1  # swept on the way up, not after
        assert second.services.holder.current.dormant("sleepy", time.time())


def disabled_events(harness: Harness, principal: str) -> int:
    with harness.services.store.read() as conn:
        rows = event_rows.last(conn, 500)
    return sum(
        1
        for row in rows
        if row.name == "principal.disabled" and orjson.loads(row.body)["target"] == principal
    )


def test_principal_enable_from_the_cli(admin_cli: Cli) -> None:
    enabled = admin_cli("principal", "enable", "victor", "--reason", "back from leave")
    assert enabled.code == 0, enabled.err
    assert "enabled victor" in enabled.out
    with admin_cli.store.read() as conn:
        row = principal_rows.get(conn, "victor")
        events = [e for e in event_rows.last(conn, 50) if e.name == "principal.enabled"]
    assert row is not None
    assert row.last_active_at is not None
    assert len(events) == 1
    assert orjson.loads(events[0].body)["reason"] == "back from leave"

    missing = admin_cli("principal", "enable", "nobody")
    assert missing.code == 1
    assert "no principal named 'nobody'" in missing.err
    too_long = admin_cli("principal", "enable", "victor", "--reason", "x" * 501)
    assert too_long.code == 1
    assert "limited to 500 characters" in too_long.err
    with admin_cli.store.read() as conn:
        assert sum(1 for e in event_rows.last(conn, 50) if e.name == "principal.enabled") == 1
