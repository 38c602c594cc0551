"""A database that stops answering without refusing (a frozen server, a network partition, a
lock held on the audit table) must not hold audit-required callers for as long as it hangs:
``AuditRecorder.commit`` refuses them within ``commit_timeout``. Found by the cluster fault
tests (a frozen PostgreSQL held an ``audit: required`` call for the client's whole 30 s timeout);
here the hang is a real lock held by a second client on the real table, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bastion.audit import keys as audit_keys
from bastion.audit.commitment import Committer
from bastion.audit.events import AdminAction
from bastion.audit.log import AuditLog
from bastion.audit.recorder import AuditRecorder, AuditUnavailable
from bastion.store import Store
from bastion.store import events as event_rows

pytestmark = pytest.mark.anyio


def event(target: str) -> AdminAction:
    return AdminAction(action="lock.created", target_type="principal", target=target)


def hold_audit_table(conn: sa.Connection) -> None:
    """Take the audit table from every other client until ``conn`` rolls back."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN EXCLUSIVE")
    else:
        conn.execute(sa.text("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE"))


async def test_a_hanging_database_refuses_required_events_in_bounded_time(
    database_url: str, tmp_path: Path
) -> None:
    store = Store(database_url)
    store.migrate()
    keys = audit_keys.load_or_create(tmp_path / "keys")
    audit = AuditLog(Committer(keys.salt), keys.signer, keys.origin)
    recorder = AuditRecorder(store, audit, commit_timeout=0.5)
    writer = asyncio.create_task(recorder.run())
    blocker = sa.create_engine(database_url)
    try:
        with blocker.connect() as conn:
            hold_audit_table(conn)
            started = time.monotonic()
            with pytest.raises(AuditUnavailable, match=r"did not confirm the record within 0\.5s"):
                await recorder.commit(event("held"))
            # refused, not held (0.5 s and the test's share of a busy machine)
            assert time.monotonic() - started < 5.0
            conn.rollback()
        # The database answers again: the refused record lands late, and the next commit works.
        await recorder.flush()
        await recorder.commit(event("after"))
        with store.read() as conn:
            assert event_rows.size(conn) == 2
        assert recorder.healthy
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await recorder.flush()
        blocker.dispose()
        store.close()
