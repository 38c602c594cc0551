"""D15 client tooling: a token family switching to a tool its principal never used is MEDIUM,
a principal's first use of a new tool LOW; quiet on SDK upgrades, async clients, programs
mixing known SDKs, a new hire's first day and calls without a user agent."""

from __future__ import annotations

import json
import secrets

import pytest

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors.d15_client_fingerprint import ClientFingerprint, tool_of
from bastion.detect.findings import Severity
from bastion.detect.observation import Observation

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
DAY = 86_400.0
SDK = "OpenAI/Python 1.40.0"
CTX = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {"acme": {"kind": "vendor"}},
            "principals": {"victor": {"kind": "user", "org": "acme"}},
        }
    )
)


def d15_call(
    time: float,
    client: str = SDK,
    family: str = "fam_1",
    principal: str = "victor",
    **fields: object,
) -> Observation:
    values: dict[str, object] = {"name": "request.decided", "allowed": True}
    values.update(fields)
    return Observation(
        idx=-1,
        id="ev_" + secrets.token_hex(6),
        time=time,
        principal=principal,
        client=client,
        family=family,
        **values,  # type: ignore[arg-type]
    )


def d15_baselined() -> ClientFingerprint:
    """Two days of victor calling through the OpenAI SDK, a token family a day."""
    detector = ClientFingerprint()
    for n in range(30):
        family = f"fam_day{n * 3600 // DAY:.0f}"
        assert detector.observe(d15_call(T0 + n * 3600, family=family), CTX) == []
    return detector


@pytest.mark.parametrize(
    ("client", "tool"),
    [
        ("OpenAI/Python 3.57.0", "openai/python"),
        ("AsyncOpenAI/Python 1.57.0", "openai/python"),
        ("Anthropic/Python 2.14.0", "anthropic/python"),
        ("curl/8.5", "curl"),
        ("python-httpx/0.27.0", "python-httpx"),
        ("Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101", "mozilla"),
        ("OpenAI/JS v4.20.1", "openai/js"),
        ("1.2.3", ""),
        ("", ""),
    ],
)
def test_tools_are_named_without_versions(client: str, tool: str) -> None:
    assert tool_of(client) == tool


def test_a_token_family_switching_to_a_new_tool_is_medium() -> None:
    detector = d15_baselined()
    family = "fam_day1"
    obs = d15_call(T0 + 2 * DAY, "curl/8.5.0", family)
    [draft] = detector.observe(obs, CTX)
    assert draft.detection == "D15"
    assert (draft.severity, draft.entity_type, draft.entity) == (Severity.MEDIUM, "family", family)
    assert (draft.principal, draft.org) == ("victor", "acme")
    assert draft.evidence == (obs.id,)
    assert draft.techniques == ("AML.T0016.001",)
    for evidence in (family, "openai/python", "curl", "victor"):
        assert evidence in draft.explanation


def test_a_new_tool_on_a_new_login_is_low() -> None:
    detector = d15_baselined()
    [draft] = detector.observe(d15_call(T0 + 2 * DAY, "curl/8.5.0", "fam_new"), CTX)
    assert (draft.severity, draft.entity_type, draft.entity) == (
        Severity.LOW,
        "principal",
        "victor",
    )
    assert "new client tool curl" in draft.explanation
    assert "known tools: openai/python" in draft.explanation
    # learned: curl again (in any family) is no longer new
    assert detector.observe(d15_call(T0 + 2 * DAY + 60, "curl/8.6", "fam_day1"), CTX) == []


def test_sdk_upgrades_are_not_changes() -> None:
    detector = d15_baselined()
    for client in ("OpenAI/Python 1.57.0", "AsyncOpenAI/Python 1.57.2", "OpenAI/Python 2.0.0"):
        assert detector.observe(d15_call(T0 + 2 * DAY, client, "fam_day1"), CTX) == []


def test_a_program_mixing_tools_the_principal_uses_is_quiet() -> None:
    detector = ClientFingerprint()
    for n in range(30):  # one program, both SDKs, one helper session a day
        client = ("OpenAI/Python 1.40.0", "Anthropic/Python 0.40.0")[n % 2]
        detector.observe(d15_call(T0 + n * 3600, client, f"fam_{n // 24}"), CTX)
    for n, client in enumerate(("Anthropic/Python 0.41.0", "OpenAI/Python 1.41.0")):
        assert detector.observe(d15_call(T0 + 2 * DAY + n, client, "fam_x"), CTX) == []


def test_a_new_hire_first_day_is_learned() -> None:
    detector = ClientFingerprint()
    for n, client in enumerate([SDK, "curl/8.5", "Anthropic/Python 0.40.0", "python-httpx/0.27"]):
        assert detector.observe(d15_call(T0 + n * 600, client, "fam_first"), CTX) == []


def test_calls_without_a_user_agent_or_a_principal_are_ignored() -> None:
    detector = d15_baselined()
    assert detector.observe(d15_call(T0 + 2 * DAY, "", "fam_day1"), CTX) == []
    assert detector.observe(d15_call(T0 + 2 * DAY, "curl/8", "", principal=""), CTX) == []
    token = d15_call(T0 + 2 * DAY, "curl/8", "fam_day1", name="token.issued")
    assert detector.observe(token, CTX) == []  # only requests carry the caller's tool


def test_state_round_trips_through_json() -> None:
    detector = d15_baselined()
    copy = ClientFingerprint()
    copy.load(json.loads(json.dumps(detector.dump())))
    assert copy.dump() == detector.dump()
    assert copy.observe(d15_call(T0 + 2 * DAY, "curl/8", "fam_day1"), CTX) != []


def test_state_stays_bounded_for_50000_principals() -> None:
    detector = ClientFingerprint(cap_principals=20_000, cap_families=20_000)
    for n in range(50_000):
        detector.observe(d15_call(T0 + n, SDK, f"fam_{n}", f"p{n}"), CTX)
    assert len(detector.activity) == len(detector.tools) == len(detector.families) == 20_000
    assert detector.activity.stats.evictions == detector.families.stats.evictions == 30_000
    assert detector.tools.stats.evictions == 30_000
