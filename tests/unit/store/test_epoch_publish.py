"""Publish after commit: ``Store.on_epoch`` hears a bumped epoch only once it is visible.

A gateway told about a change before the commit could reload, miss the change and then sit on the
old snapshot until its next poll; told about a rolled-back one, it would only waste a read. The
publisher itself must never fail or stall the transaction that already committed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bastion.errors import ConfigError
from bastion.store import Store, state
from bastion.store.fanout import (
    PUBLISH_BACKOFF,
    EpochPublisher,
    EpochSubscriber,
    epoch_channel,
)

REDIS_URL = "redis://127.0.0.1:6379/15"
CLOSED_PORT_URL = "redis://127.0.0.1:1/15"  # nothing listens on port 1


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 'bastion.db'}")
    store.migrate()
    yield store
    store.close()


def current_epoch(store: Store) -> int:
    with store.read() as conn:
        return state.epoch(conn)


def test_a_committed_bump_is_announced_once_and_is_already_visible(store: Store) -> None:
    before = current_epoch(store)
    heard: list[tuple[int, int]] = []
    store.on_epoch = lambda epoch: heard.append((epoch, current_epoch(store)))
    with store.begin() as conn:
        state.bump_epoch(conn)
        state.bump_epoch(conn)  # two bumps, one transaction: one announcement, the last value
    assert heard == [(before + 2, before + 2)]  # a fresh read inside the hook already sees it


def test_a_rolled_back_bump_is_never_announced(store: Store) -> None:
    before = current_epoch(store)
    heard: list[int] = []
    store.on_epoch = heard.append

    def change_that_fails() -> None:
        with store.begin() as conn:
            state.bump_epoch(conn)
            raise RuntimeError("the change failed half way")

    with pytest.raises(RuntimeError):
        change_that_fails()
    assert heard == []
    assert current_epoch(store) == before
    with store.begin() as conn:  # the pooled connection does not carry the old bump along
        state.epoch(conn)
    assert heard == []


def test_a_transaction_without_a_bump_announces_nothing(store: Store) -> None:
    heard: list[int] = []
    store.on_epoch = heard.append
    with store.begin() as conn:
        state.epoch(conn)
    assert heard == []


def test_a_failing_hook_does_not_undo_or_fail_the_committed_change(store: Store) -> None:
    before = current_epoch(store)

    def broken(_epoch: int) -> None:
        raise ConnectionError("redis is gone")

    store.on_epoch = broken
    with store.begin() as conn:
        state.bump_epoch(conn)
    assert current_epoch(store) == before + 1


def next_message(pubsub: Any, within: float = 20.0) -> Any:
    """The next message on ``pubsub``, waiting up to ``within`` seconds (the machine is shared)."""
    deadline = time.monotonic() + within
    while (message := pubsub.get_message(timeout=0.5)) is None:
        assert time.monotonic() < deadline, f"no message within {within} s"
    return message


def test_the_publisher_sends_the_epoch_on_the_prefixed_channel() -> None:
    prefix = "t" + secrets.token_hex(6)
    listener = redis.Redis.from_url(REDIS_URL)
    pubsub = listener.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(epoch_channel(prefix))
    assert next_message(pubsub)["type"] == "subscribe"
    publisher = EpochPublisher(REDIS_URL, prefix)
    try:
        publisher(42)
        message = next_message(pubsub)
        assert (message["channel"], message["data"]) == (
            f"{prefix}:epoch".encode(),
            b"42",
        )
        assert (publisher.published, publisher.failures) == (1, 0)
    finally:
        publisher.close()
        pubsub.close()
        listener.close()


def test_a_redis_outage_is_swallowed_counted_and_not_retried_at_every_commit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [1000.0]
    publisher = EpochPublisher(CLOSED_PORT_URL, "bastion", clock=lambda: now[0])
    started = time.monotonic()
    for epoch in range(5):
        publisher(epoch)  # never raises
    assert time.monotonic() - started < 5.0  # bounded: one failed connect, then paused
    assert (publisher.published, publisher.failures) == (0, 5)
    warnings = [r for r in caplog.records if "could not publish" in r.getMessage()]
    assert len(warnings) == 1  # logged once per outage, not per commit
    assert "127.0.0.1:1" not in caplog.text  # the URL (it may hold a password) is not logged
    now[0] += PUBLISH_BACKOFF + 1
    publisher(6)  # tried again after the pause, still down: counted, still quiet
    assert publisher.failures == 6
    assert len([r for r in caplog.records if "could not publish" in r.getMessage()]) == 1
    publisher.close()


def test_a_store_with_the_publisher_commits_while_redis_is_down(store: Store) -> None:
    before = current_epoch(store)
    publisher = EpochPublisher(CLOSED_PORT_URL, "bastion")
    store.on_epoch = publisher
    with store.begin() as conn:
        state.bump_epoch(conn)
    assert current_epoch(store) == before + 1
    assert publisher.failures == 1
    publisher.close()


@pytest.mark.parametrize("url", ["redis://:hunter2@h:abc/0", "redis://:hunter2@h:99999/0"])
def test_an_unusable_redis_url_stops_startup_without_showing_it(url: str) -> None:
    for build in (EpochPublisher, EpochSubscriber):
        with pytest.raises(ConfigError) as caught:
            build(url, "bastion")
        assert caught.value.file == "BASTION_REDIS_URL"
        assert "hunter2" not in caught.value.message
