"""D10: offensive-cyber content labels and refusal bursts on cyber-capable models."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.detect.detector import Context
from bastion.detect.detectors import default_detectors
from bastion.detect.detectors.d10_content import ContentSignals
from bastion.detect.findings import Severity
from bastion.detect.observation import Observation

T0 = 1_750_000_000.0
CONFIG = """\
version: 1
upstreams:
  up: {base_url: "http://upstream.test/v1", api: openai}
models:
  - {name: chat, upstream: up, compartment: general}
  - {name: secret-chat, upstream: up, compartment: secret}
  - {name: cyber, upstream: up, compartment: frontier}
compartments:
  general: {level: internal}
  secret: {level: restricted}
  frontier: {level: critical}
orgs:
  lab: {kind: internal}
principals:
  alice: {kind: user, org: lab}
"""
CTX = Context(config=parse_config(CONFIG))
COMPARTMENTS = {"chat": "general", "secret-chat": "secret", "cyber": "frontier"}


def request(
    at: float,
    *,
    label: str = "malware",
    score: float = 0.8,
    model: str = "cyber",
    refused: bool = False,
    principal: str = "alice",
    name: str = "request.decided",
) -> Observation:
    return Observation(
        idx=-1,
        id=f"ev_{at:.0f}_{label}",
        name=name,
        time=at,
        principal=principal,
        org="lab",
        model=model,
        compartment=COMPARTMENTS[model],
        allowed=True,
        content_label=label,
        content_score=score,
        refused=refused,
    )


def test_one_offensive_request_to_a_critical_model_is_medium() -> None:
    (draft,) = ContentSignals().observe(request(T0), CTX)
    assert draft.detection == "D10"
    assert draft.severity is Severity.MEDIUM
    assert (draft.entity_type, draft.entity, draft.principal, draft.org) == (
        "principal",
        "alice",
        "alice",
        "lab",
    )
    assert draft.explanation == (
        "principal alice sent a request labelled malware (score 0.80) to critical model cyber"
    )
    assert draft.evidence == ("ev_1750000000_malware",)
    assert draft.techniques == ("AML.T0051", "AML.T0054", "AML.T0068")


def test_a_burst_of_five_within_ten_minutes_is_high() -> None:
    detector = ContentSignals()
    labels = ["malware", "exploit_development", "malware", "jailbreak", "malware"]
    drafts = [
        detector.observe(request(T0 + 100 * n, label=label, model="secret-chat"), CTX)[0]
        for n, label in enumerate(labels)
    ]
    assert [d.severity for d in drafts] == [Severity.MEDIUM] * 4 + [Severity.HIGH]
    assert drafts[-1].explanation == (
        "principal alice sent 5 requests labelled exploit_development, jailbreak, malware to "
        "restricted models within 10 min (last: secret-chat)"
    )
    assert len(drafts[-1].evidence) == 5


def test_the_same_five_spread_over_an_hour_never_make_a_burst() -> None:
    detector = ContentSignals()
    severities = {
        d.severity for n in range(5) for d in detector.observe(request(T0 + 900 * n), CTX)
    }
    assert severities == {Severity.MEDIUM}


@pytest.mark.parametrize(
    "obs",
    [
        request(T0, score=0.59),  # below detection.content.threshold
        request(T0, label="bio"),  # a label not in detection.content.labels
        request(T0, label=""),
        request(T0, model="chat"),  # an internal compartment: not cyber-capable
        request(T0, principal=""),  # refused before anyone was identified
        request(T0, name="request.authorized"),
    ],
)
def test_quiet_on_its_false_positive_traps(obs: Observation) -> None:
    assert ContentSignals().observe(obs, CTX) == []


def test_the_threshold_and_labels_come_from_the_config() -> None:
    tuned = Context(
        config=parse_config(
            CONFIG + "detection:\n  content:\n    threshold: 0.9\n    labels: [bio]\n"
        )
    )
    assert ContentSignals().observe(request(T0, score=0.8), tuned) == []
    assert ContentSignals().observe(request(T0, label="bio", score=0.95), tuned) != []


def test_three_refusals_within_ten_minutes_are_medium() -> None:
    detector = ContentSignals()
    refusals = [
        detector.observe(request(T0 + 60 * n, label="", score=0.0, refused=True), CTX)
        for n in range(3)
    ]
    assert refusals[:2] == [[], []]
    (draft,) = refusals[2]
    assert draft.severity is Severity.MEDIUM
    assert draft.explanation == (
        "critical models refused 3 requests of principal alice within 10 min (last: cyber)"
    )


def test_refusals_on_internal_models_or_spread_out_are_not_a_burst() -> None:
    detector = ContentSignals()
    for n in range(5):
        assert detector.observe(request(T0 + n, model="chat", refused=True), CTX) == []
    for n in range(5):
        obs = request(T0 + 1000 * n, label="", refused=True)
        assert detector.observe(obs, CTX) == []


def test_state_survives_a_dump_and_load() -> None:
    first = ContentSignals()
    for n in range(4):
        first.observe(request(T0 + n), CTX)
    second = ContentSignals()
    second.load(first.dump())
    (draft,) = second.observe(request(T0 + 10), CTX)
    assert draft.severity is Severity.HIGH


def test_it_is_in_the_default_pipeline() -> None:
    assert "D10" in [detector.id for detector in default_detectors(CTX.config)]
