"""The drill's bad input and its scoring rules: a drill that cannot run says why and runs
nothing; a step passes only when blocked, or contained in time with few requests leaked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bastion.config import example_config_text, parse_config
from bastion.drill.device import Attempt, Device
from bastion.drill.lab import Lab, Networks
from bastion.drill.scorecard import StepResult, passed
from bastion.errors import BadRequest
from bastion.identity.keys import generate_private_jwk

CONFIG = parse_config(example_config_text())


def lab(**overrides: Any) -> Lab:
    values: dict[str, Any] = {
        "url": "http://127.0.0.1:1",
        "http": None,
        "store": None,
        "audit": None,
        "config": CONFIG,
        "principals": None,
        "vendor": "acme",
        "former_vendor": "oldco",
        "model": "vendor-chat",
        "probes": ("demo-chat",),
        "escalate_to": "vendor-lab",
    }
    return Lab(**{**values, **overrides})


def test_the_example_config_gives_three_sites_inside_the_vendor() -> None:
    sites = lab().networks
    prefixes = {address.rsplit(".", 1)[0] for address in (sites.home, sites.second, sites.third)}
    assert len(prefixes) == 3
    assert all(address.startswith("10.20.") for address in prefixes)


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("vendor", "lab", "--vendor 'lab' is not a vendor org"),
        ("vendor", "nobody", "--vendor 'nobody' is not a vendor org"),
        ("former_vendor", "lab", "--former-vendor 'lab' is not a vendor org"),
        ("model", "no-such-model", "--model 'no-such-model' is not a model"),
    ],
)
def test_a_drill_with_bad_options_is_refused(field: str, value: str, says: str) -> None:
    with pytest.raises(BadRequest, match=says):
        lab(**{field: value})


@pytest.mark.parametrize("cidrs", [(), ("10.20.1.0/24",), ("10.20.0.0/23",), ("2001:db8::/32",)])
def test_a_vendor_without_room_for_three_sites_is_refused(cidrs: tuple[str, ...]) -> None:
    with pytest.raises(BadRequest, match="/22 or wider"):
        Networks.inside(cidrs)


def step(*attempts: Attempt, error: str = "") -> StepResult:
    result = StepResult("T2", "test", error=error)
    for attempt in attempts:
        result.record(attempt)
    return result


SERVED, REFUSED = 200, 403


def test_a_blocked_step_passes_and_an_empty_or_broken_one_fails() -> None:
    assert step(Attempt(0.0, "chat", REFUSED, "access_denied", ("not_granted",))).passed
    assert not step().passed
    assert not step(Attempt(0.0, "chat", REFUSED), error="could not log in").passed
    assert not passed([])


def test_containment_must_come_within_a_second_with_at_most_three_served() -> None:
    locked = ("locked_principal",)
    fast = step(
        Attempt(0.0, "chat", SERVED),
        Attempt(0.3, "chat", SERVED),
        Attempt(0.6, "chat", REFUSED, "access_denied", locked),
    )
    assert (fast.passed, fast.leaked, fast.time_to_contain) == (True, 1, 0.6)
    slow = step(Attempt(0.0, "chat", SERVED), Attempt(1.2, "chat", REFUSED, "x", locked))
    assert not slow.passed
    leaky = step(
        *[Attempt(n * 0.1, "chat", SERVED) for n in range(5)],
        Attempt(0.5, "chat", REFUSED, "x", locked),
    )
    assert (leaky.leaked, leaky.passed) == (4, False)
    by_policy_only = step(Attempt(0.0, "chat", SERVED), Attempt(0.3, "chat", REFUSED, "x"))
    assert not by_policy_only.passed  # refused, but not by containment


def test_a_login_is_not_access_but_what_it_is_used_for_is() -> None:
    result = step(Attempt(0.0, "login", SERVED), Attempt(0.1, "chat", REFUSED, "x"))
    assert result.blocked
    assert result.leaked == 0


class _CutBody(httpx.SyncByteStream):
    """What a client reads when the server closes after the headers and part of the body."""

    def __iter__(self) -> Iterator[bytes]:
        yield b'{"id": "chatcmpl-1", '
        raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def test_a_chat_answer_cut_short_counts_as_refused_not_as_a_crash() -> None:
    # An audit-required answer whose record cannot be made durable (the log just turned out to
    # be tampered with, T9) is cut before its last bytes; the drill saw it as an internal error.
    def cut(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "200"}, stream=_CutBody())

    device = Device(
        http=httpx.Client(transport=httpx.MockTransport(cut)),
        server="http://bastion.test",
        principal="c1",
        private_jwk=generate_private_jwk("EdDSA"),
        token="t",
    )
    attempt = device.chat("cyber-frontier")
    assert (attempt.status, attempt.code) == (0, "response_cut")
    assert not attempt.served
    assert attempt.contained
