"""Database engines and migrations: SQLite (WAL) embedded, PostgreSQL (psycopg 3) for clusters."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig

from bastion.errors import ConfigError, Unavailable

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


# libpq settings for every PostgreSQL connection, unless the URL sets them: a server that does
# not answer fails a connection attempt after ``connect_timeout`` seconds (not the kernel's two
# minutes), and a peer that vanished mid-query (a network partition) is noticed by TCP
# keepalives and ``tcp_user_timeout`` (milliseconds of unacknowledged data) instead of a worker
# thread waiting on it for ever.
PG_CONNECT_ARGS: dict[str, int] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(url: str) -> sa.Engine:
    """Build the engine for ``url``; only SQLite and PostgreSQL (psycopg 3) are supported."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError("BASTION_DATABASE_URL", ["not a valid database URL"]) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if backend == "postgresql":
        if parsed.get_driver_name() not in ("psycopg", ""):
            raise ConfigError(
                "BASTION_DATABASE_URL", ["use the psycopg driver: postgresql+psycopg://"]
            )
        given = set(parsed.query)  # what the URL sets itself wins over these defaults
        return sa.create_engine(
            parsed.set(drivername="postgresql+psycopg"),
            pool_pre_ping=True,
            pool_size=5,
            connect_args={k: v for k, v in PG_CONNECT_ARGS.items() if k not in given},
        )
    raise ConfigError("BASTION_DATABASE_URL", [f"unsupported database {backend!r}"])


# The migration lock: an advisory lock keyed (constant, hash of the schema). Every Bastion
# process on one schema takes turns at the upgrade; Bastions in other schemas of the same
# database (the schema holds alembic_version too) do not wait for each other.
MIGRATION_LOCK_KEY = 0x62617374  # "bast"
LOCK_ARGS = "(:key, hashtext(coalesce(current_schema(), '')))"
MIGRATION_LOCK_WAIT = 300.0  # seconds a starter waits for another one's upgrade before giving up


def migrate(engine: sa.Engine) -> None:
    """Bring the schema to the latest Alembic revision (idempotent).

    On PostgreSQL several processes of a cluster start at once: each takes a session-level
    advisory lock (``pg_try_advisory_lock``, retried until ``MIGRATION_LOCK_WAIT``) on a
    dedicated connection around the upgrade, so exactly one runs it and the
    others then find the schema at head (two concurrent upgrades would both try to create the
    same tables). The lock is released in ``finally``, and dies with the session if the process
    does. SQLite is one process's file: no lock needed.
    """
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return
    with engine.connect() as lock_conn:
        deadline = time.monotonic() + MIGRATION_LOCK_WAIT
        lock = sa.text(f"SELECT pg_try_advisory_lock{LOCK_ARGS}").bindparams(key=MIGRATION_LOCK_KEY)
        while not lock_conn.execute(lock).scalar_one():
            lock_conn.commit()  # no transaction held open while waiting
            if time.monotonic() > deadline:
                raise Unavailable(
                    "another process has been migrating the database for over "
                    f"{int(MIGRATION_LOCK_WAIT)}s; check it, then start again"
                )
            time.sleep(0.1)
        lock_conn.commit()
        try:
            with engine.begin() as conn:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
        finally:
            unlock = sa.text(f"SELECT pg_advisory_unlock{LOCK_ARGS}").bindparams(
                key=MIGRATION_LOCK_KEY
            )
            # A connection too broken to unlock is discarded, and its lock ends with its session;
            # never let this hide the upgrade's own error.
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                lock_conn.execute(unlock)
                lock_conn.commit()
