"""Sigma detection rules on Bastion's events: every supported modifier, the condition forms, and
the findings a matching rule raises (id, severity, techniques, entity). Correlations are in
test_sigma_correlations.py, bad rules in test_sigma_rule_errors.py."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.detectors import default_detectors
from bastion.detect.findings import Draft, Severity
from bastion.detect.observation import Observation
from bastion.detect.sigma import FIELDS, SigmaDetector, load_rules

CONTEXT = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {"lab": {"kind": "internal"}, "acme": {"kind": "vendor"}},
            "principals": {
                "alice": {"kind": "user", "org": "lab"},
                "bob": {"kind": "user", "org": "acme"},
            },
            "compartments": {"frontier": {"level": "critical"}},
        }
    )
)
_ids = itertools.count()


def event(**fields: Any) -> Observation:
    record: dict[str, Any] = {
        "id": f"ev_{next(_ids)}",
        "name": "request.decided",
        "time": 1000.0,
        "principal": "bob",
        "org": "acme",
        "model": "demo-chat",
        "status": 200,
        "allowed": True,
    }
    record.update(fields)
    return Observation.from_record(record)


def detector(tmp_path: Path, text: str) -> SigmaDetector:
    (tmp_path / "rule.yml").write_text(text, encoding="utf-8")
    return SigmaDetector(load_rules(["rule.yml"], tmp_path))


def rule(detection: str, *, head: str = "") -> str:
    """A detection rule named ``probe`` with the given detection block (indented YAML)."""
    return (
        f"title: Probe\nname: probe\nlogsource: {{product: bastion}}\n{head}detection:\n"
        + detection
    )


def matches(tmp_path: Path, detection: str, **fields: Any) -> bool:
    drafts = detector(tmp_path, rule(detection)).observe(event(**fields), CONTEXT)
    return any(draft.detection == "S:probe" for draft in drafts)


def only(drafts: list[Draft]) -> Draft:
    assert len(drafts) == 1, drafts
    return drafts[0]


# -- values and modifiers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selection", "fields", "expected"),
    [
        ("model: Demo-Chat", {"model": "demo-chat"}, True),  # case-insensitive by default
        ("model|cased: Demo-Chat", {"model": "demo-chat"}, False),
        ("model|cased: demo-chat", {"model": "demo-chat"}, True),
        ("model: demo", {"model": "demo-chat"}, False),  # equality, not substring
        ("model|contains: MO-CH", {"model": "demo-chat"}, True),
        ("model|contains: embed", {"model": "demo-chat"}, False),
        ("model|startswith: demo-", {"model": "demo-chat"}, True),
        ("model|startswith: chat", {"model": "demo-chat"}, False),
        ("model|endswith: -chat", {"model": "demo-chat"}, True),
        ("model|endswith: demo", {"model": "demo-chat"}, False),
        ("model: 'd*o-c?at'", {"model": "demo-chat"}, True),  # wildcards in the middle
        ("model: 'd*o-c?t'", {"model": "demo-chat"}, False),
        ("model: 'demo\\*'", {"model": "demo*"}, True),  # an escaped star is a star
        ("model: 'demo\\*'", {"model": "demo-chat"}, False),
        ("country: '*'", {"country": "NL"}, True),  # a lone star: any value ...
        ("country: '*'", {}, False),  # ... but not a missing one
        ("model: [demo-embed, demo-chat]", {"model": "demo-chat"}, True),  # a list is "any of"
        ("model: [demo-embed, demo-claude]", {"model": "demo-chat"}, False),
        ("model|contains|all: [demo, chat]", {"model": "demo-chat"}, True),
        ("model|contains|all: [demo, claude]", {"model": "demo-chat"}, False),
        ("org|neq: lab", {"org": "acme"}, True),
        ("org|neq: acme", {"org": "acme"}, False),
    ],
)
def test_text_modifiers(
    tmp_path: Path, selection: str, fields: dict[str, Any], expected: bool
) -> None:
    assert matches(tmp_path, f"  sel:\n    {selection}\n  condition: sel\n", **fields) is expected


@pytest.mark.parametrize(
    ("selection", "client", "expected"),
    [
        ("client|re: 'python-httpx/0\\.2[0-9]'", "python-httpx/0.28.1", True),  # searches anywhere
        ("client|re: '^openai/'", "python-httpx/0.28.1 openai/1.0", False),  # unless anchored
        ("client|re: '^OpenAI/'", "openai/1.0", False),  # case-sensitive by default
        ("client|re|i: '^OpenAI/'", "openai/1.0", True),
        ("client|re: '^(a+)+$'", "a" * 150 + "!", False),  # RE2: no catastrophic backtracking
        ("client|re: '^(a+)+$'", "a" * 150, True),
    ],
)
def test_regular_expressions(tmp_path: Path, selection: str, client: str, expected: bool) -> None:
    assert (
        matches(tmp_path, f"  sel:\n    {selection}\n  condition: sel\n", client=client) is expected
    )


@pytest.mark.parametrize(
    ("selection", "source_ip", "expected"),
    [
        ("source_ip|cidr: 203.0.113.0/24", "203.0.113.77", True),
        ("source_ip|cidr: 203.0.113.0/24", "203.0.114.1", False),
        ("source_ip|cidr: 2001:db8::/32", "2001:db8:1::5", True),
        ("source_ip|cidr: 2001:db8::/32", "203.0.113.77", False),  # other IP version
        ("source_ip|cidr: [10.0.0.0/8, 203.0.113.0/24]", "203.0.113.77", True),
        ("network|cidr: 203.0.112.0/22", "203.0.113.77", True),  # its /24 lies inside
        ("network|cidr: 203.0.113.128/25", "203.0.113.200", False),  # the /24 does not
        ("source_ip|cidr: 10.0.0.0/8", "", False),
    ],
)
def test_cidr(tmp_path: Path, selection: str, source_ip: str, expected: bool) -> None:
    assert (
        matches(tmp_path, f"  sel:\n    {selection}\n  condition: sel\n", source_ip=source_ip)
        is expected
    )


@pytest.mark.parametrize(
    ("modifier", "tokens_out", "expected"),
    [
        ("gt", 1000, False),
        ("gt", 1001, True),
        ("gte", 999, False),
        ("gte", 1000, True),
        ("lt", 1000, False),
        ("lt", 999, True),
        ("lte", 1001, False),
        ("lte", 1000, True),
    ],
)
def test_numeric_comparisons_at_the_boundary(
    tmp_path: Path, modifier: str, tokens_out: int, expected: bool
) -> None:
    detection = f"  sel:\n    tokens_out|{modifier}: 1000\n  condition: sel\n"
    assert matches(tmp_path, detection, tokens_out=tokens_out) is expected


@pytest.mark.parametrize(
    ("selection", "fields", "expected"),
    [
        ("jkt|exists: true", {"jkt": "k" * 43}, True),
        ("jkt|exists: true", {}, False),
        ("jkt|exists: false", {}, True),
        ("jkt|exists: false", {"jkt": "k" * 43}, False),
        ("family: null", {}, True),
        ("family: null", {"family": "fam_1"}, False),
        ("reasons|exists: false", {"reasons": []}, True),
        ("tokens_out|exists: true", {"tokens_out": 0}, False),  # 0 is "no usage recorded"
        ("allowed|exists: true", {"allowed": False}, True),  # a flag is always there
    ],
)
def test_exists_and_null(
    tmp_path: Path, selection: str, fields: dict[str, Any], expected: bool
) -> None:
    assert matches(tmp_path, f"  sel:\n    {selection}\n  condition: sel\n", **fields) is expected


@pytest.mark.parametrize(
    ("selection", "fields", "expected"),
    [
        ("status: 403", {"status": 403}, True),
        ("status: 403", {"status": 200}, False),
        ("status: '403'", {"status": 403}, True),  # a quoted number is still a number
        ("status|startswith: '4'", {"status": 429}, True),  # text patterns see the digits
        ("status|startswith: '4'", {"status": 500}, False),
        ("content_score|gte: 0.8", {"content_score": 0.85}, True),
        ("content_score|gte: 0.8", {"content_score": 0.5}, False),
        ("allowed: false", {"allowed": False}, True),
        ("allowed: false", {"allowed": True}, False),
        ("allowed: 'true'", {"allowed": True}, True),
        ("reasons: not_granted", {"reasons": ["mfa_stale", "not_granted"]}, True),  # any element
        ("reasons: not_granted", {"reasons": ["mfa_stale"]}, False),
        ("reasons|contains: granted", {"reasons": ["not_granted"]}, True),
        ("act: svc-batch", {"act": ["svc-batch"]}, True),
        ("org_kind: vendor", {"principal": "bob", "org": "acme"}, True),
        ("org_kind: vendor", {"principal": "alice", "org": "lab"}, False),
        ("org_kind: vendor", {"principal": "bob", "org": ""}, True),  # the org from the config
        ("compartment_level: critical", {"compartment": "frontier"}, True),
        ("compartment_level: critical", {"compartment": "general"}, False),
    ],
)
def test_numbers_flags_lists_and_derived_fields(
    tmp_path: Path, selection: str, fields: dict[str, Any], expected: bool
) -> None:
    assert matches(tmp_path, f"  sel:\n    {selection}\n  condition: sel\n", **fields) is expected


def test_every_documented_field_is_an_observation_attribute_or_derived() -> None:
    observed = set(Observation.__dataclass_fields__)
    assert set(FIELDS) - observed == {"org_kind", "compartment_level"}
    assert {"principal", "tokens_out", "name", "action", "error", "content_label"} <= set(FIELDS)


# -- conditions ----------------------------------------------------------------------------------

SELECTIONS = """\
  sel_vendor:
    org: acme
  sel_denied:
    allowed: false
  filter_batch:
    principal: svc-batch
