"""The integrity watch: every kind of edit of the stored log is found, old entries included; the
tampered state is sticky, shared through the database, and cleared only by an acknowledgement."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from bastion.audit import keys as audit_keys
from bastion.audit.checkpointer import Checkpointer
from bastion.audit.commitment import Committer, canonical
from bastion.audit.events import AdminAction, AuditTamperDetected
from bastion.audit.integrity import IntegrityWatch
from bastion.audit.log import AuditLog
from bastion.audit.merkle import Frontier, leaf_hash
from bastion.audit.recorder import AuditRecorder, AuditTampered
from bastion.audit.verify import verify_log
from bastion.errors import BadRequest, Conflict
from bastion.store import Store
from bastion.store import events as rows
from bastion.store import integrity as tamper_rows
from bastion.store.tables import audit_checkpoints, audit_events, audit_nodes, state

ENTRIES = 120


def admin_event(i: int) -> AdminAction:
    return AdminAction(
        actor="cli:test",
        action="principal.created",
        target_type="principal",
        target=f"user{i:03d}",
        reason="onboarding",
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = Store(f"sqlite:///{tmp_path / 'bastion.db'}")
    db.migrate()
    yield db
    db.close()


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    keys = audit_keys.load_or_create(tmp_path / "state")
    return AuditLog(Committer(keys.salt), keys.signer, keys.origin)


def append(store: Store, audit: AuditLog, start: int, count: int, *, sign: bool = True) -> None:
    with store.begin() as conn:
        audit.append(conn, [admin_event(i) for i in range(start, start + count)])
        if sign:
            audit.checkpoint(conn)


@pytest.fixture
def logged(store: Store, audit: AuditLog) -> tuple[Store, AuditLog]:
    """A log of ENTRIES events with a checkpoint after every 40."""
    for start in range(0, ENTRIES, 40):
        append(store, audit, start, 40)
    return store, audit


def watch(store: Store, audit: AuditLog, **limits: Any) -> IntegrityWatch:
    return IntegrityWatch(store, audit, clock=lambda: 1000.0, **limits)


def body_of(store: Store, index: int) -> str:
    with store.read() as conn:
        return str(
            conn.execute(
                sa.select(audit_events.c.body).where(audit_events.c.idx == index)
            ).scalar_one()
        )


def set_body(store: Store, index: int, body: str, **columns: Any) -> None:
    with store.begin() as conn:
        conn.execute(
            audit_events.update().where(audit_events.c.idx == index).values(body=body, **columns)
        )


def edit_body(store: Store, index: int) -> str:
    """Change who did it (what an attacker covering tracks would do); returns the original."""
    original = body_of(store, index)
    set_body(store, index, original.replace('"actor":"cli:test"', '"actor":"cli:other"'))
    return original


def tamper_events(store: Store) -> list[dict[str, Any]]:
    with store.read() as conn:
        found = rows.last(conn, 1000, AuditTamperDetected.name)
    return [orjson.loads(row.body) for row in found]


def test_an_untouched_log_stays_ok_while_it_grows(logged: tuple[Store, AuditLog]) -> None:
    store, audit = logged
    w = watch(store, audit, new_per_pass=50, recheck_per_pass=30)
    for round_ in range(12):  # the tip catches up, re-check cycles wrap, new entries keep coming
        append(store, audit, 1000 + round_ * 7, 7, sign=round_ % 2 == 0)
        status = w.check()
        assert status["state"] == "ok", status
    assert status["verified_size"] == ENTRIES + 12 * 7
    assert status == {
        "state": "ok",
        "verified_size": ENTRIES + 84,
        "first_bad_index": None,
        "problem": None,
        "checked_at": 1000.0,
        "verified_by": "this process",
    }
    assert tamper_events(store) == []


def test_a_following_watch_verifies_nothing_and_adopts_the_verifiers_mark(
    logged: tuple[Store, AuditLog],
) -> None:
    """A cluster gateway's watch (verify=False) leaves the work to the worker's and refuses as
    soon as the worker's verification marks the log tampered."""
    store, audit = logged
    follower, verifier = watch(store, audit, verify=False), watch(store, audit)
    assert follower.check()["verified_size"] == 0
    assert follower.check()["verified_by"] == "the worker"
    edit_body(store, 3)
    assert follower.check()["state"] == "ok"  # it does not look at the entries itself
    assert verifier.check()["state"] == "tampered"
    status = follower.check()
    assert status["state"] == "tampered"
    assert status["first_bad_index"] == 3
    assert follower.tampered
    assert len(tamper_events(store)) == 1  # recorded once, by the process that found it


