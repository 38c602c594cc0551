"""A Sigma rule file is input: every bad rule is a ConfigError naming the file, the line and
what is wrong, and every limit holds (size, nesting, aliases, rule count)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.detect.sigma import load_rules
from bastion.detect.sigma.load import MAX_DIRECTORIES, MAX_FILE_BYTES, MAX_FILES, MAX_RULES
from bastion.errors import ConfigError

GOOD = """\
title: Denied
name: denied
logsource: {product: bastion}
detection:
  sel:
    allowed: false
  condition: sel
"""


def problems(tmp_path: Path, text: str | bytes, name: str = "rules.yml") -> list[str]:
    """The problems loading ``text`` as a rule file reports (it must report some)."""
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules([name], tmp_path)
    return caught.value.problems


def one(tmp_path: Path, text: str | bytes) -> str:
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    return found[0]


def with_selection(selection: str) -> str:
    return GOOD.replace("    allowed: false\n", f"    {selection}\n")


def correlation(body: str) -> str:
    return GOOD + "---\ntitle: Burst\nname: burst\ncorrelation:\n" + body


# -- detection rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selection", "line", "message"),
    [
        ("prinicpal: bob", 6, "unknown field 'prinicpal'; did you mean 'principal'?"),
        ("CommandLine|contains: whoami", 6, "unknown field 'CommandLine' (known: act, action,"),
        ("client|base64: x", 6, "modifier 'base64' (on 'client') is not supported; supported:"),
        ("client|windash: x", 6, "modifier 'windash' (on 'client') is not supported"),
        ("principal|gt: 3", 6, "gt/gte/lt/lte need a number field; principal is text"),
        ("status: forbidden", 6, "status is a number; 'forbidden' is not"),
        ("principal: true", 6, "principal is text, not true/false; quote the value if it is text"),
        ("allowed: maybe", 6, "allowed is true or false, got 'maybe'"),
        ("model|cidr: 10.0.0.0/8", 6, "cidr applies to source_ip or network, not model"),
        ("client|re: '" + "a" * 600 + "'", 6, "a regular expression is longer than 512 characters"),
        ("allowed: null", 6, "allowed always has a value; null never matches"),
        # found by pySigma while parsing: located at the rule's first line
        ("client|contians: x", 1, "Unknown modifier 'contians'"),
        ("source_ip|cidr: 10.0.0.0/33", 1, "Invalid CIDR expression"),
        ("client|re: '(a)\\1'", 1, "Regular expression '(a)\\1' is invalid"),
    ],
)
def test_bad_selections(tmp_path: Path, selection: str, line: int, message: str) -> None:
    problem = one(tmp_path, with_selection(selection))
    assert problem.startswith(f"{tmp_path / 'rules.yml'}:{line}: rule 'Denied': "), problem
    assert message in problem


def test_keywords_are_refused(tmp_path: Path) -> None:
    text = GOOD.replace("  sel:\n    allowed: false\n", "  keywords:\n    - mimikatz\n")
    text = text.replace("condition: sel", "condition: keywords")
    assert "values without a field (keywords), which are not supported" in one(tmp_path, text)


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("sel and other", "Detection 'other' not defined"),
        ("1 of nothing*", "doesn't match any detection"),
        ("sel |", "pipe syntax"),
        ("sel and (", "Expected"),
    ],
)
def test_bad_conditions(tmp_path: Path, condition: str, message: str) -> None:
    assert message in one(tmp_path, GOOD.replace("condition: sel", f"condition: '{condition}'"))


def test_a_deeply_nested_condition_is_refused(tmp_path: Path) -> None:
    condition = "not " * 100 + "sel"
    problem = one(tmp_path, GOOD.replace("condition: sel", f"condition: '{condition}'"))
    assert problem.endswith(":7: rule 'Denied': the condition is nested deeper than 64 levels")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("name: denied", "name: Denied Rule"), "cannot be a detection id: use at most 64 lower"),
        (("name: denied\n", ""), "a rule needs a `name` (or an `id`)"),
        (("{product: bastion}", "{product: windows}"), "logsource must be `product: bastion`"),
        (("{product: bastion}", "{product: bastion, category: x}"), "logsource must be"),
        (("title: Denied\n", ""), "Sigma rule must have a title"),
        (("level", "level"), ""),
    ],
)
def test_bad_rule_attributes(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    if not message:
        text = GOOD.replace("name: denied", "name: denied\nlevel: severe")
        message = "'severe' is not a valid Sigma rule level"
    else:
        text = GOOD.replace(*change)
    assert message in one(tmp_path, text)


def test_documents_that_are_not_rules(tmp_path: Path) -> None:
    assert "a Sigma rule must be a mapping" in one(tmp_path, "- a\n- b\n")
    assert "collection actions (action:) are not supported" in one(
        tmp_path, "action: global\ntitle: x\n"
    )
    assert "Sigma filters are not supported; use detection.suppressions" in one(
        tmp_path, "title: f\nfilter: {rules: [a], selection: {x: 1}, condition: selection}\n"
    )


# -- correlation rules ---------------------------------------------------------------------------

BURST = "  type: event_count\n  rules: [denied]\n  group-by: [principal]\n  timespan: 10m\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            BURST.replace("[denied]", "[missing]") + "  condition: {gte: 3}\n",
            "unknown rule 'missing'",
        ),
        (BURST.replace("[denied]", "[burst]") + "  condition: {gte: 3}\n", "unknown rule 'burst'"),
        (
            BURST.replace("event_count", "temporal") + "  condition: {gte: 3}\n",
            "'temporal' is not supported",
        ),
        (
            BURST.replace("event_count", "value_avg")
            + "  condition: {gte: 3, field: tokens_out}\n",
            "'value_avg' is not supported",
        ),
        (
            BURST.replace("event_count", "sum") + "  condition: {gte: 3}\n",
            "'sum' is no valid Sigma correlation type",
        ),
        (
            BURST.replace("[principal]", "[princpal]") + "  condition: {gte: 3}\n",
            "unknown field 'princpal'",
        ),
        (
            BURST.replace("[principal]", "[reasons]") + "  condition: {gte: 3}\n",
            "group-by on a list field",
        ),
        (BURST.replace("10m", "10x") + "  condition: {gte: 3}\n", "Timespan '10x' is invalid"),
        (BURST.replace("10m", "8d") + "  condition: {gte: 3}\n", "timespan is longer than 7 days"),
        (
            BURST + "  condition: {gte: 10001}\n",
            "event_count thresholds above 10000 are not supported",
        ),
        (BURST + "  condition: {gte: 2.5}\n", "event_count thresholds are whole numbers"),
        (BURST + "  condition: {gte: -1}\n", "must be a number, 0 or more"),
        (
            BURST + "  condition: {gte: 3, field: model}\n",
            "event_count counts events; its condition takes no field",
        ),
        (
            BURST.replace("event_count", "value_count") + "  condition: {gte: 3}\n",
            "Value count correlation rule without field reference",
        ),
        (
            BURST.replace("event_count", "value_sum") + "  condition: {gte: 3, field: model}\n",
            "value_sum needs a number field; model is text",
        ),
        (
            BURST.replace("event_count", "value_count")
            + "  condition: {gte: 3, field: [model, org]}\n",
            "needs exactly one field",
        ),
        (
            BURST + "  condition: {gte: 3}\n  aliases: {ip: {denied: source_ip}}\n",
            "aliases are not supported",
        ),
        (
            BURST + "  condition: 'denied and denied'\n",
            "Extended conditions (string) can only be used with temporal",
        ),
    ],
)
def test_bad_correlations(tmp_path: Path, body: str, message: str) -> None:
    problem = one(tmp_path, correlation(body))
    assert problem.startswith(f"{tmp_path / 'rules.yml'}:"), problem
    assert "rule 'Burst'" in problem
    assert message in problem


def test_the_line_points_at_the_bad_key(tmp_path: Path) -> None:
    body = BURST.replace("[principal]", "[princpal]") + "  condition: {gte: 3}\n"
    # GOOD is 7 lines, then ---, title, name, correlation:, type, rules, group-by (line 14)
    assert one(tmp_path, correlation(body)).startswith(f"{tmp_path / 'rules.yml'}:14: ")


def test_duplicate_rule_names_across_files_name_both(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(GOOD, encoding="utf-8")
    (tmp_path / "b.yml").write_text(GOOD, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(["a.yml", "b.yml"], tmp_path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{tmp_path / 'b.yml'}:2: rule 'Denied': duplicate rule name")
    assert f"also {tmp_path / 'a.yml'}:1" in problem


def test_every_problem_in_every_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text(with_selection("prinicpal: x"), encoding="utf-8")
    (tmp_path / "b.yml").write_text("title: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(["a.yml", "b.yml", "c.yml"], tmp_path)
    found = caught.value.problems
    assert len(found) == 3
    assert "unknown field 'prinicpal'" in found[0]
    assert found[1].startswith(f"{tmp_path / 'b.yml'}:2: YAML error:")
    assert (
        found[2] == f"{tmp_path / 'c.yml'}: no such file or directory (listed in detection.rules)"
    )
    assert caught.value.file == "detection.rules"


# -- the file itself: YAML and limits ------------------------------------------------------------


def test_yaml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    problem = one(tmp_path, GOOD + "detection: [\n")
    assert problem.startswith(f"{tmp_path / 'rules.yml'}:9: YAML error:"), problem


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    text = GOOD.replace("  condition: sel\n", "  sel:\n    allowed: true\n  condition: sel\n")
    assert one(tmp_path, text) == (
        f"{tmp_path / 'rules.yml'}:7: duplicate key 'sel' (first on line 5)"
    )


def test_too_large(tmp_path: Path) -> None:
    text = GOOD + "# " + "x" * MAX_FILE_BYTES + "\n"
    assert "too large (over 262144 bytes" in one(tmp_path, text)


def test_not_utf8(tmp_path: Path) -> None:
    assert one(tmp_path, GOOD.encode() + b"description: \xff\n").endswith(":8: not valid UTF-8")


def test_nesting_is_limited(tmp_path: Path) -> None:
    text = GOOD.replace("    allowed: false\n", "    client: " + "[" * 100 + "]" * 100 + "\n")
    assert "nested deeper than 32" in one(tmp_path, text)


def test_alias_bombs_are_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    text = GOOD.replace("logsource", "\n".join(lines) + "\nlogsource")
    assert "more than 50000 values (after expanding aliases)" in one(tmp_path, text)


def test_too_many_rules(tmp_path: Path) -> None:
    docs = [GOOD.replace("name: denied", f"name: r{i}") for i in range(MAX_RULES + 1)]
    (tmp_path / "many.yml").write_text("---\n".join(docs), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_rules(["many.yml"], tmp_path)
    assert caught.value.problems == [
        f"detection.rules: {MAX_RULES + 1} rules, more than {MAX_RULES}"
    ]


def test_a_path_that_is_not_a_file_or_directory(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yml")
    with pytest.raises(ConfigError) as caught:
        load_rules(["pipe.yml"], tmp_path)  # must not block reading the pipe
    assert caught.value.problems == [f"{tmp_path / 'pipe.yml'}: not a regular file or directory"]


def test_directory_searches_are_bounded(tmp_path: Path) -> None:
    many = tmp_path / "many"
    many.mkdir()
    for n in range(MAX_FILES + 1):
        (many / f"r{n}.yml").write_text(GOOD.replace("name: denied", f"name: r{n}"))
    deep = tmp_path / "deep"
    for n in range(MAX_DIRECTORIES + 1):
        (deep / f"d{n}").mkdir(parents=True)
    with pytest.raises(ConfigError) as caught:
        load_rules(["many", "deep"], tmp_path)
    assert caught.value.problems == [
        f"{many}: more than {MAX_FILES} rule files",
        f"{deep}: more than {MAX_DIRECTORIES} directories to search for rules",
    ]


def test_symlinked_directories_are_not_followed(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yml").write_text(GOOD, encoding="utf-8")
    (rules / "loop").symlink_to(rules, target_is_directory=True)
    assert len(load_rules(["rules"], tmp_path)) == 1


def test_no_rules_configured_is_an_empty_set(tmp_path: Path) -> None:
    assert len(load_rules([], tmp_path)) == 0