"""


@pytest.mark.parametrize(
    ("condition", "fields", "expected"),
    [
        ("sel_vendor and sel_denied", {"allowed": False}, True),
        ("sel_vendor and sel_denied", {"allowed": True}, False),
        ("sel_vendor and not sel_denied", {"allowed": True}, True),
        ("1 of sel_*", {"org": "lab", "allowed": False}, True),
        ("1 of sel_*", {"org": "lab", "allowed": True}, False),
        ("all of sel_*", {"allowed": False}, True),
        ("all of sel_*", {"allowed": True}, False),
        ("any of sel_*", {"org": "lab", "allowed": False}, True),
        ("all of them", {"allowed": False, "principal": "svc-batch"}, True),
        ("all of them", {"allowed": False}, False),
        ("1 of them", {"org": "lab", "principal": "svc-batch"}, True),
        ("1 of sel_* and not filter_batch", {"principal": "svc-batch"}, False),
        ("(sel_denied or filter_batch) and sel_vendor", {"principal": "svc-batch"}, True),
        (
            "sel_denied or (filter_batch and sel_vendor)",
            {"org": "lab", "principal": "svc-batch"},
            False,
        ),
        ("not (sel_vendor or sel_denied)", {"org": "lab"}, True),
    ],
)
def test_condition_forms(
    tmp_path: Path, condition: str, fields: dict[str, Any], expected: bool
) -> None:
    assert matches(tmp_path, SELECTIONS + f"  condition: {condition}\n", **fields) is expected


def test_a_list_of_mappings_is_any_of_them(tmp_path: Path) -> None:
    detection = (
        "  sel:\n    - principal: alice\n      model: demo-chat\n    - org: acme\n"
        "  condition: sel\n"
    )
    assert matches(tmp_path, detection, principal="alice", org="lab", model="demo-chat")
    assert matches(tmp_path, detection, principal="bob", org="acme", model="other")
    assert not matches(tmp_path, detection, principal="alice", org="lab", model="other")


def test_several_conditions_are_any_of_them(tmp_path: Path) -> None:
    detection = SELECTIONS + "  condition:\n    - sel_denied\n    - filter_batch\n"
    assert matches(tmp_path, detection, principal="svc-batch")
    assert matches(tmp_path, detection, allowed=False)
    assert not matches(tmp_path, detection)


# -- what a matching rule raises -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        ("informational", Severity.LOW),
        ("low", Severity.LOW),
        ("medium", Severity.MEDIUM),
        ("high", Severity.HIGH),
        ("critical", Severity.CRITICAL),
    ],
)
def test_severity_comes_from_the_level(tmp_path: Path, level: str, severity: Severity) -> None:
    text = rule("  sel:\n    allowed: false\n  condition: sel\n", head=f"level: {level}\n")
    draft = only(detector(tmp_path, text).observe(event(allowed=False), CONTEXT))
    assert draft.severity is severity


def test_a_match_is_a_finding_about_the_principal(tmp_path: Path) -> None:
    head = (
        "level: high\ntags: [attack.t1078.004, attack.initial-access, atlas.aml.t0024.002, "
        "atlas.t0014, cve.2024-0001]\n"
    )
    text = rule("  sel:\n    status: 403\n  condition: sel\n", head=head)
    drafts = detector(tmp_path, text).observe(
        event(id="ev_x", status=403, source_ip="203.0.113.9", org=""), CONTEXT
    )
    draft = only(drafts)
    assert draft.detection == "S:probe"
    assert (draft.entity_type, draft.entity, draft.principal) == ("principal", "bob", "bob")
    assert draft.org == "acme"  # from the config when the event has none
    assert draft.techniques == ("T1078.004", "AML.T0024.002", "AML.T0014")
    assert draft.evidence == ("ev_x",)
    assert draft.explanation == (
        "Probe: request.decided by bob on model demo-chat from 203.0.113.0/24"
    )


def test_admin_events_are_about_the_actor(tmp_path: Path) -> None:
    text = rule("  sel:\n    name: lock.deleted\n  condition: sel\n")
    admin = event(name="lock.deleted", principal="", org="", actor="alice", model="")
    draft = only(detector(tmp_path, text).observe(admin, CONTEXT))
    assert (draft.entity_type, draft.entity, draft.org) == ("principal", "alice", "lab")


def test_the_rule_id_names_the_detection_when_there_is_no_name(tmp_path: Path) -> None:
    text = (
        "title: Probe\nid: 5d4e1f3a-9b8c-4d7e-a6f5-0e1d2c3b4a59\nlogsource: {product: bastion}\n"
        "detection:\n  sel:\n    allowed: false\n  condition: sel\n"
    )
    draft = only(detector(tmp_path, text).observe(event(allowed=False), CONTEXT))
    assert draft.detection == "S:5d4e1f3a-9b8c-4d7e-a6f5-0e1d2c3b4a59"
    assert draft.severity is Severity.MEDIUM  # no level


def test_no_match_no_finding(tmp_path: Path) -> None:
    text = rule("  sel:\n    allowed: false\n  condition: sel\n")
    assert detector(tmp_path, text).observe(event(allowed=True), CONTEXT) == []


def test_rules_load_from_a_directory_relative_to_the_config(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    (rules / "nested").mkdir(parents=True)
    body = "title: {0}\nname: {0}\nlogsource: {{product: bastion}}\n"
    body += "detection:\n  sel:\n    allowed: false\n  condition: sel\n"
    (rules / "a.yml").write_text(body.format("a"), encoding="utf-8")
    (rules / "nested" / "b.yaml").write_text(body.format("b"), encoding="utf-8")
    (rules / "notes.txt").write_text("not a rule", encoding="utf-8")
    (rules / ".draft.yml").write_text("title: [broken", encoding="utf-8")
    loaded = load_rules(["rules"], tmp_path)
    assert [r.meta.detection for r in loaded.detections] == ["S:a", "S:b"]


def test_default_detectors_add_the_sigma_detector_only_when_rules_are_configured(
    tmp_path: Path,
) -> None:
    (tmp_path / "r.yml").write_text(rule("  sel:\n    allowed: false\n  condition: sel\n"))
    plain = default_detectors(CONTEXT.config)
    assert all(d.id != "S" for d in plain)
    configured = CONTEXT.config.model_copy(
        update={"detection": CONTEXT.config.detection.model_copy(update={"rules": ("r.yml",)})}
    )
    with_rules = default_detectors(configured, base_dir=tmp_path)
    assert [d.id for d in with_rules] == [*(d.id for d in plain), "S"]
