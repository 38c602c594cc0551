"""The webhook notifier without a network: signatures, backoff, payload shapes, queueing, and
secrets (and secret-bearing URLs) kept out of payloads, logs and errors."""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from bastion.config.response import Webhook
from bastion.detect.findings import Finding, Severity
from bastion.errors import ConfigError
from bastion.respond import notify
from bastion.respond.notify import Notifier, Target, backoff, finding_payload, sign, verify
from bastion.store.deliveries import Delivery

pytestmark = pytest.mark.anyio

SECRET = "whsec-unit-5up3r-s3cret"
# Slack-style URL: the path itself is a credential.
URL = "https://hooks.example.com/services/T000/B000/pathtoken9f8e7d"


def hook(**overrides: Any) -> Webhook:
    fields: dict[str, Any] = {"name": "soc", "url": URL, "secret_env": "SOC_SECRET"}
    return Webhook(**{**fields, **overrides})


def target(**overrides: Any) -> Target:
    (resolved,) = notify.targets([hook(**overrides)], {"SOC_SECRET": SECRET}, "bastion.yaml")
    return resolved


def finding(severity: Severity = Severity.HIGH) -> Finding:
    return Finding(
        id="fd_0123456789abcdef",
        detection="D5",
        severity=severity,
        confidence=0.9,
        techniques=("T1526",),
        entity_type="principal",
        entity="alice",
        principal="alice",
        org="lab",
        explanation="3 distinct models denied in 5 min: <secret-0>, secret-1 & secret-2",
        evidence=("ev_1", "ev_2"),
        first_seen=1_800_000_000.0,
        last_seen=1_800_000_000.0,
    )


# -- signatures ----------------------------------------------------------------------------------


def test_the_signature_header_has_the_documented_format_and_verifies() -> None:
    body = b'{"kind":"finding"}'
    header = sign(SECRET.encode(), body, 1_800_000_000)
    assert re.fullmatch(r"t=1800000000,v1=[0-9a-f]{64}", header)
    assert verify(SECRET.encode(), body, header, now=1_800_000_010)


@pytest.mark.parametrize(
    ("secret", "body", "header_of", "now"),
    [
        (b"another-secret", b"{}", lambda h: h, 1_800_000_000),  # wrong secret
        (SECRET.encode(), b'{"x":1}', lambda h: h, 1_800_000_000),  # body changed
        (SECRET.encode(), b"{}", lambda h: h, 1_800_000_301),  # stale (replayed later)
        (SECRET.encode(), b"{}", lambda h: h.replace("t=", "t=x"), 1_800_000_000),
        (SECRET.encode(), b"{}", lambda h: h.split(",")[0], 1_800_000_000),  # no v1
        (SECRET.encode(), b"{}", lambda h: "", 1_800_000_000),
    ],
)
def test_verification_refuses_anything_but_the_signed_body(
    secret: bytes, body: bytes, header_of: Any, now: int
) -> None:
    header = header_of(sign(SECRET.encode(), b"{}", 1_800_000_000))
    assert not verify(secret, body, header, now=now)


# -- backoff -------------------------------------------------------------------------------------


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    low = [backoff(n, 4.0, 32.0, lambda: 0.0) for n in range(1, 6)]
    high = [backoff(n, 4.0, 32.0, lambda: 1.0) for n in range(1, 6)]
    assert low == [2.0, 4.0, 8.0, 16.0, 16.0]
    assert high == [4.0, 8.0, 16.0, 32.0, 32.0]
    # the default five attempts wait four times: between 30 s and 60 s in all
    assert sum(high[:4]) == 60.0
    assert sum(low[:4]) == 30.0


# -- payloads ------------------------------------------------------------------------------------


def job(target_: Target, payload: dict[str, Any]) -> Any:
    return notify._Job(target_, "dl_1", "finding", payload, 1_800_000_000.0)


def test_a_json_body_carries_the_finding_without_evidence() -> None:
    body = orjson.loads(notify.body_of(job(target(), finding_payload(finding()))))
    assert body["id"] == "dl_1"
    assert body["kind"] == "finding"
    data = body["data"]
    assert (data["detection"], data["severity"], data["entity"]) == ("D5", "high", "alice")
    assert data["techniques"] == ["T1526"]
    assert "evidence" not in data
    assert SECRET not in str(body)
    assert "pathtoken" not in str(body)


def test_a_slack_body_is_one_escaped_text_line() -> None:
    body = orjson.loads(notify.body_of(job(target(format="slack"), finding_payload(finding()))))
    assert list(body) == ["text"]
    text = body["text"]
    assert text.startswith("[HIGH] Bastion finding D5 on principal alice: ")
    assert "&lt;secret-0&gt;" in text
    assert "&amp;" in text
    assert "<secret-0>" not in text


# -- config resolution ---------------------------------------------------------------------------


