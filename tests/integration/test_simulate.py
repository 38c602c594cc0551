"""``bastion simulate`` end to end: a short run through the real app (SQLite and PostgreSQL)
must detect the scenarios whose detections need no learnt baseline, fast, with no false
positives; the CLI prints the table, writes the JSON, keeps the state on request, and refuses
bad options before starting anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bastion.simulate.report import score
from bastion.simulate.runner import Options, simulate
from tests.integration.conftest import Cli

pytestmark = pytest.mark.anyio

# Scenarios that need no baseline, so a one-day run must catch them, and their detections.
QUICK = {
    "token-replay": "D2",
    "shared-credential": "D4",
    "enumeration": "D5",
    "contract-end": "D9",
    "prompt-content": "D10",
    "anonymizer": "D11",
    "control-plane": "D13",
    "honeytoken": "D14",
}
INLINE_FAST = ("D2", "D5", "D9")  # the acceptance asks these for a median under a second


async def test_a_one_day_run_detects_every_quick_scenario_without_false_positives(
    tmp_path: Path, database_url: str
) -> None:
    options = Options(seed=1, days=1, database_url=database_url, scenarios=tuple(QUICK))
    result = await simulate(options, tmp_path / "run")
    report = score(result)
    assert {"D5", "D9"} <= set(result.detectors)
    outcome = {s.id: s for s in report.scenarios}
    assert set(outcome) == set(QUICK)
    for sid, detection in QUICK.items():
        built = detection in result.detectors
        assert outcome[sid].detected == built, (sid, outcome[sid])
        if built:
            assert detection in outcome[sid].fired
    for detection in INLINE_FAST:
        assert report.ttd_median[detection] < 1.0, report.ttd_median
    assert outcome["enumeration"].ttd_events in (2, 3)  # two compartments or three models
    assert report.false_positives == ()
    assert report.principal_days > 30
    assert report.benign_calls > 1000
    assert report.events > report.benign_calls  # token events, admin events, findings too
    assert result.sent["control-plane"]
    assert all(s.status == 403 for s in result.sent["control-plane"])
    assert all(s.status == 403 for s in result.sent["contract-end"])
    assert report.missing == tuple(
        sorted(set(QUICK.values()) - set(result.detectors), key=lambda d: int(d[1:]))
    )


def test_the_cli_runs_prints_the_table_writes_json_and_keeps_the_state(cli: Cli) -> None:
    report = cli.root / "report.json"
    kept = cli.root / "kept"
    result = cli(
        "simulate",
        "--days",
        "1",
        "--seed",
        "3",
        "--scenario",
        "enumeration",
        "--scenario",
        "contract-end",
        "--json",
        str(report),
        "--keep",
        str(kept),
    )
    assert result.code == 0, result.out + result.err
    assert "enumeration" in result.out
    assert "contract-end" in result.out
    assert "scenarios detected: 2/2" in result.out
    assert "PASS" in result.out
    data = json.loads(report.read_text())
    assert data["passed"] is True
    assert data["seed"] == 3
    assert data["days"] == 1
    assert [s["id"] for s in data["scenarios"]] == ["enumeration", "contract-end"]
    assert all(s["detected"] for s in data["scenarios"])
    assert (kept / "bastion.yaml").is_file()
    assert (kept / "ipintel" / "asn.mmdb").is_file()
    found = cli(
        "--config",
        str(kept / "bastion.yaml"),
        "--state-dir",
        str(kept / ".bastion"),
        "findings",
        "list",
        "--since",
        "36500d",
        "--json",
    )
    assert found.code == 0, found.err
    detections = {json.loads(line)["detection"] for line in found.out.splitlines()}
    assert {"D5", "D9"} <= detections


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "nope"], "unknown scenario 'nope'"),
        (["--json", "missing/dir/report.json"], "--json: no directory"),
        (["--json", "."], "is a directory"),
        (["--keep", "full"], "is not an empty directory"),
        (["--database-url", "not a url"], "not a valid SQLAlchemy URL"),
        (["--database-url", "sqlite:///full/used.db"], "the database is not empty"),
        (["--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none"], "cannot connect"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(
    cli: Cli, args: list[str], message: str
) -> None:
    full = cli.root / "full"
    full.mkdir()
    (full / "keep-me").write_text("x")
    import sqlite3

    with sqlite3.connect(full / "used.db") as db:
        db.execute("CREATE TABLE events (idx INTEGER)")
    before = sorted(p.name for p in cli.root.rglob("*"))
    result = cli("simulate", "--days", "1", *args)
    assert result.code == 1
    assert message in result.err
    assert sorted(p.name for p in cli.root.rglob("*")) == before  # nothing written


def test_out_of_range_numbers_are_usage_errors(cli: Cli) -> None:
    assert cli("simulate", "--days", "0").code == 2
    assert cli("simulate", "--days", "29").code == 2
    assert cli("simulate", "--seed", "-1").code == 2
