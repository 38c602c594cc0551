"""Tampering with the stored audit log is caught — on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion.audit import keys as audit_keys
from bastion.audit.commitment import Committer
from bastion.audit.events import AdminAction, RequestDecided
from bastion.audit.log import AuditLog
from bastion.audit.note import generate_key, parse_signer_key, sign_note
from bastion.audit.verify import verify_log
from bastion.errors import Conflict
from bastion.store import Store
from bastion.store.tables import audit_checkpoints, audit_events, audit_nodes
from tests.conftest import CONFIG

ENTRIES = 40


def request_event(i: int) -> RequestDecided:
    return RequestDecided(
        principal="alice",
        org="lab",
        model="demo-chat",
        compartment="general",
        route="POST /v1/chat/completions",
        allowed=i % 3 != 0,
        reasons=("granted",),
        policies=("permit-granted-compartment",),
        epoch=7,
        source_ip=f"10.0.0.{i}",
        family=f"fam_{i:04d}",
        jkt=f"jkt-{i}",
        status=200,
        outcome="completed",
    )


@pytest.fixture
def log(tmp_path: Path, database_url: str) -> Iterator[tuple[Store, AuditLog]]:
    store = Store(database_url)
    store.migrate()
    keys = audit_keys.load_or_create(tmp_path / "state")
    audit = AuditLog(Committer(keys.salt), keys.signer, keys.origin)
    for start in range(0, ENTRIES, 10):  # four batches, a checkpoint after each
        with store.begin() as conn:
            audit.append(conn, [request_event(i) for i in range(start, start + 10)])
            audit.checkpoint(conn)
    yield store, audit
    store.close()


def verdict(store: Store, audit: AuditLog):  # type: ignore[no-untyped-def]
    with store.read() as conn:
        return verify_log(conn, audit)


def test_untouched_log_verifies(log: tuple[Store, AuditLog]) -> None:
    store, audit = log
    result = verdict(store, audit)
    assert result.ok, result.problems
    assert (result.size, result.checkpoints) == (ENTRIES, 4)


def test_edited_event_is_caught(log: tuple[Store, AuditLog]) -> None:
    store, audit = log
    with store.begin() as conn:
        body = conn.execute(sa.select(audit_events.c.body).where(audit_events.c.idx == 18)).scalar()
        conn.execute(
            audit_events.update()
            .where(audit_events.c.idx == 18)
            .values(body=body.replace('"allowed":false', '"allowed":true'))
        )
    result = verdict(store, audit)
    assert not result.ok
    assert result.first_bad_index == 18
    assert any("entry 18" in p and "does not match its leaf" in p for p in result.problems)


def test_edited_event_and_leaf_is_caught(log: tuple[Store, AuditLog]) -> None:
    store, audit = log
    forged = request_event(23)
    record = forged.record()
    record["principal"] = "mallory"
    with store.begin() as conn:
        conn.execute(
            audit_events.update()
            .where(audit_events.c.idx == 23)
            .values(
                body=sa.literal(__import__("orjson").dumps(record, option=1 << 5).decode()),
                leaf=audit.committer.leaf(record).decode(),
            )
        )
    result = verdict(store, audit)
    assert not result.ok
    assert result.first_bad_index == 23


def test_deleted_event_is_caught(log: tuple[Store, AuditLog]) -> None:
    store, audit = log
    with store.begin() as conn:
        conn.execute(audit_events.delete().where(audit_events.c.idx == 5))
    result = verdict(store, audit)
    assert not result.ok
    assert result.first_bad_index == 5
    assert any("entry 5 is missing" in p for p in result.problems)


def test_swapped_events_are_caught(log: tuple[Store, AuditLog]) -> None:
    store, audit = log
    with store.begin() as conn:
        a, b = (
            conn.execute(
                sa.select(audit_events.c.id, audit_events.c.body, audit_events.c.leaf).where(
                    audit_events.c.idx == i
                )
            ).one()
            for i in (11, 12)
        )
        conn.execute(audit_events.update().where(audit_events.c.idx == 11).values(id="tmp"))
        for idx, row in ((12, a), (11, b)):
            conn.execute(
                audit_events.update()
                .where(audit_events.c.idx == idx)
                .values(id=row.id, body=row.body, leaf=row.leaf)
            )
    result = verdict(store, audit)
    assert not result.ok
    assert result.first_bad_index == 11


def test_swapped_events_with_their_tree_nodes_are_caught(log: tuple[Store, AuditLog]) -> None:
    """An attacker who also swaps the stored leaf nodes is caught by the signed roots."""
    store, audit = log
    with store.begin() as conn:
        rows = {
            i: conn.execute(sa.select(audit_events).where(audit_events.c.idx == i)).one()
            for i in (30, 31)
        }
        nodes = {
            i: conn.execute(
                sa.select(audit_nodes.c.hash).where(
                    audit_nodes.c.level == 0, audit_nodes.c.idx == i
                )
            ).scalar_one()
            for i in (30, 31)
        }
        conn.execute(audit_events.update().where(audit_events.c.idx == 30).values(id="tmp"))
        for idx, other in ((31, 30), (30, 31)):
            row = rows[other]
            conn.execute(
                audit_events.update()
                .where(audit_events.c.idx == idx)
                .values(id=row.id, body=row.body, leaf=row.leaf)
            )
            conn.execute(
                audit_nodes.update()
                .where(audit_nodes.c.level == 0, audit_nodes.c.idx == idx)
                .values(hash=nodes[other])
            )
    result = verdict(store, audit)
    assert not result.ok
    assert any("checkpoint 40" in p and "recomputed root differs" in p for p in result.problems)


def test_truncated_tail_is_caught_and_never_re_signed(log: tuple[Store, AuditLog]) -> None:
    store, audit = log
    with store.begin() as conn:
        conn.execute(audit_events.delete().where(audit_events.c.idx >= 35))
        conn.execute(audit_nodes.delete())  # even with the tree wiped, the checkpoints remain
    result = verdict(store, audit)
    assert not result.ok
    assert any("35 entries but checkpoint 40" in p for p in result.problems)
    with pytest.raises(Conflict), store.begin() as conn:
        audit.checkpoint(conn)


def test_replaced_checkpoint_is_caught(log: tuple[Store, AuditLog]) -> None:
    store, audit = log
    rogue = parse_signer_key(generate_key(audit.origin)[0])
    with store.begin() as conn:
        note = conn.execute(
            sa.select(audit_checkpoints.c.note).where(audit_checkpoints.c.size == 20)
        ).scalar_one()
        text = note.split("\n\n")[0] + "\n"
        conn.execute(
            audit_checkpoints.update()
            .where(audit_checkpoints.c.size == 20)
            .values(note=sign_note(text, rogue))
        )
    result = verdict(store, audit)
    assert not result.ok
    assert any("checkpoint 20: signature does not verify" in p for p in result.problems)


def test_cli_verify_exit_codes(tmp_path: Path, database_url: str) -> None:
    """`bastion audit verify` says OK on an untouched log and exits 1 naming the bad index, on
    SQLite and on PostgreSQL (``BASTION_DATABASE_URL``)."""
    (tmp_path / "bastion.yaml").write_text(CONFIG, encoding="utf-8")
    env = {**os.environ, "BASTION_DATABASE_URL": database_url}

    def bastion(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bastion", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert bastion("init").returncode == 0
    for name in ("dave", "erin", "frank"):
        assert bastion("principal", "add", name, "--org", "lab").returncode == 0
    assert bastion("audit", "checkpoint").returncode == 0
    ok = bastion("audit", "verify")
    assert ok.returncode == 0
    assert "audit log OK" in ok.stdout
    store = Store(database_url)
    with store.begin() as conn:
        conn.execute(
            audit_events.update()
            .where(audit_events.c.idx == 2)
            .values(body=sa.func.replace(audit_events.c.body, "erin", "eve"))
        )
    store.close()
    bad = bastion("audit", "verify")
    assert bad.returncode == 1
    assert "AUDIT LOG TAMPERED" in bad.stderr
    assert "first bad index: 2" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_admin_events_and_requests_share_one_tree(log: tuple[Store, AuditLog]) -> None:
    store, audit = log
    with store.begin() as conn:
        audit.append(
            conn,
            [
                AdminAction(
                    actor="cli:test",
                    action="lock.created",
                    target_type="family",
                    target="fam_secret",
                    reason="x",
                )
            ],
        )
        audit.checkpoint(conn)
        stored = conn.execute(
            sa.select(audit_events.c.leaf).where(audit_events.c.idx == ENTRIES)
        ).scalar_one()
    assert "fam_secret" not in stored  # a family id is committed as an HMAC, not in the clear
    assert verdict(store, audit).ok


def test_two_writers_and_a_rollback_keep_one_tree(log: tuple[Store, AuditLog]) -> None:
    """Two processes' logs append alternately to one store, one append rolls back: the frontier
    caches notice every foreign or undone append, and the tree verifies."""
    store, first = log
    second = AuditLog(first.committer, first.signer, first.origin)
    for round_ in range(5):
        for writer in (first, second):
            with store.begin() as conn:
                writer.append(conn, [request_event(100 + round_)])

    def rolled_back() -> None:
        with store.begin() as conn:
            first.append(conn, [request_event(200)])
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        rolled_back()
    with store.begin() as conn:
        first.append(conn, [request_event(201)])
        second.checkpoint(conn)
    result = verdict(store, first)
    assert result.ok, result.problems
    assert result.size == ENTRIES + 11
