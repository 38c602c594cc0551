"""Sigma correlations (event_count, value_count, value_sum) as streaming windows in event time:
firing and not firing at the threshold and at the edge of the timespan, groups, bounded state,
state that survives a restart, and the shipped example rule."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from bastion.config.models import BastionConfig
from bastion.detect.detector import Context
from bastion.detect.findings import Draft, Severity
from bastion.detect.observation import Observation
from bastion.detect.sigma import SigmaDetector, load_rules
from bastion.detect.sigma.correlate import Correlation

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "sigma"
CONTEXT = Context(
    BastionConfig.model_validate(
        {
            "version": 1,
            "orgs": {"lab": {"kind": "internal"}, "acme": {"kind": "vendor"}},
            "principals": {
                "alice": {"kind": "user", "org": "lab"},
                "bob": {"kind": "user", "org": "acme"},
                "dave": {"kind": "user", "org": "acme"},
            },
        }
    )
)
_ids = itertools.count()

DENIED = """\
title: Denied
name: denied
logsource: {product: bastion}
detection:
  sel:
    name: request.decided
    allowed: false
  condition: sel
---
"""
REQUESTS = """\
title: Requests
name: requests
logsource: {product: bastion}
detection:
  sel:
    name: request.decided
  condition: sel
---
"""


def event(time: float, **fields: Any) -> Observation:
    record: dict[str, Any] = {
        "id": f"ev_{next(_ids)}",
        "name": "request.decided",
        "time": time,
        "principal": "bob",
        "org": "acme",
        "model": "demo-chat",
        "allowed": False,
        "status": 403,
    }
    record.update(fields)
    return Observation.from_record(record)


def correlation(
    kind: str,
    condition: str,
    *,
    timespan: str = "10m",
    group_by: str = "[principal]",
    more: str = "",
) -> str:
    return (
        f"title: Burst\nname: burst\nlevel: high\ncorrelation:\n  type: {kind}\n"
        f"  rules: [denied]\n  group-by: {group_by}\n  timespan: {timespan}\n"
        f"  condition: {condition}\n{more}"
    )


def detector(tmp_path: Path, text: str, **options: Any) -> SigmaDetector:
    (tmp_path / "rules.yml").write_text(text, encoding="utf-8")
    return SigmaDetector(load_rules(["rules.yml"], tmp_path), **options)


def feed(sigma: SigmaDetector, events: list[Observation]) -> list[list[Draft]]:
    return [sigma.observe(obs, CONTEXT) for obs in events]


def fired(results: list[list[Draft]], detection: str = "S:burst") -> list[int]:
    """The positions of the events at which ``detection`` fired."""
    return [i for i, drafts in enumerate(results) if any(d.detection == detection for d in drafts)]


# -- event_count ---------------------------------------------------------------------------------


def test_event_count_fires_at_the_threshold_within_the_timespan(tmp_path: Path) -> None:
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{gte: 3}"))
    results = feed(sigma, [event(1000), event(1100), event(1200), event(1300)])
    assert fired(results) == [2, 3]
    draft = results[2][0]
    assert (draft.entity_type, draft.entity, draft.principal, draft.org) == (
        "principal",
        "bob",
        "bob",
        "acme",
    )
    assert draft.severity is Severity.HIGH
    assert len(draft.evidence) == 3
    assert draft.explanation == (
        "Burst: at least 3 matching events for principal bob within 10m (rule: >= 3)"
    )


def test_event_count_stays_quiet_one_below_the_threshold(tmp_path: Path) -> None:
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{gte: 3}"))
    assert fired(feed(sigma, [event(1000), event(1100)])) == []


def test_the_timespan_edge_is_inclusive_and_expiry_is_in_event_time(tmp_path: Path) -> None:
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{gte: 3}"))
    # exactly 600 s from first to third: all three are in the window
    assert fired(feed(sigma, [event(1000), event(1300), event(1600)])) == [2]
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{gte: 3}"))
    # 600.5 s: the first has left the window by the time the third arrives
    assert fired(feed(sigma, [event(1000), event(1300), event(1600.5)])) == []


def test_event_count_gt_needs_one_more(tmp_path: Path) -> None:
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{gt: 3}"))
    assert fired(feed(sigma, [event(1000 + i) for i in range(4)])) == [3]


def test_groups_are_counted_apart_and_events_without_the_field_are_skipped(
    tmp_path: Path,
) -> None:
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{gte: 2}"))
    events = [event(1000, principal="bob"), event(1001, principal="dave")]
    events += [event(1002, principal=""), event(1003, principal="")]  # no group: not counted
    assert fired(feed(sigma, events)) == []
    assert fired(feed(sigma, [event(1004, principal="dave")])) == [0]


def test_only_matching_events_count(tmp_path: Path) -> None:
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{gte: 2}"))
    events = [event(1000), event(1001, allowed=True), event(1002, name="token.issued")]
    assert fired(feed(sigma, events)) == []


def test_an_event_matching_two_referenced_rules_counts_once(tmp_path: Path) -> None:
    text = DENIED + REQUESTS + correlation("event_count", "{gte: 2}")
    text = text.replace("rules: [denied]", "rules: [denied, requests]")
    sigma = detector(tmp_path, text)
    assert fired(feed(sigma, [event(1000)])) == []
    assert fired(feed(sigma, [event(1001, allowed=True)])) == [0]


def test_rules_are_referred_to_by_name_or_id(tmp_path: Path) -> None:
    text = DENIED.replace("name: denied", "id: 2c8a1e5f-4b7d-4c3e-9f1a-6d5b4e3c2a10")
    text += correlation("event_count", "{gte: 1}").replace(
        "[denied]", "[2c8a1e5f-4b7d-4c3e-9f1a-6d5b4e3c2a10]"
    )
    assert fired(feed(detector(tmp_path, text), [event(1000)])) == [0]


def test_referenced_rules_stay_quiet_unless_generate_is_set(tmp_path: Path) -> None:
    quiet = detector(tmp_path, DENIED + correlation("event_count", "{gte: 5}"))
    assert feed(quiet, [event(1000)]) == [[]]
    loud = detector(
        tmp_path, DENIED + correlation("event_count", "{gte: 5}", more="  generate: true\n")
    )
    assert fired(feed(loud, [event(1000)]), "S:denied") == [0]


def test_no_group_by_counts_everything_together(tmp_path: Path) -> None:
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{gte: 2}", group_by="[]"))
    results = feed(sigma, [event(1000, principal="bob"), event(1001, principal="dave")])
    assert fired(results) == [1]
    assert (results[1][0].entity_type, results[1][0].entity, results[1][0].principal) == (
        "rule",
        "burst",
        "",
    )


def test_techniques_are_the_correlations_and_its_rules(tmp_path: Path) -> None:
    text = DENIED.replace("logsource", "tags: [attack.t1526]\nlogsource")
    text += correlation("event_count", "{gte: 1}").replace("level: high", "tags: [attack.t1078]")
    draft = feed(detector(tmp_path, text), [event(1000)])[0][0]
    assert draft.techniques == ("T1078", "T1526")


# -- value_count ---------------------------------------------------------------------------------


def test_value_count_fires_on_distinct_values_only(tmp_path: Path) -> None:
    sigma = detector(
        tmp_path, DENIED + correlation("value_count", "{gte: 3, field: model}", timespan="5m")
    )
    models = ["m1", "m1", "m2", "m2", "m1", "m3"]
    results = feed(sigma, [event(1000 + i, model=m) for i, m in enumerate(models)])
    assert fired(results) == [5]
    assert "3 distinct model values for principal bob within 5m" in results[5][0].explanation


def test_value_count_forgets_values_older_than_the_timespan(tmp_path: Path) -> None:
    sigma = detector(
        tmp_path, DENIED + correlation("value_count", "{gte: 3, field: model}", timespan="5m")
    )
    events = [event(1000, model="m1"), event(1100, model="m2"), event(1300.5, model="m3")]
    assert fired(feed(sigma, events)) == []  # m1 is 300.5 s old
    sigma = detector(
        tmp_path, DENIED + correlation("value_count", "{gte: 3, field: model}", timespan="5m")
    )
    events = [event(1000, model="m1"), event(1100, model="m2"), event(1300, model="m3")]
    assert fired(feed(sigma, events)) == [2]


def test_a_value_seen_again_stays_in_the_window(tmp_path: Path) -> None:
    sigma = detector(
        tmp_path, DENIED + correlation("value_count", "{gte: 3, field: model}", timespan="5m")
    )
    events = [event(1000, model="m1"), event(1100, model="m2"), event(1250, model="m1")]
    events += [event(1350, model="m3")]  # m1's first use has expired, its second has not
    assert fired(feed(sigma, events)) == [3]


def test_missing_values_are_not_a_distinct_value(tmp_path: Path) -> None:
    sigma = detector(tmp_path, DENIED + correlation("value_count", "{gte: 2, field: model}"))
    assert fired(feed(sigma, [event(1000, model="m1"), event(1001, model="")])) == []


def test_multi_field_groups_name_every_field(tmp_path: Path) -> None:
    text = DENIED + correlation(
        "value_count", "{gte: 2, field: principal}", group_by="[org, network]"
    )
    sigma = detector(tmp_path, text)
    events = [
        event(1000, principal="bob", source_ip="203.0.113.5"),
        event(1001, principal="dave", source_ip="198.51.100.7"),  # another network
        event(1002, principal="dave", source_ip="203.0.113.9"),
    ]
    results = feed(sigma, events)
    assert fired(results) == [2]
    draft = results[2][0]
    assert (draft.entity_type, draft.entity) == ("org+network", "org=acme, network=203.0.113.0/24")
    assert (draft.principal, draft.org) == ("", "acme")


# -- value_sum -----------------------------------------------------------------------------------


def test_value_sum_fires_when_the_sum_crosses_the_threshold(tmp_path: Path) -> None:
    text = DENIED + correlation("value_sum", "{gte: 1000, field: tokens_out}", timespan="1h")
    sigma = detector(tmp_path, text)
    amounts = [400, 0, 500, 99, 1]
    results = feed(sigma, [event(1000 + i, tokens_out=n) for i, n in enumerate(amounts)])
    assert fired(results) == [4]
    assert "tokens_out adding up to at least 1000 for principal bob within 1h" in (
        results[4][0].explanation
    )


def test_value_sum_expires_old_amounts(tmp_path: Path) -> None:
    text = DENIED + correlation("value_sum", "{gt: 1000, field: tokens_out}", timespan="1h")
    sigma = detector(tmp_path, text)
    events = [event(0, tokens_out=600), event(3600, tokens_out=400), event(3600.5, tokens_out=401)]
    assert fired(feed(sigma, events)) == []  # 600 expired before the third: 801
    sigma = detector(tmp_path, text)
    events = [event(0, tokens_out=600), event(3600, tokens_out=400), event(3600, tokens_out=1)]
    assert fired(feed(sigma, events)) == [2]  # 1001 > 1000, all within the hour


# -- conditions judged when a window is over -----------------------------------------------------


def test_lt_is_judged_when_the_window_is_over(tmp_path: Path) -> None:
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{lt: 3}"))
    results = feed(sigma, [event(1000), event(1300), event(1600)])
    assert fired(results) == []  # three events: not fewer than three; window still open
    results = feed(sigma, [event(1600.5, allowed=True)])  # event time passes the window's end
    assert fired(results) == []
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{lt: 3}"))
    results = feed(sigma, [event(1000), event(1300), event(1700, allowed=True)])
    assert fired(results) == [2]  # the window [1000, 1600] held two
    draft = results[2][0]
    assert draft.explanation == "Burst: 2 matching events for principal bob within 10m (rule: < 3)"


def test_eq_on_value_count_is_exact(tmp_path: Path) -> None:
    text = DENIED + correlation("value_count", "{eq: 2, field: model}", timespan="1m")
    events = [event(0, model="m1"), event(10, model="m2"), event(61, allowed=True)]
    assert fired(feed(detector(tmp_path, text), events)) == [2]
    events = [event(0, model="m1"), event(10, model="m2"), event(20, model="m3"), event(61)]
    assert fired(feed(detector(tmp_path, text), events)) == []


def test_a_new_window_opens_after_the_last_one_closed(tmp_path: Path) -> None:
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{lte: 1}", timespan="1m"))
    results = feed(sigma, [event(0), event(61), event(200, allowed=True)])
    assert fired(results) == [1, 2]  # [0, 60] closed at 61, [61, 121] closed at 200


# -- bounded state and restarts ------------------------------------------------------------------


def test_state_per_group_stays_bounded_however_busy(tmp_path: Path) -> None:
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{gte: 5}", timespan="1h"))
    feed(sigma, [event(1000 + i * 0.01) for i in range(5000)])
    groups = sigma.dump()["burst"]["groups"]
    assert len(groups) == 1
    assert len(groups[0][1][3]) <= 32  # timed entries kept, not 5000


def test_groups_are_capped_and_evictions_counted(tmp_path: Path) -> None:
    sigma = detector(tmp_path, DENIED + correlation("event_count", "{gte: 2}"), cap_groups=10)
    feed(sigma, [event(1000 + i, principal=f"p{i}") for i in range(25)])
    structure = sigma.structures()["burst"]
    assert isinstance(structure, Correlation)
    assert len(structure) == 10
    assert structure.stats.evictions == 15


def test_tumbling_windows_of_many_groups_stay_bounded(tmp_path: Path) -> None:
    text = DENIED + correlation("event_count", "{lt: 5}", timespan="1m")
    sigma = detector(tmp_path, text, cap_groups=3)
    feed(sigma, [event(i * 0.1, principal=f"p{i}") for i in range(50)])
    structure = sigma.structures()["burst"]
    assert isinstance(structure, Correlation)
    assert len(structure) == 3
    assert structure.stats.evictions == 47
    results = feed(sigma, [event(100, allowed=True)])  # every window is over
    assert sorted(d.entity for d in results[0]) == ["p47", "p48", "p49"]
    assert len(structure) == 0


def test_state_survives_a_restart(tmp_path: Path) -> None:
    text = DENIED + correlation("value_count", "{gte: 3, field: model}")
    before = detector(tmp_path, text)
    feed(before, [event(1000, model="m1"), event(1001, model="m2")])
    after = detector(tmp_path, text)
    after.load(before.dump())
    assert fired(feed(after, [event(1002, model="m3")])) == [0]


def test_tumbling_windows_survive_a_restart(tmp_path: Path) -> None:
    text = DENIED + correlation("event_count", "{lt: 3}", timespan="1m")
    before = detector(tmp_path, text)
    feed(before, [event(0), event(10)])
    after = detector(tmp_path, text)
    after.load(before.dump())
    assert fired(feed(after, [event(61, allowed=True)])) == [0]


def test_state_of_a_rule_whose_group_by_changed_is_dropped(tmp_path: Path) -> None:
    before = detector(tmp_path, DENIED + correlation("event_count", "{lt: 3}"))
    feed(before, [event(0)])
    after = detector(
        tmp_path, DENIED + correlation("event_count", "{lt: 3}", group_by="[org, model]")
    )
    after.load(before.dump())
    structure = after.structures()["burst"]
    assert isinstance(structure, Correlation)
    assert len(structure) == 0
    assert fired(feed(after, [event(1000, allowed=True)])) == []


# -- the shipped example -------------------------------------------------------------------------


@pytest.mark.parametrize(("refused", "fires"), [(19, False), (20, True)])
def test_the_example_rule_fires_on_20_refusals_from_a_vendor_principal(
    refused: int, fires: bool
) -> None:
    sigma = SigmaDetector(load_rules([str(EXAMPLES)]))
    events = [event(1000 + i * 25, status=403) for i in range(refused)]  # within 10 minutes
    events.append(event(1000 + refused * 25, status=200, allowed=True))
    results = feed(sigma, events)
    assert bool(fired(results, "S:vendor_forbidden_burst")) is fires
    if fires:
        draft = results[19][0]
        assert (draft.entity, draft.severity) == ("bob", Severity.HIGH)
        assert draft.techniques == ("T1078", "T1526", "AML.T0014")


def test_the_example_rule_ignores_internal_principals_and_slow_refusals() -> None:
    sigma = SigmaDetector(load_rules([str(EXAMPLES)]))
    internal = [event(1000 + i, principal="alice", org="lab") for i in range(30)]
    assert fired(feed(sigma, internal), "S:vendor_forbidden_burst") == []
    slow = [event(5000 + i * 40, status=403) for i in range(30)]  # 15 per 10 minutes
    assert fired(feed(sigma, slow), "S:vendor_forbidden_burst") == []