def test_an_edited_body_trips_the_watch_and_is_recorded_once(
    logged: tuple[Store, AuditLog],
) -> None:
    store, audit = logged
    w = watch(store, audit)
    assert w.check()["state"] == "ok"
    edit_body(store, 57)
    status = w.check()
    assert status["state"] == "tampered"
    assert status["first_bad_index"] == 57
    assert status["problem"].startswith("entry 57 (")
    assert status["problem"].endswith("): event does not match its leaf")
    assert "cli:other" not in status["problem"]  # the problem names the entry, never its body
    with store.read() as conn:
        edited_id = rows.after(conn, 56, 1)[0].id
    w.check()
    other = watch(store, audit)  # another process (or this one restarted) adopts the mark
    assert other.check()["state"] == "tampered"
    assert other.status()["first_bad_index"] == 57
    assert other.status()["problem"] == status["problem"]  # as its detection event tells it
    [event] = tamper_events(store)
    assert (event["index"], event["event_id"]) == (57, edited_id)
    assert event["actor"] == "bastion:integrity"
    assert event["problem"] == status["problem"]


def test_old_entries_are_rechecked_within_a_bounded_number_of_passes(
    logged: tuple[Store, AuditLog],
) -> None:
    """Verified long ago, edited now: the rolling re-check of 25 entries a pass finds an edit of
    entry 3 within one cycle over the 120 verified entries (at most 5 passes + 1)."""
    store, audit = logged
    w = watch(store, audit, recheck_per_pass=25)
    w.check()
    w.check()  # the re-check is mid-cycle, past entry 3
    edit_body(store, 3)
    passes = 0
    while w.check()["state"] == "ok":
        passes += 1
        assert passes <= 6
    assert w.status()["first_bad_index"] == 3


@pytest.mark.parametrize(
    ("tamper", "index", "words"),
    [
        ("delete", 70, "entry 70 is missing"),
        ("delete_last", ENTRIES - 1, f"entries {ENTRIES - 1}..{ENTRIES - 1} are gone"),
        ("swap", 20, "leaf hash differs from the tree"),
        ("rename", 88, "its id, name or time column differs"),
        ("retime", 89, "its id, name or time column differs"),
        ("leaf_and_body", 5, "leaf hash differs from the tree"),
        ("leaf_node", 6, "leaf hash differs from the tree"),
    ],
)
def test_each_kind_of_edit_is_found_with_its_index(
    logged: tuple[Store, AuditLog], tamper: str, index: int, words: str
) -> None:
    store, audit = logged
    w = watch(store, audit)
    assert w.check()["state"] == "ok"
    with store.begin() as conn:
        _TAMPERS[tamper](conn, audit, index)
    status = w.check()
    assert status["state"] == "tampered", status
    assert status["first_bad_index"] == index
    assert words in status["problem"]


def _delete(conn: sa.Connection, _audit: AuditLog, index: int) -> None:
    conn.execute(audit_events.delete().where(audit_events.c.idx == index))


def _swap(conn: sa.Connection, _audit: AuditLog, index: int) -> None:
    a, b = (
        conn.execute(sa.select(audit_events).where(audit_events.c.idx == i)).one()
        for i in (index, index + 1)
    )
    conn.execute(audit_events.update().where(audit_events.c.idx == index).values(id="tmp"))
    for idx, row in ((index + 1, a), (index, b)):
        conn.execute(
            audit_events.update()
            .where(audit_events.c.idx == idx)
            .values(id=row.id, body=row.body, leaf=row.leaf, time=row.time)
        )


def _column(name: str, value: Any) -> Any:
    def edit(conn: sa.Connection, _audit: AuditLog, index: int) -> None:
        conn.execute(audit_events.update().where(audit_events.c.idx == index).values({name: value}))

    return edit


def _leaf_and_body(conn: sa.Connection, audit: AuditLog, index: int) -> None:
    """The attacker holds the salt: body and leaf agree, only the tree disagrees."""
    body = conn.execute(sa.select(audit_events.c.body).where(audit_events.c.idx == index))
    record = orjson.loads(body.scalar_one())
    record["target"] = "someone-else"
    conn.execute(
        audit_events.update()
        .where(audit_events.c.idx == index)
        .values(body=canonical(record).decode(), leaf=audit.committer.leaf(record).decode())
    )


def _leaf_node(conn: sa.Connection, _audit: AuditLog, index: int) -> None:
    conn.execute(
        audit_nodes.update()
        .where(audit_nodes.c.level == 0, audit_nodes.c.idx == index)
        .values(hash=leaf_hash(b"forged"))
    )


