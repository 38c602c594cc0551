"""Whatever text arrives, parsing either succeeds or raises ConfigError with located problems."""

from __future__ import annotations

import re

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.config import example_config_text, parse_config
from bastion.errors import ConfigError

FUZZ = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
LOCATED = re.compile(r"^bastion\.yaml(:\d+)?: ")

# Fragments that make YAML interesting: indicators, tags, anchors, merges and the schema's keys.
TOKENS = [
    *"abcxyz019 :-?,[]{}#&*!|>'\"%@`\n\t.",
    "  ",
    "<<",
    "!!int",
    "!!float",
    "!!timestamp",
    "!!binary",
    "!!set",
    "!!omap",
    "!!python/name:os.system",
    "!custom",
    "---",
    "...",
    "&a",
    "*a",
    "\x00",
    "\ufeff",
    "\u2028",
    "\ud800",
    "version",
    "upstreams",
    "models",
    "compartments",
    "orgs",
    "principals",
    "gateway",
    "base_url",
    "level",
    "critical",
    "vendor",
    "grants",
    "2024-02-30",
    "1e999",
    "null",
    "true",
]

KEYS = st.sampled_from(
    [
        "version",
        "upstreams",
        "models",
        "compartments",
        "orgs",
        "principals",
        "gateway",
        "base_url",
        "api",
        "api_key_env",
        "timeout_seconds",
        "name",
        "upstream",
        "upstream_model",
        "compartment",
        "level",
        "token_binding",
        "audit",
        "grants",
        "kind",
        "org",
        "disabled",
        "lab",
        "local",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["openai", "critical", "vendor", "user", "lab", "local", "http://h/v1"]),
    st.text(max_size=80),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=6)),
    max_leaves=40,
)


def check(text: str) -> None:
    problems: list[str] | None = None
    try:
        parse_config(text)
    except ConfigError as error:
        problems = error.problems
    if problems is not None:
        assert problems
        for problem in problems:
            assert LOCATED.match(problem), problem


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map("".join))
def test_random_yamlish_text_only_raises_config_error(text: str) -> None:
    check(text)


@FUZZ
@given(st.text(max_size=200))
def test_random_text_only_raises_config_error(text: str) -> None:
    check(text)


@settings(FUZZ, max_examples=150)  # each example builds a whole document: slower
@given(st.dictionaries(KEYS, DOCUMENTS, max_size=8))
def test_random_documents_only_raise_config_error(document: dict[str, object]) -> None:
    check(yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0),
            st.sampled_from(["delete", "insert", "replace"]),
            st.sampled_from(TOKENS),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_mutated_example_only_raises_config_error(edits: list[tuple[int, str, str]]) -> None:
    text = example_config_text()
    for position, action, token in edits:
        at = position % (len(text) + 1)
        if action == "delete":
            text = text[:at] + text[at + 1 :]
        elif action == "insert":
            text = text[:at] + token + text[at:]
        else:
            text = text[:at] + token + text[at + len(token) :]
    check(text)
