"""The running server notices an edit of its own audit database (threat T9) and fails closed:
within ~2 s the integrity status says tampered, `audit: required` compartments are refused while
others serve, nothing is signed, until an operator acknowledges — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import httpx2
import orjson
import pytest
import sqlalchemy as sa

from bastion.store import events as event_rows
from bastion.store.tables import audit_events
from bastion.testing import Harness, running
from tests.integration.conftest import People
from tests.waiting import eventually

pytestmark = pytest.mark.anyio
CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
FRONTIER = {"model": "cyber-frontier", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def server(
    tmp_path: Path,
    config_text: str,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Harness]:
    """Bastion with the default integrity interval (1 s) and a checkpoint every 0.2 s."""
    async with running(
        config_text,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
        checkpoint_interval=0.2,
    ) as harness:
        yield harness


@pytest.fixture
async def people(server: Harness) -> AsyncIterator[People]:
    crowd = People(server)
    yield crowd
    await crowd.close()


class Operator:
    """``bastion`` run as an operator runs it beside the server: another process, the same
    directory (config, state directory) and the same database."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        self.env |= {"BASTION_DATABASE_URL": database_url, "COLUMNS": "80"}

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "bastion", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result


@pytest.fixture
def operator(tmp_path: Path, database_url: str) -> Operator:
    return Operator(tmp_path, database_url)


async def status(people: People) -> dict[str, Any]:
    response = await (await people("audrey")).get("/admin/v1/audit/integrity")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for(
    people: People, done: Callable[[dict[str, Any]], bool], within: float = 20.0
) -> dict[str, Any]:
    """Poll the integrity route until ``done`` (failing after ``within`` seconds: the tests
    share the machine, so the bound is generous); the status then."""
    started = time.monotonic()
    while not done(current := await status(people)):
        assert time.monotonic() - started < within, f"not within {within}s: {current}"
        await asyncio.sleep(0.05)
    return current


async def passes(people: People, count: int) -> None:
    """Wait until the server's watch has finished ``count`` more passes."""
    seen = {(await status(people))["checked_at"]}

    def counted(current: dict[str, Any]) -> bool:
        seen.add(current["checked_at"])
        return len(seen) > count

    await wait_for(people, counted)


async def settled(server: Harness, people: People) -> int:
    """Everything queued is in the log and verified; returns the log's size."""
    await server.services.recorder.flush()
    with server.services.store.read() as conn:
        size = event_rows.size(conn)
    current = await wait_for(people, lambda s: s["verified_size"] >= size)
    assert current["state"] == "ok", current
    return size


def latest_checkpoint(server: Harness) -> int:
    with server.services.store.read() as conn:
        latest = event_rows.latest_checkpoint(conn)
    return 0 if latest is None else latest.size


def events_named(server: Harness, name: str) -> list[dict[str, Any]]:
    with server.services.store.read() as conn:
        return [orjson.loads(row.body) for row in event_rows.last(conn, 1000, name)]


def edit_body(server: Harness, index: int) -> tuple[str, str]:
    """Rewrite who did entry ``index``; its id and original body."""
    with server.services.store.begin() as conn:
        row = conn.execute(sa.select(audit_events).where(audit_events.c.idx == index)).one()
        forged = orjson.loads(row.body) | {"actor": "cli:nobody"}
        conn.execute(
            audit_events.update()
            .where(audit_events.c.idx == index)
            .values(body=orjson.dumps(forged, option=orjson.OPT_SORT_KEYS).decode())
        )
    return row.id, row.body


async def chat(people: People, who: str, body: dict[str, Any]) -> httpx.Response:
    return await (await people(who)).post("/v1/chat/completions", json=body)