_TAMPERS = {
    "delete": _delete,
    "delete_last": _delete,
    "swap": _swap,
    "rename": _column("name", "token.issued"),
    "retime": _column("time", 1.0),
    "leaf_and_body": _leaf_and_body,
    "leaf_node": _leaf_node,
}


def test_a_swap_with_its_tree_nodes_is_caught_by_the_signed_roots(
    logged: tuple[Store, AuditLog],
) -> None:
    store, audit = logged
    w = watch(store, audit)
    w.check()
    with store.begin() as conn:
        _swap(conn, audit, 30)
        nodes = {
            i: conn.execute(
                sa.select(audit_nodes.c.hash).where(
                    audit_nodes.c.level == 0, audit_nodes.c.idx == i
                )
            ).scalar_one()
            for i in (30, 31)
        }
        for idx, other in ((30, 31), (31, 30)):
            conn.execute(
                audit_nodes.update()
                .where(audit_nodes.c.level == 0, audit_nodes.c.idx == idx)
                .values(hash=nodes[other])
            )
    status = w.check()
    assert status["state"] == "tampered"
    assert "checkpoint 40: the recomputed root differs" in status["problem"]


def test_a_consistent_rewrite_after_verification_is_caught_by_the_remembered_root(
    store: Store, audit: AuditLog
) -> None:
    """An entry past the last checkpoint, rewritten after the watch verified it, with its leaf
    and every tree node recomputed: the log is self-consistent and nothing signed covers it, but
    the re-check recomputes another root than the one the watch remembered."""
    append(store, audit, 0, 10)
    append(store, audit, 10, 6, sign=False)  # entries 10..15: no checkpoint covers them
    w = watch(store, audit)
    assert w.check()["state"] == "ok"
    forged = admin_event(13).record() | {"target": "nobody"}
    with store.begin() as conn:
        original = conn.execute(sa.select(audit_events).where(audit_events.c.idx == 13)).one()
        forged |= {"id": original.id, "time": original.time}
        leaf = audit.committer.leaf(forged)
        conn.execute(
            audit_events.update()
            .where(audit_events.c.idx == 13)
            .values(body=canonical(forged).decode(), leaf=leaf.decode())
        )
        hashes = [
            bytes(h)
            for h in conn.execute(
                sa.select(audit_nodes.c.hash)
                .where(audit_nodes.c.level == 0)
                .order_by(audit_nodes.c.idx)
            ).scalars()
        ]
        hashes[13] = leaf_hash(leaf)
        conn.execute(audit_nodes.delete())
        frontier, nodes = Frontier(), []
        for h in hashes:
            nodes.extend(frontier.append(h))
        rows.insert_nodes(conn, nodes)
    with store.read() as conn:
        assert verify_log(conn, audit).ok  # offline verification cannot see this one
    status = w.check()
    assert status["state"] == "tampered"
    assert "entries before 16 changed after they were verified" in status["problem"]


def test_a_log_shorter_than_its_checkpoint_is_caught_at_once(
    logged: tuple[Store, AuditLog],
) -> None:
    store, audit = logged
    with store.begin() as conn:
        conn.execute(audit_events.delete().where(audit_events.c.idx >= 100))
    status = watch(store, audit).check()  # before verifying a single entry
    assert status["state"] == "tampered"
    assert status["first_bad_index"] == 100
    assert "checkpoint 120 was signed: entries 100..119 are gone" in status["problem"]


def test_tampered_is_sticky_until_acknowledged_and_the_ack_is_recorded(
    logged: tuple[Store, AuditLog],
) -> None:
    store, audit = logged
    w = watch(store, audit)
    w.check()
    original = edit_body(store, 44)
    assert w.check()["state"] == "tampered"
    found_now = w.verify_now()
    assert found_now is not None
    assert found_now.index == 44
    set_body(store, 44, original)  # restored from a backup: still tampered until acknowledged
    assert w.check()["state"] == "tampered"
    assert w.verify_now() is None  # what the operator checks before acknowledging
    assert watch(store, audit).check()["state"] == "tampered"  # and after a restart
    event = watch(store, audit).acknowledge("  restored entry 44 from the 02:00 backup ", "cli:op")
    status = w.check()
    assert status["state"] == "ok"
    assert status["verified_size"] == ENTRIES + 2  # from 0 again: the two new events included
    with store.read() as conn:
        [ack] = rows.last(conn, 1, "audit.tamper_acknowledged")
    body = orjson.loads(ack.body)
    assert ack.id == event.id
    assert (body["actor"], body["reason"]) == ("cli:op", "restored entry 44 from the 02:00 backup")
    assert body["detail"] == {"first_bad_index": 44}


