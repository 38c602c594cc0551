"""The gateway's side of the new lock types: the throttle bucket, how a throttle refusal is
rendered, and which open streams network and step-up locks cut."""

from __future__ import annotations

from dataclasses import replace

import anyio
import orjson
import pytest

from bastion.config.models import Limits, Quotas
from bastion.errors import Throttled, TooManyRequests
from bastion.gateway.quotas import QuotaBuckets
from bastion.gateway.responses import error_body, error_headers
from bastion.gateway.streams import OpenStream, StreamRegistry
from bastion.policy.authorize import Caller
from bastion.policy.decision import Reason
from bastion.store.locks import LockRow

from ..policy.factories import NOW, caller, snapshot

# -- the throttle bucket --------------------------------------------------------------------------


def test_a_throttle_admits_one_request_then_one_per_interval_with_no_burst() -> None:
    buckets = QuotaBuckets()
    buckets.throttle("alice", "lk_1", 2, now=0.0)
    with pytest.raises(Throttled):
        buckets.throttle("alice", "lk_1", 2, now=0.0)  # rate 2 is not a burst of 2
    with pytest.raises(Throttled) as refused:
        buckets.throttle("alice", "lk_1", 2, now=1.0)
    assert refused.value.retry_after == 29  # one request every 30 s
    assert refused.value.lock == "lk_1"
    assert refused.value.message == "throttled: principal 'alice' is held to 2 requests per minute"
    buckets.throttle("alice", "lk_1", 2, now=30.0)
    with pytest.raises(Throttled):
        buckets.throttle("alice", "lk_1", 2, now=30.0)


def test_a_refused_request_takes_nothing_from_the_bucket() -> None:
    buckets = QuotaBuckets()
    buckets.throttle("alice", "lk_1", 1, now=0.0)
    for second in range(1, 60, 10):
        with pytest.raises(Throttled):
            buckets.throttle("alice", "lk_1", 1, now=float(second))
    buckets.throttle("alice", "lk_1", 1, now=60.0)


def test_a_rate_below_one_per_minute_still_allows_a_burst_of_one() -> None:
    buckets = QuotaBuckets()
    buckets.throttle("alice", "lk_1", 0.5, now=0.0)
    with pytest.raises(Throttled) as refused:
        buckets.throttle("alice", "lk_1", 0.5, now=0.0)
    assert refused.value.retry_after == 120
    assert "0.5 requests per minute" in refused.value.message
    buckets.throttle("alice", "lk_1", 0.5, now=120.0)


def test_each_principal_and_each_lock_has_its_own_bucket() -> None:
    buckets = QuotaBuckets()
    buckets.throttle("alice", "lk_1", 1, now=0.0)
    buckets.throttle("bob", "lk_2", 1, now=0.0)  # another principal is unaffected
    buckets.throttle("alice", "lk_3", 1, now=0.0)  # a new lock starts full
    with pytest.raises(Throttled):
        buckets.throttle("alice", "lk_1", 1, now=0.0)


def test_a_throttle_and_a_compartment_quota_are_separate_buckets() -> None:
    quotas = Quotas(principal=Limits(requests_per_minute=1))
    buckets = QuotaBuckets()
    buckets.throttle("alice", "lk_1", 5, now=0.0)
    buckets.admit(quotas, "c", "alice", "lab", now=0.0)
    with pytest.raises(TooManyRequests) as refused:
        buckets.admit(quotas, "c", "alice", "lab", now=0.0)
    assert not isinstance(refused.value, Throttled)
    buckets.throttle("alice", "lk_1", 5, now=12.0)  # refilled: one every 12 s


def test_a_throttle_refusal_is_a_429_with_retry_after_and_its_own_code() -> None:
    error = Throttled("throttled: principal 'alice' is held to 2 requests per minute", 29, "lk_1")
    assert error.status == 429
    assert (b"retry-after", b"29") in error_headers(error)
    assert orjson.loads(error_body(error)) == {
        "type": "error",
        "error": {
            "type": "throttled",
            "code": "throttled",
            "message": "throttled: principal 'alice' is held to 2 requests per minute",
        },
    }
    assert b"lk_1" not in error_body(error)  # the lock id is for the audit event only


# -- open streams ---------------------------------------------------------------------------------

ALICE = replace(caller("alice", "lab", jkt="jkt-alice", family="fam-alice"), source="203.0.113.7")
ELSEWHERE = replace(ALICE, source="198.51.100.7")


def lock(target_type: str, target: str, created_at: float) -> LockRow:
    return LockRow("L-1", target_type, target, "test", "tester", created_at, None, None, None)


def opened(registry: StreamRegistry, who: Caller) -> OpenStream:
    stream = OpenStream(who, "general", anyio.CancelScope())
    registry.open(stream)
    return stream


@pytest.mark.anyio
async def test_a_network_lock_cuts_the_streams_from_that_network_only() -> None:
    registry = StreamRegistry()
    inside, outside = opened(registry, ALICE), opened(registry, ELSEWHERE)
    registry.on_swap(snapshot(epoch=2, locks=[lock("network", "203.0.113.0/24", NOW)]))
    assert inside.cut_reason is Reason.LOCKED_NETWORK
    assert inside.scope.cancel_called
    assert outside.cut_reason is None
    assert not outside.scope.cancel_called


@pytest.mark.anyio
async def test_a_step_up_lock_cuts_streams_whose_login_has_no_mfa_since_it() -> None:
    registry = StreamRegistry()
    placed = NOW - 60
    without = opened(registry, ALICE)
    before = opened(registry, replace(ALICE, mfa_at=placed - 10))
    after = opened(registry, replace(ALICE, mfa_at=placed + 10))
    registry.on_swap(snapshot(epoch=2, locks=[lock("stepup", "alice", placed)]))
    assert without.cut_reason is Reason.INSUFFICIENT_USER_AUTHENTICATION
    assert before.cut_reason is Reason.INSUFFICIENT_USER_AUTHENTICATION
    assert after.cut_reason is None


@pytest.mark.anyio
async def test_a_throttle_lock_cuts_no_stream() -> None:
    registry = StreamRegistry()
    stream = opened(registry, ALICE)
    throttle = replace(lock("throttle", "alice", NOW), rate=1.0)
    registry.on_swap(snapshot(epoch=2, locks=[throttle]))
    assert stream.cut_reason is None
    assert not stream.scope.cancel_called
