"""A PostgreSQL server that accepts connections and then says nothing fails a connection attempt
after ``connect_timeout``, not the kernel's minutes (a silent server on loopback stands in for
a hung or partitioned one)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bastion.store import db


@pytest.fixture
def silent_server() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(conn)  # held open, never answered

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_silent_server_fails_the_connection_after_the_timeout(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(db.PG_CONNECT_ARGS, "connect_timeout", 2)  # libpq's minimum
    engine = db.create_engine(f"postgresql+psycopg://bastion@127.0.0.1:{silent_server}/bastion")
    started = time.monotonic()
    with pytest.raises(sa.exc.OperationalError), engine.connect():
        pass
    assert time.monotonic() - started < 30  # bounded: without connect_timeout it waits for ever
    engine.dispose()


class Captured(Exception):
    pass


@pytest.mark.parametrize(
    ("query", "timeout"), [("", db.PG_CONNECT_ARGS["connect_timeout"]), ("?connect_timeout=9", "9")]
)
def test_every_connection_gets_the_defaults_and_the_url_overrides_them(
    query: str, timeout: object
) -> None:
    engine = db.create_engine(f"postgresql+psycopg://bastion@127.0.0.1:1/bastion{query}")
    seen: dict[str, object] = {}

    @sa.event.listens_for(engine, "do_connect")
    def capture(
        _dialect: object, _record: object, _args: object, params: dict[str, object]
    ) -> None:
        seen.update(params)
        raise Captured

    with pytest.raises(Captured), engine.connect():
        pass
    assert seen["connect_timeout"] == timeout
    assert seen["keepalives"] == 1
    assert seen["tcp_user_timeout"] == 30_000
    engine.dispose()
