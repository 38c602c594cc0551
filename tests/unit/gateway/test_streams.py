"""Open responses are cut when a swapped-in snapshot locks their caller, and only then."""

from __future__ import annotations

import time

import anyio
import pytest

from bastion.gateway.streams import OpenStream, StreamRegistry
from bastion.policy.authorize import Caller
from bastion.policy.decision import Reason
from bastion.policy.snapshot import Snapshot

from ..policy.factories import caller, lock_row, snapshot

pytestmark = pytest.mark.anyio

ALICE = caller("alice", "lab", jkt="jkt-alice", family="fam-alice")
CAROL = caller("carol", "lab", jkt="jkt-carol", family="fam-carol")
VICTOR = caller("victor", "acme", jkt="jkt-victor", family="fam-victor")


def _locked(*locks: tuple[str, str], expires_at: float | None = None) -> Snapshot:
    return snapshot(
        epoch=2, locks=[lock_row(kind, target, expires_at=expires_at) for kind, target in locks]
    )


async def test_a_lock_covering_an_open_stream_cancels_it_and_says_why() -> None:
    registry = StreamRegistry()
    reached_the_end = False
    with anyio.CancelScope() as scope:
        stream = OpenStream(ALICE, "general", scope)
        registry.open(stream)
        registry.on_swap(_locked(("principal", "alice")))
        await anyio.sleep(5)  # the cancelled scope ends this at once
        reached_the_end = True
    assert not reached_the_end
    assert scope.cancelled_caught
    assert stream.cut_reason is Reason.LOCKED_PRINCIPAL


@pytest.mark.parametrize(
    ("lock", "reason"),
    [
        (("all", "*"), Reason.LOCKED_ALL),
        (("org", "lab"), Reason.LOCKED_ORG),
        (("key", "jkt-alice"), Reason.LOCKED_KEY),
        (("family", "fam-alice"), Reason.LOCKED_FAMILY),
        (("compartment", "general"), Reason.LOCKED_COMPARTMENT),
    ],
)
async def test_every_lock_type_cuts_the_streams_it_covers(
    lock: tuple[str, str], reason: Reason
) -> None:
    registry = StreamRegistry()
    stream = OpenStream(ALICE, "general", anyio.CancelScope())
    registry.open(stream)
    registry.on_swap(_locked(lock))
    assert stream.scope.cancel_called
    assert stream.cut_reason is reason


async def test_streams_the_lock_does_not_cover_are_untouched() -> None:
    registry = StreamRegistry()
    alice = OpenStream(ALICE, "general", anyio.CancelScope())
    carol = OpenStream(CAROL, "frontier", anyio.CancelScope())
    victor = OpenStream(VICTOR, "general", anyio.CancelScope())
    for stream in (alice, carol, victor):
        registry.open(stream)
    registry.on_swap(_locked(("compartment", "frontier"), ("org", "acme")))
    assert (carol.cut_reason, victor.cut_reason) == (
        Reason.LOCKED_COMPARTMENT,
        Reason.LOCKED_ORG,
    )
    assert carol.scope.cancel_called
    assert victor.scope.cancel_called
    assert alice.cut_reason is None
    assert not alice.scope.cancel_called
    assert len(registry) == 3  # cutting is the gateway's job to finish; it closes the stream


async def test_a_snapshot_without_locks_cuts_nothing() -> None:
    registry = StreamRegistry()
    stream = OpenStream(ALICE, "general", anyio.CancelScope())
    registry.open(stream)
    registry.on_swap(snapshot(epoch=3))
    assert stream.cut_reason is None
    assert not stream.scope.cancel_called


async def test_an_expired_lock_cuts_nothing_and_a_live_one_does() -> None:
    registry = StreamRegistry()
    stream = OpenStream(ALICE, "general", anyio.CancelScope())
    registry.open(stream)
    registry.on_swap(_locked(("principal", "alice"), expires_at=time.time() - 1))
    assert stream.cut_reason is None
    registry.on_swap(_locked(("principal", "alice"), expires_at=time.time() + 3600))
    assert stream.cut_reason is Reason.LOCKED_PRINCIPAL


async def test_closed_streams_are_forgotten() -> None:
    registry = StreamRegistry()
    stream = OpenStream(ALICE, "general", anyio.CancelScope())
    key = registry.open(stream)
    assert len(registry) == 1
    registry.close(key)
    assert len(registry) == 0
    registry.on_swap(_locked(("all", "*")))
    assert stream.cut_reason is None
    assert not stream.scope.cancel_called


async def test_closing_twice_or_closing_an_unknown_key_is_harmless() -> None:
    registry = StreamRegistry()
    first = registry.open(OpenStream(ALICE, "general", anyio.CancelScope()))
    second = registry.open(OpenStream(CAROL, "general", anyio.CancelScope()))
    assert first != second
    registry.close(first)
    registry.close(first)
    registry.close(12345)
    assert len(registry) == 1


async def test_a_stream_keeps_the_reason_it_was_first_cut_for() -> None:
    registry = StreamRegistry()
    stream = OpenStream(ALICE, "general", anyio.CancelScope())
    registry.open(stream)
    registry.on_swap(_locked(("principal", "alice")))
    registry.on_swap(_locked(("all", "*")))
    assert stream.cut_reason is Reason.LOCKED_PRINCIPAL


async def test_one_swap_cuts_many_streams_inside_running_tasks() -> None:
    registry = StreamRegistry()
    finished: list[str] = []
    streams: dict[str, OpenStream] = {}

    async def serve(name: str, who: Caller) -> None:
        with anyio.CancelScope() as scope:
            streams[name] = OpenStream(who, "general", scope)
            key = registry.open(streams[name])
            try:
                await anyio.sleep(0.5)
                finished.append(name)
            finally:
                registry.close(key)

    async with anyio.create_task_group() as tasks:
        for name, who in [("a1", ALICE), ("a2", ALICE), ("c1", CAROL), ("v1", VICTOR)]:
            tasks.start_soon(serve, name, who)
        await anyio.wait_all_tasks_blocked()
        assert len(registry) == 4
        registry.on_swap(_locked(("org", "lab")))
    assert finished == ["v1"]
    assert {name for name, s in streams.items() if s.cut_reason is Reason.LOCKED_ORG} == {
        "a1",
        "a2",
        "c1",
    }
    assert len(registry) == 0
