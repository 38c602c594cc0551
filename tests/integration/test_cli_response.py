"""``bastion response``: the playbooks in force and checking a playbooks file, the actions the
playbooks took, and approving, rejecting and undoing them by id — run in-process next to the
test config (``admin_cli``), on the SQLite store the server would use."""

from __future__ import annotations

import json

import pytest

from bastion.config import load_config
from bastion.detect.findings import Finding, Severity
from bastion.policy.holder import SnapshotHolder
from bastion.respond.locks import LockService
from bastion.respond.playbooks import PlaybookSource, default_playbooks
from bastion.respond.service import ResponseService
from bastion.store.actions import ActionRow
from bastion.sync import read_snapshot
from tests.conftest import UPSTREAM_KEY
from tests.integration.conftest import Cli


@pytest.fixture
def wide(admin_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """The CLI on a terminal wide enough that table cells are not wrapped."""
    monkeypatch.setenv("COLUMNS", "250")
    return admin_cli


def finding(detection: str, entity_type: str, entity: str, principal: str) -> Finding:
    return Finding(
        id=f"fd_{detection.lower()}0123456789",
        detection=detection,
        severity=Severity.HIGH,
        confidence=0.9,
        techniques=(),
        entity_type=entity_type,
        entity=entity,
        principal=principal,
        org="acme",
        explanation="test finding",
        evidence=(),
        first_seen=1.0,
        last_seen=1.0,
    )


def respond(cli: Cli) -> dict[str, ActionRow]:
    """Run the built-in playbooks, as the server does, on a D5 finding about victor (a throttle)
    and a D12 finding about acme (an org suspension waiting for approval)."""
    config = load_config(cli.root / "bastion.yaml")
    holder = SnapshotHolder()
    holder.swap(read_snapshot(cli.store, config, {"EXAMPLE_UPSTREAM_KEY": UPSTREAM_KEY}))
    service = ResponseService(
        cli.store, cli.audit, LockService(cli.store, cli.audit), holder, PlaybookSource(cli.root)
    )
    rows = service.respond(
        [finding("D5", "principal", "victor", "victor"), finding("D12", "org", "acme", "")]
    )
    by_action = {row.action: row for row in rows if row.action in ("throttle", "suspend_org")}
    assert {a: r.status for a, r in by_action.items()} == {
        "throttle": "done",
        "suspend_org": "pending_approval",
    }
    return by_action


def lines_with(out: str, needle: str) -> list[str]:
    return [line for line in out.splitlines() if needle in line]


# -- playbooks ----------------------------------------------------------------------------------


def test_playbooks_lists_the_built_in_set(wide: Cli) -> None:
    result = wide("response", "playbooks")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == "source: built-in"
    for book in default_playbooks().playbooks:
        assert len(lines_with(result.out, f" {book.name} ")) == 1, book.name
    (enumeration,) = lines_with(result.out, " enumeration-vendor ")
    assert "D5; ≥ low; vendor" in enumeration
    assert "throttle, open_incident, suspend_principal (>= 3 times), notify" in enumeration
    (campaign,) = lines_with(result.out, " org-campaign ")
    assert "suspend_org [approval]" in campaign


def test_playbooks_shows_the_file_bastion_yaml_names(wide: Cli) -> None:
    config = wide.root / "bastion.yaml"
    config.write_text(
        config.read_text() + "response:\n  playbooks: playbooks.yaml\n", encoding="utf-8"
    )
    (wide.root / "playbooks.yaml").write_text(
        "version: 1\nplaybooks:\n  - name: only-this\n    mode: dry-run\n"
        "    match: {detections: [D4]}\n    actions: [suspend_principal]\n",
        encoding="utf-8",
    )
    result = wide("response", "playbooks")
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == "source: playbooks.yaml"
    (row,) = lines_with(result.out, " only-this ")
    assert "dry-run" in row
    assert "suspend_principal" in row
    assert not lines_with(result.out, "token-replay")


def test_check_says_a_good_file_is_valid(admin_cli: Cli) -> None:
    good = admin_cli.root / "mine.yaml"
    good.write_text(
        "version: 1\nplaybooks:\n  - name: a\n    actions: [notify]\n"
        "  - name: b\n    actions: [{action: throttle, rate: 2, ttl: 30m}]\n",
        encoding="utf-8",
    )
    result = admin_cli("response", "playbooks", "--check", "mine.yaml")
    assert (result.code, result.out.strip()) == (0, "mine.yaml: 2 playbooks, valid")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "version: 1\nplaybooks:\n  - name: a\n    actions:\n"
            "      - {action: notify, ttl: 1h}\n",
            "  bad.yaml:5: playbooks[0].actions[0]: notify takes no ttl",
        ),
        (
            "version: 1\nplaybooks:\n  - name: a\n    match: {detections: [D8]}\n"
            "    actions: [suspend_principal]\n",
            "  bad.yaml:3: playbooks[0]: playbook 'a': D8 (off-hours use) alone must never suspend",
        ),
        (
            "version: 1\nplaybooks:\n  - name: a\n    actions: [\n",
            "  bad.yaml:5: YAML syntax error",
        ),
    ],
)
def test_check_names_the_line_of_a_bad_file(admin_cli: Cli, text: str, problem: str) -> None:
    (admin_cli.root / "bad.yaml").write_text(text, encoding="utf-8")
    result = admin_cli("response", "playbooks", "--check", "bad.yaml")
    assert result.code == 1
    assert result.err.splitlines()[0] == "error: invalid configuration (bad.yaml)"
    assert result.err.splitlines()[1].startswith(problem)


