"""``playbooks.yaml``: every mistake is one precise ``file:line: key.path: problem``, and the
built-in playbooks keep the brief's rules (D8 never suspends, wide actions wait for a human)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import parse_config
from bastion.config.loader import parse_document
from bastion.config.playbooks import Playbooks, Step
from bastion.detect.findings import Finding, Severity
from bastion.errors import ConfigError
from bastion.respond.playbooks import Situation, default_playbooks, planned

FILE = "playbooks.yaml"
HEAD = "version: 1\nplaybooks:\n  - name: probe\n"  # the playbook's keys start on line 4


def parse(text: str) -> Playbooks:
    return parse_document(text, FILE, Playbooks)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return caught.value.problems


def steps(*lines: str) -> str:
    """A playbook whose actions are these block-list items (the first on line 5)."""
    return HEAD + "    actions:\n" + "".join(f"      - {line}\n" for line in lines)


def test_a_playbook_parses_with_defaults_and_the_string_shorthand() -> None:
    (book,) = parse(
        HEAD
        + "    match: {detections: [D5, 'S:vendor_forbidden_burst']}\n"
        + "    actions:\n"
        + "      - notify\n"
        + "      - {action: throttle, rate: 6, ttl: 1h}\n"
        + "      - {action: suspend_principal, min_count: 3, mode: dry-run}\n"
    ).playbooks
    assert (book.name, book.mode, book.description) == ("probe", "enforce", "")
    assert book.match.detections == ("D5", "S:vendor_forbidden_burst")
    assert (book.match.min_severity, book.match.min_confidence) == ("low", 0.0)
    assert book.match.org_kinds == ("vendor", "internal")
    notify, throttle, suspend = book.actions
    assert notify == Step(action="notify")  # "notify" is short for {action: notify}
    assert (throttle.rate, throttle.ttl, throttle.min_count) == (6.0, 3600, 1)
    assert (suspend.min_count, suspend.mode) == (3, "dry-run")


@pytest.mark.parametrize(
    ("ttl", "seconds"),
    [("90", 90), ("90s", 90), ("15m", 900), ("4h", 14400), ("2d", 172800), ("3600", 3600)],
)
def test_durations_are_read_in_seconds(ttl: str, seconds: int) -> None:
    (book,) = parse(steps(f"{{action: throttle, ttl: {ttl}}}")).playbooks
    assert book.actions[0].ttl == seconds


def test_wide_actions_wait_for_approval_unless_a_step_says_otherwise() -> None:
    (book,) = parse(
        steps(
            "suspend_org",
            "lock_compartment",
            "suspend_principal",
            "{action: throttle, requires_approval: true}",
            "{action: suspend_org, requires_approval: false}",
        )
    ).playbooks
    assert [step.needs_approval for step in book.actions] == [True, True, False, True, False]


def test_d8_may_suspend_together_with_another_detection_and_may_throttle_alone() -> None:
    text = HEAD + "    match: {detections: [D8, D4]}\n    actions: [suspend_principal]\n"
    assert parse(text).playbooks[0].actions[0].action == "suspend_principal"
    alone = HEAD + "    match: {detections: [D8]}\n    actions: [throttle, step_up, notify]\n"
    assert len(parse(alone).playbooks[0].actions) == 3


ACTIONS = (
    "'step_up', 'throttle', 'revoke_family', 'suspend_principal', 'suspend_org', "
    "'lock_compartment', 'lock_key', 'lock_network', 'notify' or 'open_incident'"
)
NOT_A_DETECTION = "is not a detection id (D1 to D15, or S:<sigma rule name>), got "
BREAK_GLASS = "lock_compartment is break-glass only: it always waits for an admin's approval"
NOT_A_DURATION = "is not a duration such as 90s, 15m, 4h or 2d, got "
TTL = "playbooks.yaml:5: playbooks[0].actions[0].ttl: "
D8_ALONE = (
    "playbooks.yaml:3: playbooks[0]: playbook 'probe': D8 (off-hours use) alone must never "
    "suspend ({}); match it together with another detection"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            steps("explode"),
            f"playbooks.yaml:5: playbooks[0].actions[0].action: Input should be {ACTIONS} "
            "(got 'explode')",
            id="unknown-action",
        ),
        pytest.param(
            HEAD + "    matc: {detections: [D2]}\n    actions: [notify]\n",
            "playbooks.yaml:4: playbooks[0].matc: unknown key; did you mean 'match'?",
            id="unknown-playbook-key",
        ),
        pytest.param(
            HEAD + "    match: {detection: [D2]}\n    actions: [notify]\n",
            "playbooks.yaml:4: playbooks[0].match.detection: unknown key; did you mean "
            "'detections'?",
            id="unknown-match-key",
        ),
        pytest.param(
            steps("{action: throttle, rat: 3}"),
            "playbooks.yaml:5: playbooks[0].actions[0].rat: unknown key; did you mean 'rate'?",
            id="unknown-step-key",
        ),
        pytest.param(
            HEAD + "    colour: red\n    actions: [notify]\n",
            "playbooks.yaml:4: playbooks[0].colour: unknown key (expected one of: name, "
            "description, mode, match, actions)",
            id="unknown-key-no-suggestion",
        ),
        pytest.param(
            "version: 1\nplaybook: []\n",
            "playbooks.yaml:2: playbook: unknown key; did you mean 'playbooks'?",
            id="unknown-top-level-key",
        ),
        pytest.param(
            HEAD + "    match: {detections: [D2, D16]}\n    actions: [notify]\n",
            f"playbooks.yaml:4: playbooks[0].match.detections[1]: {NOT_A_DETECTION}'D16'",
            id="detection-D16",
        ),
        pytest.param(
            HEAD + "    match: {detections: [D0]}\n    actions: [notify]\n",
            f"playbooks.yaml:4: playbooks[0].match.detections[0]: {NOT_A_DETECTION}'D0'",
            id="detection-D0",
        ),
        pytest.param(
            HEAD + "    match: {detections: [d2]}\n    actions: [notify]\n",
            f"playbooks.yaml:4: playbooks[0].match.detections[0]: {NOT_A_DETECTION}'d2'",
            id="detection-lowercase",
        ),
        pytest.param(
            HEAD + "    match: {detections: ['sigma:x']}\n    actions: [notify]\n",
            f"playbooks.yaml:4: playbooks[0].match.detections[0]: {NOT_A_DETECTION}'sigma:x'",
            id="detection-sigma-prefix",
        ),
        pytest.param(
            HEAD + "    match: {detections: ['S:Bad Name']}\n    actions: [notify]\n",
            f"playbooks.yaml:4: playbooks[0].match.detections[0]: {NOT_A_DETECTION}'S:Bad Name'",
            id="detection-bad-sigma-name",
        ),
        pytest.param(
            HEAD + "    match: {detections: D2}\n    actions: [notify]\n",
            "playbooks.yaml:4: playbooks[0].match.detections: must be a list (got 'D2')",
            id="detections-not-a-list",
        ),
        pytest.param(
            HEAD + "    actions: [notify]\n  - name: probe\n    actions: [throttle]\n",
            "playbooks.yaml:1: playbook names must be unique; repeated: probe",
            id="duplicate-names",
        ),
        pytest.param(
            HEAD + "    actions: []\n",
            "playbooks.yaml:4: playbooks[0].actions: must list at least one action",
            id="empty-actions",
        ),
        pytest.param(
            HEAD,
            "playbooks.yaml:3: playbooks[0].actions: missing required key",
            id="no-actions",
        ),
        pytest.param(
            HEAD + "    actions: notify\n",
            "playbooks.yaml:4: playbooks[0].actions: must be a list (got 'notify')",
            id="actions-not-a-list",
        ),
        pytest.param(
            steps("{action: lock_compartment, requires_approval: false}"),
            f"playbooks.yaml:5: playbooks[0].actions[0]: {BREAK_GLASS}",
            id="lock-compartment-without-approval",
        ),
        pytest.param(
            steps("{action: lock_compartment, approval_waived_at: critical}"),
            f"playbooks.yaml:5: playbooks[0].actions[0]: {BREAK_GLASS}",
            id="lock-compartment-waived",
        ),
        pytest.param(
            steps("{action: suspend_principal, rate: 3}"),
            "playbooks.yaml:5: playbooks[0].actions[0]: suspend_principal: only throttle takes "
            "a rate",
            id="rate-on-suspend",
        ),
        pytest.param(
            steps("{action: notify, ttl: 1h}"),
            "playbooks.yaml:5: playbooks[0].actions[0]: notify takes no ttl",
            id="ttl-on-notify",
        ),
        pytest.param(
            steps("{action: open_incident, ttl: 1h}"),
            "playbooks.yaml:5: playbooks[0].actions[0]: open_incident takes no ttl",
            id="ttl-on-open-incident",
        ),
        pytest.param(
            steps("{action: throttle, ttl: 5x}"), f"{TTL}{NOT_A_DURATION}'5x'", id="ttl-5x"
        ),
        pytest.param(
            steps("{action: throttle, ttl: '-1'}"), f"{TTL}{NOT_A_DURATION}'-1'", id="ttl-'-1'"
        ),
        pytest.param(
            steps("{action: throttle, ttl: -1}"), f"{TTL}must be at least 1 (got -1)", id="ttl--1"
        ),
        pytest.param(
            steps("{action: throttle, ttl: 0}"), f"{TTL}must be at least 1 (got 0)", id="ttl-0"
        ),
        pytest.param(
            steps("{action: throttle, ttl: 0s}"), f"{TTL}must be at least 1 (got '0s')", id="0s"
        ),
        pytest.param(
            steps("{action: throttle, ttl: 9999999d}"),
            f"{TTL}must be at most 31536000 (got '9999999d')",
            id="ttl-huge",
        ),
        pytest.param(
            steps("{action: throttle, ttl: 99999999999999999999999}"),
            f"{TTL}must be at most 31536000 (got 99999999999999999999999)",
            id="ttl-huge-number",
        ),
        pytest.param(
            steps("{action: throttle, ttl: true}"),
            f"{TTL}{NOT_A_DURATION}a boolean",
            id="ttl-boolean",
        ),
        pytest.param(
            steps("{action: throttle, rate: 0}"),
            "playbooks.yaml:5: playbooks[0].actions[0].rate: must be greater than 0 (got 0)",
            id="rate-0",
        ),
        pytest.param(
            steps("{action: throttle, rate: .inf}"),
            "playbooks.yaml:5: playbooks[0].actions[0].rate: must be at most 10000 (got inf)",
            id="rate-inf",
        ),
        pytest.param(
            HEAD + "    match: {min_confidence: 1.5}\n    actions: [notify]\n",
            "playbooks.yaml:4: playbooks[0].match.min_confidence: must be at most 1 (got 1.5)",
            id="confidence-above-1",
        ),
        pytest.param(
            HEAD + "    match: {min_confidence: -0.1}\n    actions: [notify]\n",
            "playbooks.yaml:4: playbooks[0].match.min_confidence: must be at least 0 (got -0.1)",
            id="confidence-negative",
        ),
        pytest.param(
            steps("{action: suspend_principal, min_count: 0}"),
            "playbooks.yaml:5: playbooks[0].actions[0].min_count: must be at least 1 (got 0)",
            id="min-count-0",
        ),
        pytest.param(
            HEAD + "    match: {detections: [D8]}\n    actions: [notify, suspend_principal]\n",
            D8_ALONE.format("suspend_principal"),
            id="d8-suspends-principal",
        ),
        pytest.param(
            HEAD + "    match: {detections: [D8]}\n    actions: [suspend_org]\n",
            D8_ALONE.format("suspend_org"),
            id="d8-suspends-org",
        ),
        pytest.param(
            HEAD + "    match: {detections: [D8, D8]}\n    actions: [suspend_principal]\n",
            D8_ALONE.format("suspend_principal"),
            id="d8-twice-is-still-alone",
        ),
        pytest.param(
            "version: 2\nplaybooks: []\n",
            "playbooks.yaml:1: version: Input should be 1 (got 2)",
            id="version-2",
        ),
        pytest.param(
            HEAD.replace("probe", "Probe Me") + "    actions: [notify]\n",
            "playbooks.yaml:3: playbooks[0].name: is not a name (lowercase letters, digits, '.', "
            "'_', '-'), got 'Probe Me'",
            id="bad-name",
        ),
        pytest.param(
            HEAD + "    match: {min_severity: severe}\n    actions: [notify]\n",
            "playbooks.yaml:4: playbooks[0].match.min_severity: Input should be 'low', 'medium', "
            "'high' or 'critical' (got 'severe')",
            id="bad-severity",
        ),
        pytest.param(
            HEAD + "    mode: dryrun\n    actions: [notify]\n",
            "playbooks.yaml:4: playbooks[0].mode: Input should be 'enforce' or 'dry-run' "
            "(got 'dryrun')",
            id="bad-mode",
        ),
        pytest.param(
            HEAD + "    match: {org_kinds: [partner]}\n    actions: [notify]\n",
            "playbooks.yaml:4: playbooks[0].match.org_kinds[0]: Input should be 'vendor' or "
            "'internal' (got 'partner')",
            id="bad-org-kind",
        ),
        pytest.param(
            steps("3"),
            "playbooks.yaml:5: playbooks[0].actions[0]: must be a mapping with keys action, "
            "mode, requires_approval, approval_waived_at, min_count, ttl, rate (got 3)",
            id="step-a-number",
        ),
        pytest.param(
            steps("{ttl: 1h}"),
            "playbooks.yaml:5: playbooks[0].actions[0].action: missing required key",
            id="step-without-action",
        ),
        pytest.param(
            "version: 1\nplaybooks: {probe: [notify]}\n",
            "playbooks.yaml:2: playbooks: must be a list (got a mapping)",
            id="playbooks-a-mapping",
        ),
        pytest.param(
            HEAD + "    actions: [notify]\n    actions: [throttle]\n",
            "playbooks.yaml:5: playbooks[0]: duplicate key 'actions' (first on line 4)",
            id="duplicate-key",
        ),
    ],
)
def test_bad_playbooks_are_named_by_file_line_and_key(text: str, expected: str) -> None:
    assert problems(text) == [expected]  # one problem: no noise around the real one


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "- name: probe\n  actions: [notify]\n",
            "playbooks.yaml:1: the top level must be a mapping",
        ),
        ("notify\n", "playbooks.yaml:1: the top level must be a mapping"),
        ("", "playbooks.yaml:1: the file is empty"),
        (HEAD + "    actions: [notify\n", "playbooks.yaml:5: YAML syntax error"),
    ],
)
def test_a_file_that_is_not_a_playbooks_document_is_refused(text: str, expected: str) -> None:
    (problem,) = problems(text)
    assert problem.startswith(expected)


def test_every_problem_is_reported_at_once() -> None:
    text = steps("explode", "{action: throttle, ttl: 5x}", "{action: notify, ttl: 1h}")
    assert [p.split(": ")[1] for p in problems(text)] == [
        "playbooks[0].actions[0].action",
        "playbooks[0].actions[1].ttl",
        "playbooks[0].actions[2]",
    ]
    assert [p.split(":")[1] for p in problems(text)] == ["5", "6", "7"]


# -- response.playbooks and response.automatic in bastion.yaml ---------------------------------

BASE = """\
version: 1
orgs:
  lab: {kind: internal}
