"""Cluster processes: safe concurrent migrations, process roles, ``cluster status``, and the
``serve --workers`` / ``worker`` refusals outside cluster mode."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa
from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory

from bastion.app import Role, create_app
from bastion.cluster import cluster_status
from bastion.errors import Unavailable
from bastion.identity.keys import generate_private_jwk, public_jwk
from bastion.settings import Settings
from bastion.store import Store, db, state
from bastion.store import events as event_rows
from bastion.store import integrity as tamper_rows
from tests.conftest import CONFIG, _postgres_schema_url
from tests.integration.conftest import Cli


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_schema_url()


def head_revision() -> str:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(db.MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


# --- migrations ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_concurrent_starters_all_migrate_and_the_schema_is_at_head_once(
    postgres_url: str,
) -> None:
    stores = [Store(postgres_url) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def start(store: Store) -> None:
        barrier.wait(timeout=10)
        try:
            store.migrate()
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert not errors, errors
        with stores[0].read() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            assert state.epoch(conn) >= 0  # the seeded state row exists, once
            seeded = conn.execute(sa.text("SELECT count(*) FROM state WHERE key = 'epoch'"))
            assert seeded.scalar_one() == 1
        assert [v[0] for v in versions] == [head_revision()]
    finally:
        for store in stores:
            store.close()


@pytest.mark.postgres
def test_a_starter_gives_up_with_a_clear_error_when_another_holds_the_migration_lock(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "MIGRATION_LOCK_WAIT", 0.3)
    holder = sa.create_engine(postgres_url)
    store = Store(postgres_url)
    try:
        with holder.connect() as conn:
            lock = f"SELECT pg_advisory_lock{db.LOCK_ARGS}"  # as a migrating process holds it
            conn.execute(sa.text(lock).bindparams(key=db.MIGRATION_LOCK_KEY))
            with pytest.raises(Unavailable, match="another process has been migrating"):
                store.migrate()
            unlock = f"SELECT pg_advisory_unlock{db.LOCK_ARGS}"
            conn.execute(sa.text(unlock).bindparams(key=db.MIGRATION_LOCK_KEY))
            conn.commit()
        assert not sa.inspect(store.engine).has_table("alembic_version")  # nothing changed
        store.migrate()  # the lock is free again: the upgrade runs
        assert sa.inspect(store.engine).has_table("alembic_version")
    finally:
        store.close()
        holder.dispose()


# --- roles -----------------------------------------------------------------------------------


async def _run_role(tmp_path: Path, database_url: str, role: Role) -> tuple[list[str], int]:
    """Start the app in ``role``, make one audited admin change, stop; return the process
    kinds heard while it ran and the signed checkpoints left behind."""
    config_file = tmp_path / "bastion.yaml"
    config_file.write_text(CONFIG, encoding="utf-8")
    settings = Settings(
        state_dir=tmp_path / ".bastion",
        config_file=config_file,
        database_url=database_url,
        public_url="http://bastion.test",
        checkpoint_interval=3600,  # only the checkpoint signed at shutdown, however slow the run
    )
    app = create_app(settings, role=role, env={"EXAMPLE_UPSTREAM_KEY": "k"})
    store = app.services.store
    async with app.control.router.lifespan_context(app.control):
        app.services.principals.enroll(
            "alice", public_jwk(generate_private_jwk("EdDSA")), author="test"
        )
        with store.read() as conn:
            kinds = [row.kind for row in state.live_processes(conn, since=0)]
    reader = Store(settings.resolved_database_url)
    try:
        with reader.read() as conn:
            return kinds, len(event_rows.checkpoints(conn))
    finally:
        reader.close()


@pytest.mark.anyio
async def test_a_gateway_leaves_checkpoints_to_the_worker(
    tmp_path: Path, database_url: str
) -> None:
    kinds, checkpoints = await _run_role(tmp_path, database_url, "gateway")
    assert kinds == ["gateway"]
    assert checkpoints == 0  # the audit event is stored; signing it is the worker's job


@pytest.mark.anyio
async def test_the_worker_signs_checkpoints_and_heartbeats_as_a_worker(
    tmp_path: Path, database_url: str
) -> None:
    kinds, checkpoints = await _run_role(tmp_path, database_url, "worker")
    assert kinds == ["worker"]
    assert checkpoints == 1


@pytest.mark.anyio
async def test_embedded_mode_still_does_everything_in_one_process(
    tmp_path: Path, database_url: str
) -> None:
    kinds, checkpoints = await _run_role(tmp_path, database_url, "embedded")
    assert kinds == ["gateway"]
    assert checkpoints == 1


@pytest.mark.anyio
async def test_a_gateway_adopts_a_tamper_mark_another_process_set(
    tmp_path: Path, database_url: str
) -> None:
    config_file = tmp_path / "bastion.yaml"
    config_file.write_text(CONFIG, encoding="utf-8")
    settings = Settings(
        state_dir=tmp_path / ".bastion", config_file=config_file, database_url=database_url
    )
    app = create_app(settings, role="gateway", env={"EXAMPLE_UPSTREAM_KEY": "k"})
    async with app.control.router.lifespan_context(app.control):
        integrity = app.services.integrity
        assert integrity is not None
        assert not integrity.tampered
        with app.services.store.begin() as conn:  # as the worker's watch would
            tamper_rows.mark(conn, None)
        tampered = False
        with anyio.fail_after(20):
            while not tampered:  # once adopted, its recorder refuses audit: required calls
                await anyio.sleep(0.05)
                tampered = integrity.tampered


def test_an_unknown_role_is_refused(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, config_file=tmp_path / "bastion.yaml")
    with pytest.raises(ValueError, match="unknown role 'janitor'"):
        create_app(settings, role="janitor")  # type: ignore[arg-type]


# --- cluster status --------------------------------------------------------------------------


def _beat(store: Store, kind: str, pid: int, age: float, epoch: int) -> None:
    now = time.time()
    row = state.ProcessRow(f"{kind}-{pid}", kind, pid, "host-a", now - 600, now - age, epoch)
    with store.begin() as conn:
        state.heartbeat(conn, row)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.migrate()
    yield store
    store.close()


def test_status_lists_live_processes_marks_silent_ones_stale_and_counts_lag(
    store: Store,
) -> None:
    with store.begin() as conn:
        state.bump_epoch(conn)
        current = state.bump_epoch(conn)
    _beat(store, "gateway", 11, age=1.0, epoch=current)
    _beat(store, "gateway", 12, age=30.0, epoch=current - 2)  # killed half a minute ago
    _beat(store, "worker", 13, age=0.5, epoch=current)
    _beat(store, "gateway", 14, age=7200.0, epoch=0)  # long gone: left out

    report = cluster_status(store, time.time())

    assert report.epoch == current
    assert [(p.row["kind"], p.row["pid"], p.stale, p.behind) for p in report.processes] == [
        ("worker", 13, False, 0),
        ("gateway", 11, False, 0),
        ("gateway", 12, True, 2),
    ]


def test_status_command_prints_a_table_and_json(cli: Cli) -> None:
    (cli.root / "bastion.yaml").write_text(CONFIG, encoding="utf-8")
    store = cli.store
    store.migrate()
    _beat(store, "worker", 21, age=0.2, epoch=0)
    _beat(store, "gateway", 22, age=42.0, epoch=0)

    table = cli("cluster", "status")
    assert table.code == 0, table.err
    assert "worker" in table.out
    assert table.out.count("STALE") == 1  # only the silent gateway

    as_json = cli("cluster", "status", "--json")
    assert as_json.code == 0, as_json.err
    report = json.loads(as_json.out)
    assert [(p["kind"], p["pid"], p["stale"]) for p in report["processes"]] == [
        ("worker", 21, False),
        ("gateway", 22, True),
    ]
    with store.read() as conn:
        assert report["epoch"] == state.epoch(conn)


def test_status_with_no_processes_says_so(cli: Cli) -> None:
    result = cli("cluster", "status", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["processes"] == []


# --- refusals outside cluster mode -----------------------------------------------------------


def test_serve_refuses_several_workers_in_embedded_mode_and_starts_nothing(cli: Cli) -> None:
    result = cli("serve", "--workers", "2")
    assert result.code == 1
    assert "--workers needs cluster mode" in result.err
    assert "BASTION_REDIS_URL" in result.err
    assert not (cli.root / ".bastion").exists()


@pytest.mark.parametrize("workers", ["0", "65", "two"])
def test_serve_refuses_a_bad_worker_count(cli: Cli, workers: str) -> None:
    result = cli("serve", "--workers", workers)
    assert result.code == 2
    assert "--workers" in result.err


def test_cluster_mode_refuses_sqlite(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_REDIS_URL", "redis://127.0.0.1:6379/15")
    for args in (("serve",), ("serve", "--workers", "2"), ("worker",)):
        result = cli(*args)
        assert result.code == 1, args
        assert "cluster mode (BASTION_REDIS_URL is set) needs PostgreSQL" in result.err
    assert not (cli.root / ".bastion").exists()


def test_worker_refuses_embedded_mode(cli: Cli) -> None:
    result = cli("worker")
    assert result.code == 1
    assert "bastion worker is for cluster mode" in result.err
    assert not (cli.root / ".bastion").exists()