def test_check_of_a_missing_file_fails_clearly(admin_cli: Cli) -> None:
    result = admin_cli("response", "playbooks", "--check", "nope.yaml")
    assert result.code == 1
    assert "  nope.yaml: no such file" in result.err.splitlines()


# -- actions, approve, reject, undo -------------------------------------------------------------


def test_actions_lists_what_the_playbooks_did(wide: Cli) -> None:
    taken = respond(wide)
    result = wide("response", "actions")
    assert result.code == 0, result.err
    (throttle,) = lines_with(result.out, taken["throttle"].id)
    for cell in ("throttle", "principal:victor", "enforce", "done", "enumeration-vendor"):
        assert f" {cell} " in throttle
    (suspend,) = lines_with(result.out, taken["suspend_org"].id)
    for cell in ("suspend_org", "org:acme", "pending_approval", "org-campaign"):
        assert f" {cell} " in suspend
    waiting = wide("response", "actions", "--status", "pending_approval", "--json")
    assert [json.loads(line)["id"] for line in waiting.out.splitlines()] == [
        taken["suspend_org"].id
    ]


def test_approve_carries_out_a_waiting_action_and_prints_its_status(admin_cli: Cli) -> None:
    pending = respond(admin_cli)["suspend_org"]
    result = admin_cli("response", "approve", pending.id, "--reason", "SOC confirmed")
    assert result.code == 0, result.err
    assert result.out.strip() == f"approved {pending.id}: suspend_org org acme → done"
    active = LockService(admin_cli.store, admin_cli.audit).active()
    assert [(lock.target_type, lock.target) for lock in active if lock.target_type == "org"] == [
        ("org", "acme")
    ]
    again = admin_cli("response", "approve", pending.id, "--reason", "twice")
    assert again.code == 1
    assert f"action {pending.id} is done, not waiting for approval" in again.err


def test_reject_refuses_a_waiting_action(admin_cli: Cli) -> None:
    pending = respond(admin_cli)["suspend_org"]
    result = admin_cli("response", "reject", pending.id, "--reason", "not enough evidence")
    assert result.code == 0, result.err
    assert result.out.strip() == f"rejected {pending.id}: suspend_org org acme → rejected"
    locks = LockService(admin_cli.store, admin_cli.audit).active()
    assert [lock for lock in locks if lock.target_type == "org"] == []


def test_undo_releases_the_lock_and_prints_its_status(admin_cli: Cli) -> None:
    throttle = respond(admin_cli)["throttle"]
    locks = LockService(admin_cli.store, admin_cli.audit)
    assert throttle.lock in [lock.id for lock in locks.active()]
    result = admin_cli("response", "undo", throttle.id, "--reason", "false positive")
    assert result.code == 0, result.err
    assert result.out.strip() == f"undone {throttle.id}: throttle principal victor → undone"
    assert throttle.lock not in [lock.id for lock in locks.active()]
    listed = admin_cli("response", "actions", "--status", "undone", "--json")
    (row,) = [json.loads(line) for line in listed.out.splitlines()]
    assert (row["id"], row["detail"]["undo"]) == (throttle.id, "false positive")
    assert row["undone_by"].startswith("cli:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["approve", "ra_nope", "--reason", "x"], "no response action 'ra_nope'"),
        (["reject", "ra_nope", "--reason", "x"], "no response action 'ra_nope'"),
        (["undo", "ra_nope", "--reason", "x"], "no response action 'ra_nope'"),
        (["approve", "SUSPEND", "--reason", "   "], "a reason of 1 to 500 characters"),
        (["undo", "SUSPEND", "--reason", "x"], "only a done action can be undone"),
        (["approve", "THROTTLE", "--reason", "x"], "is done, not waiting for approval"),
    ],
)
def test_bad_ids_and_reasons_fail_clearly_and_change_nothing(
    admin_cli: Cli, args: list[str], message: str
) -> None:
    taken = respond(admin_cli)
    ids = {"SUSPEND": taken["suspend_org"].id, "THROTTLE": taken["throttle"].id}
    before = admin_cli("response", "actions", "--json").out
    result = admin_cli("response", *[ids.get(arg, arg) for arg in args])
    assert result.code == 1
    assert message in result.err
    assert admin_cli("response", "actions", "--json").out == before


def test_a_missing_reason_is_a_usage_error(admin_cli: Cli) -> None:
    result = admin_cli("response", "undo", "ra_nope")
    assert result.code == 2
    assert "--reason" in result.err