async def test_an_edited_old_event_fails_closed_until_acknowledged(
    server: Harness, people: People, operator: Operator, caplog: pytest.LogCaptureFixture
) -> None:
    assert (await chat(people, "carol", FRONTIER)).status_code == 200
    assert (await chat(people, "alice", CHAT)).status_code == 200
    size = await settled(server, people)
    edited_id, original = edit_body(server, 2)

    found = await wait_for(people, lambda s: s["state"] == "tampered")  # the next pass finds it
    assert found["first_bad_index"] == 2
    assert found["problem"] == f"entry 2 ({edited_id}): event does not match its leaf"
    assert found["verified_size"] >= size

    refused = await chat(people, "carol", FRONTIER)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "audit_integrity"
    assert (await chat(people, "alice", CHAT)).status_code == 200  # best-effort: still served

    # written right after the state flips (which fails closed first)
    await eventually(lambda: events_named(server, "audit.tamper_detected"), what="the event")
    [detected] = events_named(server, "audit.tamper_detected")
    assert (detected["index"], detected["event_id"]) == (2, edited_id)
    assert detected["problem"] == found["problem"]
    signed = latest_checkpoint(server)
    await eventually(lambda: "refusing to sign" in caplog.text, what="a refused checkpoint")
    await asyncio.sleep(0.8)  # four more checkpoint intervals, the log has grown meanwhile
    await server.services.recorder.flush()
    assert latest_checkpoint(server) == signed
    with server.services.store.read() as conn:
        assert event_rows.size(conn) > signed

    with server.services.store.begin() as conn:  # restored from a backup: still held
        conn.execute(audit_events.update().where(audit_events.c.idx == 2).values(body=original))
    await passes(people, 3)
    assert (await status(people))["state"] == "tampered"

    result = operator("audit", "acknowledge-tamper", "--reason", "entry 2 restored from backup")
    assert result.returncode == 0, result.stderr
    assert "tamper mark cleared" in result.stdout
    await wait_for(people, lambda s: s["state"] == "ok")
    assert (await chat(people, "carol", FRONTIER)).status_code == 200
    [ack] = events_named(server, "audit.tamper_acknowledged")
    assert ack["reason"] == "entry 2 restored from backup"
    assert ack["actor"].startswith("cli:")
    await server.services.recorder.flush()
    with server.services.store.read() as conn:
        now = event_rows.size(conn)
    # signing resumes and covers what was appended while it was held
    await eventually(lambda: latest_checkpoint(server) >= now, what="the next checkpoint")


def _delete(conn: sa.Connection, index: int) -> None:
    conn.execute(audit_events.delete().where(audit_events.c.idx == index))


def _reorder(conn: sa.Connection, index: int) -> None:
    """Entries ``index`` and ``index + 1`` trade places (every column but the index)."""
    a, b = (
        conn.execute(sa.select(audit_events).where(audit_events.c.idx == i)).one()
        for i in (index, index + 1)
    )
    conn.execute(audit_events.update().where(audit_events.c.idx == index).values(id="tmp"))
    for idx, row in ((index + 1, a), (index, b)):
        conn.execute(
            audit_events.update()
            .where(audit_events.c.idx == idx)
            .values(id=row.id, name=row.name, time=row.time, body=row.body, leaf=row.leaf)
        )


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [(_delete, "entry 3 is missing"), (_reorder, "leaf hash differs from the tree")],
)
async def test_deleted_and_reordered_entries_are_found(
    server: Harness,
    people: People,
    tamper: Callable[[sa.Connection, int], None],
    problem: str,
) -> None:
    assert (await chat(people, "alice", CHAT)).status_code == 200
    await settled(server, people)
    with server.services.store.begin() as conn:
        tamper(conn, 3)
    found = await wait_for(people, lambda s: s["state"] == "tampered")
    assert found["first_bad_index"] == 3
    assert problem in found["problem"]


