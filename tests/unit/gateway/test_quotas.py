"""Token buckets: requests per minute and LLM tokens per hour, per principal and per org."""

from __future__ import annotations

import pytest

from bastion.config.models import Limits, Quotas
from bastion.errors import TooManyRequests
from bastion.gateway.quotas import QuotaBuckets


def test_requests_per_minute_refuse_then_refill() -> None:
    quotas = Quotas(principal=Limits(requests_per_minute=2))
    buckets = QuotaBuckets()
    buckets.admit(quotas, "c", "alice", "lab", now=0.0)
    buckets.admit(quotas, "c", "alice", "lab", now=0.0)
    with pytest.raises(TooManyRequests) as refused:
        buckets.admit(quotas, "c", "alice", "lab", now=1.0)
    assert refused.value.retry_after == 29  # one request refills every 30 s
    assert "requests per minute for principal 'alice'" in refused.value.message
    buckets.admit(quotas, "c", "bob", "lab", now=1.0)  # another principal has its own bucket
    buckets.admit(quotas, "c", "alice", "lab", now=31.0)


def test_an_org_limit_is_shared_and_a_refusal_takes_nothing() -> None:
    quotas = Quotas(principal=Limits(requests_per_minute=5), org=Limits(requests_per_minute=2))
    buckets = QuotaBuckets()
    buckets.admit(quotas, "c", "alice", "lab", now=0.0)
    buckets.admit(quotas, "c", "bob", "lab", now=0.0)
    with pytest.raises(TooManyRequests, match="org 'lab'"):
        buckets.admit(quotas, "c", "carol", "lab", now=0.0)
    buckets.admit(quotas, "c", "victor", "acme", now=0.0)  # another org is untouched


def test_llm_tokens_are_charged_after_use() -> None:
    quotas = Quotas(principal=Limits(tokens_per_hour=100))
    buckets = QuotaBuckets()
    buckets.admit(quotas, "c", "alice", "lab", now=0.0)
    buckets.charge(quotas, "c", "alice", "lab", used=150, now=0.0)  # overdraws
    with pytest.raises(TooManyRequests) as refused:
        buckets.admit(quotas, "c", "alice", "lab", now=1.0)
    assert "LLM tokens per hour" in refused.value.message
    assert refused.value.retry_after > 0
    buckets.admit(quotas, "c", "alice", "lab", now=3600.0)


def test_no_limits_means_no_refusal() -> None:
    buckets = QuotaBuckets()
    for _ in range(1000):
        buckets.admit(Quotas(), "c", "alice", "lab", now=0.0)
