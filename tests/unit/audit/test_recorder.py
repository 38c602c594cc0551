"""The recorder when the log cannot record: audit-required events are refused to their callers,
best-effort ones are dropped and reported as a gap, at CRITICAL, only when there is one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from bastion.audit.events import AdminAction
from bastion.audit.recorder import AuditRecorder, AuditUnavailable

pytestmark = pytest.mark.anyio


class Store:
    @contextlib.contextmanager
    def begin(self) -> Iterator[None]:
        yield None


class BrokenLog:
    def append(self, _conn: object, _events: Sequence[object]) -> list[int]:
        raise OSError("disk full")


def broken_recorder() -> AuditRecorder:
    parts: Any = (Store(), BrokenLog())  # stand-ins for the store and the log
    return AuditRecorder(*parts)


def event() -> AdminAction:
    return AdminAction(action="lock.created", target_type="principal", target="bob")


def gap_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]


async def test_a_refused_required_event_is_not_reported_as_a_gap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = broken_recorder()
    waiting = asyncio.ensure_future(recorder.commit(event()))
    await asyncio.sleep(0)  # queued
    await recorder.flush()
    with pytest.raises(AuditUnavailable):
        await waiting
    assert recorder.dropped == 0
    assert gap_lines(caplog) == []  # the caller was refused: nothing is missing from the log


async def test_lost_best_effort_events_are_a_critical_gap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = broken_recorder()
    recorder.record(event())
    waiting = asyncio.ensure_future(recorder.commit(event()))
    await asyncio.sleep(0)
    await recorder.flush()
    with pytest.raises(AuditUnavailable):
        await waiting
    assert recorder.dropped == 1
    assert gap_lines(caplog) == ["AUDIT GAP: 1 best-effort events could not be recorded"]