def test_a_missing_secret_stops_startup_naming_the_variable_only() -> None:
    with pytest.raises(ConfigError) as caught:
        notify.targets([hook()], {"SOC_SECRET": ""}, "bastion.yaml")
    assert "SOC_SECRET is not set" in str(caught.value)
    assert "pathtoken" not in str(caught.value)


def test_a_target_repr_shows_neither_url_nor_secret() -> None:
    shown = repr(target())
    assert "soc" in shown
    assert SECRET not in shown
    assert "pathtoken" not in shown


# -- queueing and delivery -----------------------------------------------------------------------


def test_severity_and_event_filters_decide_who_is_notified() -> None:
    notifier = Notifier([target(min_severity="high")], None)
    notifier.notify("finding", finding_payload(finding(Severity.MEDIUM)))
    notifier.notify("incident", {"severity": "critical"})
    assert notifier.stats()["queued"] == 0
    notifier.notify("finding", finding_payload(finding(Severity.CRITICAL)))
    assert notifier.stats()["queued"] == 1


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    notifier = Notifier([target()], None, queue_size=2)
    started = time.perf_counter()
    for _ in range(5):
        notifier.notify("finding", finding_payload(finding()))
    assert time.perf_counter() - started < 2.0  # a put that waited would never return here
    stats = notifier.stats()
    assert (stats["queued"], stats["pending"], stats["dropped"]) == (2, 2, 3)


async def deliver(notifier: Notifier, until: Any) -> None:
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(notifier.run)
        with anyio.fail_after(5):
            while not until(notifier.stats()):  # noqa: ASYNC110 - counters, not an event
                await anyio.sleep(0.01)
        tasks.cancel_scope.cancel()
    await notifier.stop(grace=0.1)


async def test_a_delivery_is_signed_over_the_exact_body() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    notifier = Notifier([target()], None, transport=httpx.MockTransport(answer))
    notifier.notify("finding", finding_payload(finding()))
    await deliver(notifier, lambda s: s["delivered"] == 1)
    (request,) = seen
    assert str(request.url) == URL
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-bastion-delivery"].startswith("dl_")
    assert verify(
        SECRET.encode(), request.content, request.headers["x-bastion-signature"], time.time()
    )
    assert SECRET not in request.content.decode()


async def test_failures_retry_then_dead_letter_without_leaking_url_or_secret(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[float] = []
    letters: list[Delivery] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(time.monotonic())
        raise httpx.ConnectError(f"cannot reach {URL} with {SECRET}")

    class FakeStore:
        def begin(self) -> Any:
            return contextlib.nullcontext(object())

    monkeypatch.setattr(notify.delivery_rows, "add", lambda conn, letter: letters.append(letter))
    notifier = Notifier(
        [target()],
        FakeStore(),  # type: ignore[arg-type]
        attempts=4,
        base_delay=0.02,
        max_delay=0.05,
        transport=httpx.MockTransport(refuse),
    )
    caplog.set_level(logging.DEBUG)
    notifier.notify("finding", finding_payload(finding()))
    await deliver(notifier, lambda s: s["dead"] == 1)
    assert len(attempts) == 4
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert all(gap >= 0.01 for gap in gaps)  # waited (at least half of each delay)
    (letter,) = letters
    assert (letter.webhook, letter.kind, letter.attempts) == ("soc", "finding", 4)
    assert letter.last_error == "ConnectError"
    assert letter.dead_at is not None
    assert letter.payload["detection"] == "D5"
    stats = notifier.stats()
    assert (stats["failed_attempts"], stats["dead"], stats["delivered"]) == (4, 1, 0)
    logged = caplog.text
    assert "soc" in logged
    assert SECRET not in logged
    assert "pathtoken" not in logged


async def test_non_2xx_answers_are_failures_recorded_by_status() -> None:
    notifier = Notifier(
        [target()],
        None,
        attempts=2,
        base_delay=0.01,
        transport=httpx.MockTransport(lambda request: httpx.Response(500, text=SECRET)),
    )
    notifier.notify("finding", finding_payload(finding()))
    await deliver(notifier, lambda s: s["dead"] == 1)
    assert notifier.stats()["failed_attempts"] == 2


async def test_stop_dead_letters_what_was_never_sent() -> None:
    notifier = Notifier([target()], None)
    notifier.notify("finding", finding_payload(finding()))
    await notifier.stop(grace=0.01)  # never ran: the queued job is not lost silently
    assert notifier.stats()["dead"] == 1
    assert notifier.stats()["pending"] == 0


def test_the_documented_receiver_snippet_verifies_what_bastion_signs() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "response.md").read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in doc.split("```python\n")[1:]]
    (snippet,) = [block for block in blocks if "def verify_bastion(" in block]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # noqa: S102 - our own documentation
    check = namespace["verify_bastion"]
    body = b'{"kind":"finding"}'
    header = sign(SECRET.encode(), body, int(time.time()))
    assert check(SECRET, body, header)
    assert not check("another-secret", body, header)
    assert not check(SECRET, body + b" ", header)