async def test_an_untouched_log_under_load_never_reports_tampered(
    server: Harness, people: People
) -> None:
    """Requests of both kinds, streams and admin changes append while passes and checkpoints
    run every few hundred milliseconds: no pass may mistake a growing log for an edited one."""
    clients = {who: await people(who) for who in ("alice", "bob", "carol")}
    seen: list[dict[str, Any]] = []

    async def load(who: str, body: dict[str, Any]) -> None:
        for i in range(15):
            stream = {**body, "stream": True} if i % 3 == 0 else body
            response = await clients[who].post("/v1/chat/completions", json=stream)
            assert response.status_code == 200

    async def admin() -> None:
        for i in range(6):
            server.services.locks.lock("principal", "victor", reason=f"drill {i}", author="t")
            await asyncio.sleep(0.1)

    loaded = asyncio.Event()

    async def watch() -> None:  # until the load has ended, however long that takes here
        while not loaded.is_set():
            seen.append(await status(people))
            await asyncio.sleep(0.1)

    async def loads() -> None:
        await asyncio.gather(
            load("alice", CHAT), load("bob", CHAT), load("carol", FRONTIER), admin()
        )
        loaded.set()

    await asyncio.gather(loads(), watch())
    assert len(seen) > 3  # the status was read while the log grew
    assert [s for s in seen if s["state"] != "ok"] == []
    assert await settled(server, people) > 50  # and all of it verified since
    assert events_named(server, "audit.tamper_detected") == []


async def test_only_auditors_read_the_integrity_status(server: Harness, people: People) -> None:
    alice = await (await people("alice")).get("/admin/v1/audit/integrity")
    assert alice.status_code == 403
    assert alice.json()["error"]["reasons"] == ["not_granted"]
    vendor = await (await people("victor")).get("/admin/v1/audit/integrity")
    assert vendor.status_code == 403
    async with server.client() as anonymous:
        nobody = await anonymous.get("/admin/v1/audit/integrity")
    assert nobody.status_code == 401
    assert set(await status(people)) == {
        "state",
        "verified_size",
        "first_bad_index",
        "problem",
        "checked_at",
        "verified_by",
    }


async def test_the_integrity_cli_and_its_bad_input(
    server: Harness, people: People, operator: Operator
) -> None:
    assert (await chat(people, "alice", CHAT)).status_code == 200
    size = await settled(server, people)
    ok = operator("audit", "integrity")
    assert ok.returncode == 0, ok.stderr
    verified = int(ok.stdout.removeprefix("audit log intact: ").split()[0])
    assert verified >= size  # everything the server wrote, and whatever came since
    refused = operator("audit", "acknowledge-tamper", "--reason", "nothing happened")
    assert refused.returncode == 1
    assert "the audit log is not marked tampered: nothing to acknowledge" in refused.stderr
    assert operator("audit", "acknowledge-tamper").returncode == 2  # --reason is required

    edited_id, _ = edit_body(server, 1)
    bad = operator("audit", "integrity")
    assert bad.returncode == 1
    assert "AUDIT LOG TAMPERED" in bad.stderr
    assert "first bad index: 1" in bad.stderr
    assert f"entry 1 ({edited_id}): event does not match its leaf" in bad.stderr
    assert "cli:nobody" not in bad.stdout + bad.stderr  # never the edited body
    assert f"checked now: entry 1 ({edited_id}): event does not match its leaf" in bad.stderr
    as_json = orjson.loads(operator("audit", "integrity", "--json").stdout)
    assert (as_json["state"], as_json["first_bad_index"]) == ("tampered", 1)
    found = await wait_for(people, lambda s: s["state"] == "tampered")
    assert found["first_bad_index"] == 1  # the server adopts the mark the CLI set, or finds it

    for reason, message in (
        ("", "acknowledging needs a reason of 1 to 500 printable characters"),
        ("x" * 501, "acknowledging needs a reason of 1 to 500 printable characters"),
        ("two\nlines", "acknowledging needs a reason of 1 to 500 printable characters"),
    ):
        result = operator("audit", "acknowledge-tamper", "--reason", reason)
        assert result.returncode == 1
        assert message in result.stderr
    assert events_named(server, "audit.tamper_acknowledged") == []
    assert (await status(people))["state"] == "tampered"
