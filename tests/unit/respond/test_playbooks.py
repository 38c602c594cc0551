"""Which playbook steps a finding sets off (pure matching), and how the running playbooks follow
the file: reloaded when it changes, kept when a new version is broken."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.config import BastionConfig, parse_config
from bastion.config.loader import parse_document
from bastion.config.playbooks import Playbook, Playbooks
from bastion.detect.findings import Finding, Severity
from bastion.errors import ConfigError
from bastion.respond.playbooks import (
    PlaybookSource,
    Situation,
    default_playbooks,
    matches,
    planned,
)

VENDOR = Situation("vendor", frozenset({"frontier"}))


def finding(
    detection: str = "D5",
    severity: Severity = Severity.HIGH,
    *,
    confidence: float = 0.9,
    count: int = 1,
) -> Finding:
    return Finding(
        id="fd_1",
        detection=detection,
        severity=severity,
        confidence=confidence,
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


def book(match: str = "{}", actions: str = "[notify]", name: str = "probe") -> Playbook:
    text = f"version: 1\nplaybooks:\n  - name: {name}\n    match: {match}\n    actions: {actions}\n"
    (parsed,) = parse_document(text, "playbooks.yaml", Playbooks).playbooks
    return parsed


# -- matches ------------------------------------------------------------------------------------


def test_an_empty_match_answers_every_finding() -> None:
    anything = book()
    assert matches(anything, finding("D1", Severity.LOW, confidence=0.0), VENDOR)
    assert matches(anything, finding("S:custom"), Situation("internal", frozenset()))


def test_detections_must_include_the_findings() -> None:
    listed = book("{detections: [D2, D5]}")
    assert matches(listed, finding("D5"), VENDOR)
    assert matches(listed, finding("D2"), VENDOR)
    assert not matches(listed, finding("D6"), VENDOR)
    sigma = book("{detections: ['S:vendor_forbidden_burst']}")
    assert matches(sigma, finding("S:vendor_forbidden_burst"), VENDOR)
    assert not matches(sigma, finding("S:other"), VENDOR)


@pytest.mark.parametrize(
    ("severity", "answered"),
    [
        (Severity.LOW, False),
        (Severity.MEDIUM, False),
        (Severity.HIGH, True),
        (Severity.CRITICAL, True),
    ],
)
def test_min_severity_is_a_floor(severity: Severity, answered: bool) -> None:
    assert matches(book("{min_severity: high}"), finding(severity=severity), VENDOR) is answered


def test_min_confidence_is_a_floor() -> None:
    sure = book("{min_confidence: 0.8}")
    assert matches(sure, finding(confidence=0.8), VENDOR)
    assert matches(sure, finding(confidence=1.0), VENDOR)
    assert not matches(sure, finding(confidence=0.79), VENDOR)


def test_org_kinds_limit_whose_findings_are_answered() -> None:
    vendors = book("{org_kinds: [vendor]}")
    assert matches(vendors, finding(), VENDOR)
    assert not matches(vendors, finding(), Situation("internal", frozenset()))
    # An org the config does not know (the finding names none): only for playbooks that say so.
    assert not matches(vendors, finding(), Situation("", frozenset()))
    assert not matches(book(), finding(), Situation("", frozenset()))


def test_compartments_must_overlap_what_the_evidence_touched() -> None:
    frontier = book("{compartments: [frontier, vault]}")
    assert matches(frontier, finding(), Situation("vendor", frozenset({"general", "vault"})))
    assert not matches(frontier, finding(), Situation("vendor", frozenset({"general"})))
    assert not matches(frontier, finding(), Situation("vendor", frozenset()))


def test_every_condition_must_hold() -> None:
    strict = book("{detections: [D5], min_severity: high, org_kinds: [vendor]}")
    assert matches(strict, finding(), VENDOR)
    assert not matches(strict, finding(severity=Severity.MEDIUM), VENDOR)
    assert not matches(strict, finding(), Situation("internal", frozenset()))
    assert not matches(strict, finding("D4"), VENDOR)


# -- planned ------------------------------------------------------------------------------------


def test_planned_takes_every_matching_playbook_in_file_order() -> None:
    books = [
        book("{detections: [D5]}", "[throttle, notify]", name="first"),
        book("{detections: [D6]}", "[suspend_principal]", name="other"),
        book("{}", "[open_incident]", name="second"),
    ]
    plan = planned(books, finding("D5"), VENDOR)
    assert [(b.name, s.action) for b, s in plan] == [
        ("first", "throttle"),
        ("first", "notify"),
        ("second", "open_incident"),
    ]


def test_min_count_holds_a_step_back_until_the_finding_repeats() -> None:
    escalating = [
        book(
            "{detections: [D5]}",
            "[throttle, {action: suspend_principal, min_count: 3}, notify]",
        )
    ]
    actions = [[s.action for _, s in planned(escalating, finding(count=n), VENDOR)] for n in (1, 2)]
    assert actions == [["throttle", "notify"]] * 2
    for count in (3, 4):
        plan = planned(escalating, finding(count=count), VENDOR)
        assert [s.action for _, s in plan] == ["throttle", "suspend_principal", "notify"]


def test_nothing_is_planned_for_a_finding_no_playbook_matches() -> None:
    assert planned([book("{detections: [D2]}")], finding("D5"), VENDOR) == []
    assert planned([], finding("D5"), VENDOR) == []


# -- PlaybookSource -----------------------------------------------------------------------------

BASE = """\
version: 1
orgs:
  lab: {kind: internal}