def test_an_ack_without_repair_is_found_again(logged: tuple[Store, AuditLog]) -> None:
    store, audit = logged
    w = watch(store, audit)
    w.check()
    edit_body(store, 12)
    assert w.check()["state"] == "tampered"
    w.acknowledge("looking into it", "cli:op")
    status = w.check()
    assert status["state"] == "tampered"
    assert status["first_bad_index"] == 12
    assert len(tamper_events(store)) == 2  # a second detection, recorded again


@pytest.mark.parametrize("reason", ["", "   ", "x" * 501, "line\nbreak", "bell\x07"])
def test_a_bad_reason_acknowledges_nothing(logged: tuple[Store, AuditLog], reason: str) -> None:
    store, audit = logged
    w = watch(store, audit)
    edit_body(store, 1)
    w.check()
    with pytest.raises(BadRequest, match="reason of 1 to 500 printable characters"):
        w.acknowledge(reason, "cli:op")
    assert w.check()["state"] == "tampered"
    with store.read() as conn:
        assert rows.last(conn, 1, "audit.tamper_acknowledged") == []


def test_acknowledging_an_intact_log_is_refused(logged: tuple[Store, AuditLog]) -> None:
    store, audit = logged
    with pytest.raises(Conflict, match="not marked tampered"):
        watch(store, audit).acknowledge("just in case", "cli:op")
    with store.read() as conn:
        assert tamper_rows.read(conn) == tamper_rows.TamperMark(False, None, 0)


def test_no_checkpoint_is_signed_while_tampered(logged: tuple[Store, AuditLog]) -> None:
    store, audit = logged
    w = watch(store, audit)
    w.check()
    edit_body(store, 9)
    w.check()
    append(store, audit, 500, 3, sign=False)
    with pytest.raises(Conflict, match="marked tampered"), store.begin() as conn:
        audit.checkpoint(conn)  # any process, the CLI included, reads the mark
    with store.begin() as conn:  # even with the mark wiped, this process's watch refuses
        conn.execute(state.update().where(state.c.key == "audit_tampered").values(value=0))
    checkpointer = Checkpointer(store, audit, integrity=w)
    assert asyncio.run(checkpointer.once()) is None
    assert checkpointer.refused == "refusing to sign: the audit log failed its integrity check"
    with store.read() as conn:
        assert conn.execute(sa.select(sa.func.max(audit_checkpoints.c.size))).scalar() == ENTRIES


def test_the_recorder_refuses_durable_events_while_tampered(
    logged: tuple[Store, AuditLog],
) -> None:
    store, audit = logged
    w = watch(store, audit)
    recorder = AuditRecorder(store, audit, integrity=w)
    edit_body(store, 2)
    w.check()

    async def commit() -> None:
        await recorder.commit(admin_event(900))

    with pytest.raises(AuditTampered) as refused:
        asyncio.run(commit())
    assert (refused.value.status, refused.value.code) == (503, "audit_integrity")
    recorder.record(admin_event(901))  # best-effort events are still queued for the log


def test_the_running_watch_logs_the_change_once_and_never_a_body(
    logged: tuple[Store, AuditLog], caplog: pytest.LogCaptureFixture
) -> None:
    store, audit = logged
    passes: list[float] = []
    ten_passes = threading.Event()

    def clock() -> float:  # counts the passes: each one reads the clock once, when it ends
        passes.append(time.time())
        if len(passes) >= 10:
            ten_passes.set()
        return passes[-1]

    w = IntegrityWatch(store, audit, clock, interval=0.01)
    edit_body(store, 33)

    async def run_for_ten_passes() -> None:  # however slow the machine; bounded at 30 s
        task = asyncio.create_task(w.run())
        assert await asyncio.to_thread(ten_passes.wait, 30)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(run_for_ten_passes())
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(lines) == 1
    assert lines[0].startswith("AUDIT LOG TAMPERED (first bad index 33): entry 33 (")
    assert "cli:other" not in caplog.text
    assert "onboarding" not in caplog.text


def test_offline_verify_also_checks_the_queried_columns(logged: tuple[Store, AuditLog]) -> None:
    store, audit = logged
    with store.begin() as conn:
        _column("name", "request.decided")(conn, audit, 61)
        verdict = verify_log(conn, audit)
    assert verdict.first_bad_index == 61
    assert any("its id, name or time column differs" in p for p in verdict.problems)