principals:
  alice: {kind: user, org: lab}
response:
"""


def test_bastion_yaml_names_the_file_and_limits_automatic_actions() -> None:
    config = parse_config(BASE + "  playbooks: playbooks.yaml\n  automatic: {window: 10m}\n")
    assert config.response.playbooks == "playbooks.yaml"
    automatic = config.response.automatic
    assert (automatic.enabled, automatic.max_actions, automatic.window) == (True, 20, 600)
    default = parse_config(BASE.removesuffix("response:\n")).response
    assert default.playbooks is None  # the built-in playbooks
    assert (default.automatic.max_actions, default.automatic.window) == (20, 300)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("  automatic: {max_actions: 0}\n", "response.automatic.max_actions: must be at least 1"),
        ("  automatic: {window: 2d}\n", "response.automatic.window: must be at most 86400"),
        ("  automatic: {window: true}\n", f"response.automatic.window: {NOT_A_DURATION}"),
        ("  automatic: {enable: false}\n", "did you mean 'enabled'?"),
        ("  playbooks: 3\n", "response.playbooks: must be a string (got 3)"),
    ],
)
def test_bad_response_settings_are_named(section: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + section)
    (problem,) = caught.value.problems
    assert problem.startswith("bastion.yaml:7: ")
    assert expected in problem


# -- the built-in playbooks ---------------------------------------------------------------------

BUILT_IN = default_playbooks().playbooks


def finding(detection: str, severity: Severity = Severity.HIGH, count: int = 1) -> Finding:
    return Finding(
        id="fd_1",
        detection=detection,
        severity=severity,
        confidence=1.0,
        techniques=(),
        entity_type="principal",
        entity="victor",
        principal="victor",
        org="acme",
        explanation="test",
        evidence=(),
        first_seen=0.0,
        last_seen=0.0,
        count=count,
    )


def actions_for(detection: str, org_kind: str, count: int = 1) -> list[str]:
    plan = planned(BUILT_IN, finding(detection, count=count), Situation(org_kind, frozenset()))
    return [step.action for _, step in plan]


def test_the_built_in_playbooks_parse_with_unique_names() -> None:
    names = [book.name for book in BUILT_IN]
    assert len(names) >= 10
    assert len(set(names)) == len(names)
    assert all(book.mode == "enforce" for book in BUILT_IN)


@pytest.mark.parametrize("org_kind", ["vendor", "internal"])
def test_built_in_d2_revokes_the_family_and_d9_opens_an_incident(org_kind: str) -> None:
    assert "revoke_family" in actions_for("D2", org_kind)
    assert "open_incident" in actions_for("D9", org_kind)


def test_built_in_d5_throttles_a_vendor_first_and_suspends_only_if_it_goes_on() -> None:
    first = actions_for("D5", "vendor")
    assert "throttle" in first
    assert not any(action.startswith("suspend_") for action in first)
    (book,) = [
        b
        for b in BUILT_IN
        if "suspend_principal" in [s.action for s in b.actions] and "D5" in b.match.detections
    ]
    order = [step.action for step in book.actions]
    assert order.index("throttle") < order.index("suspend_principal")
    (suspend,) = [step for step in book.actions if step.action == "suspend_principal"]
    assert suspend.min_count > 1
    assert "suspend_principal" in actions_for("D5", "vendor", count=suspend.min_count)
    assert "suspend_principal" not in actions_for("D5", "internal", count=100)


@pytest.mark.parametrize("org_kind", ["vendor", "internal", ""])
@pytest.mark.parametrize("severity", list(Severity))
def test_no_built_in_playbook_suspends_on_d8_alone(org_kind: str, severity: Severity) -> None:
    plan = planned(BUILT_IN, finding("D8", severity, count=1000), Situation(org_kind, frozenset()))
    assert not [step.action for _, step in plan if step.action.startswith("suspend_")]


def test_built_in_org_suspension_waits_for_approval_unless_critical() -> None:
    suspensions = [s for b in BUILT_IN for s in b.actions if s.action == "suspend_org"]
    assert suspensions
    for step in suspensions:
        assert step.needs_approval
        assert step.approval_waived_at in (None, "critical")


def test_built_in_compartment_locks_are_never_automatic() -> None:
    automatic = [s for b in BUILT_IN for s in b.actions if not s.needs_approval]
    assert "lock_compartment" not in [step.action for step in automatic]
    waived = [s for b in BUILT_IN for s in b.actions if s.action == "lock_compartment"]
    assert all(step.approval_waived_at is None for step in waived)


# -- docs/response.md ---------------------------------------------------------------------------

DOC = (Path(__file__).parents[3] / "docs" / "response.md").read_text(encoding="utf-8")


def test_the_documented_playbooks_file_is_valid() -> None:
    blocks = [block.split("```", 1)[0] for block in DOC.split("```yaml\n")[1:]]
    (example,) = [block for block in blocks if block.startswith("version: 1\nplaybooks:")]
    books = parse_document(example, "docs/response.md", Playbooks).playbooks
    assert len(books) >= 3


def test_the_documented_built_in_table_names_every_built_in_playbook() -> None:
    table = DOC.split("### The built-in playbooks", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [book.name for book in BUILT_IN]