principals:
  alice: {kind: user, org: lab}
"""
NAMED = parse_config(BASE + "response:\n  playbooks: playbooks.yaml\n")
GOOD = "version: 1\nplaybooks:\n  - name: first\n    actions: [notify]\n"
BETTER = "version: 1\nplaybooks:\n  - name: second\n    actions: [throttle, notify]\n"
BROKEN = "version: 1\nplaybooks:\n  - name: third\n    actions: [explode]\n"


def write(path: Path, text: str) -> None:
    """Write and move the modification time on, so a change is seen whatever the clock's grain."""
    before = path.stat().st_mtime if path.exists() else 0.0
    path.write_text(text, encoding="utf-8")
    later = max(before + 1.0, path.stat().st_mtime)
    os.utime(path, (later, later))


def names(source: PlaybookSource, config: BastionConfig) -> list[str]:
    return [b.name for b in source.current(config).playbooks]


def test_without_a_file_the_built_in_playbooks_run(tmp_path: Path) -> None:
    source = PlaybookSource(tmp_path)
    assert source.current(parse_config(BASE)) == default_playbooks()
    assert source.error == ""


def test_the_named_file_is_read_and_reloaded_when_it_changes(tmp_path: Path) -> None:
    write(tmp_path / "playbooks.yaml", GOOD)
    source = PlaybookSource(tmp_path)
    first = source.current(NAMED)
    assert [b.name for b in first.playbooks] == ["first"]
    assert source.current(NAMED) is first  # unchanged: not read again
    write(tmp_path / "playbooks.yaml", BETTER)
    assert names(source, NAMED) == ["second"]


def test_a_file_broken_after_startup_keeps_the_last_good_playbooks(tmp_path: Path) -> None:
    path = tmp_path / "playbooks.yaml"
    write(path, GOOD)
    source = PlaybookSource(tmp_path)
    assert names(source, NAMED) == ["first"]
    write(path, BROKEN)
    assert names(source, NAMED) == ["first"]
    assert source.error.startswith(f"{path}:4: playbooks[0].actions[0].action: Input should be")
    assert names(source, NAMED) == ["first"]  # still, and still saying why
    assert "'explode'" in source.error
    write(path, BETTER)  # fixed: the new file runs and the error is gone
    assert names(source, NAMED) == ["second"]
    assert source.error == ""


def test_a_file_removed_after_startup_keeps_the_last_good_playbooks(tmp_path: Path) -> None:
    path = tmp_path / "playbooks.yaml"
    write(path, GOOD)
    source = PlaybookSource(tmp_path)
    assert names(source, NAMED) == ["first"]
    path.unlink()
    assert names(source, NAMED) == ["first"]
    assert source.error == f"{path}: no such file"


def test_a_broken_file_at_first_load_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "playbooks.yaml", BROKEN)
    with pytest.raises(ConfigError) as caught:
        PlaybookSource(tmp_path).current(NAMED)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{tmp_path / 'playbooks.yaml'}:4: playbooks[0].actions[0].action")
    with pytest.raises(ConfigError, match="no such file"):
        PlaybookSource(tmp_path / "elsewhere").current(NAMED)


def test_naming_another_file_or_none_switches_playbooks(tmp_path: Path) -> None:
    write(tmp_path / "playbooks.yaml", GOOD)
    write(tmp_path / "other.yaml", BETTER)
    other = parse_config(BASE + "response:\n  playbooks: other.yaml\n")
    source = PlaybookSource(tmp_path)
    assert names(source, NAMED) == ["first"]
    assert names(source, other) == ["second"]
    assert source.current(parse_config(BASE)) == default_playbooks()
