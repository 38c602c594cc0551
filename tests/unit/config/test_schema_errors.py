"""Schema and cross-reference errors, as an operator reads them: line, key path, what is wrong."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError

BASE = """\
version: 1
upstreams:
  local:
    base_url: http://127.0.0.1:8081/v1
    api: openai
compartments:
  general:
    level: internal
    grants:
      orgs: [lab]
  secret:
    level: critical
orgs:
  lab: {kind: internal}
  acme: {kind: vendor}
principals:
  alice: {kind: user, org: lab}
  victor: {kind: user, org: acme}
models:
  - name: demo
    upstream: local
    compartment: general
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.problems


def edit(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def test_base_is_valid() -> None:
    config = parse_config(BASE)
    assert config.model("demo") is not None


# -- cross references ----------------------------------------------------------------------------


def test_model_upstream_must_be_declared() -> None:
    text = edit("    upstream: local\n", "    upstream: foo\n")
    assert problems(text) == [
        "bastion.yaml:21: models[0].upstream: unknown upstream 'foo' (declared: local)"
    ]


def test_unknown_reference_suggests_a_close_name() -> None:
    text = edit("    upstream: local\n", "    upstream: locl\n")
    assert problems(text) == [
        "bastion.yaml:21: models[0].upstream: unknown upstream 'locl' (declared: local); "
        "did you mean 'local'?"
    ]


def test_model_compartment_must_be_declared() -> None:
    text = edit("    compartment: general\n", "    compartment: gneral\n")
    assert problems(text) == [
        "bastion.yaml:22: models[0].compartment: unknown compartment 'gneral' "
        "(declared: general, secret); did you mean 'general'?"
    ]


def test_model_names_are_unique() -> None:
    text = BASE + "  - name: demo\n    upstream: local\n    compartment: secret\n"
    assert problems(text) == [
        "bastion.yaml:23: models[1].name: duplicate model name 'demo' (first declared at models[0])"
    ]


def test_principal_org_must_be_declared() -> None:
    text = edit("alice: {kind: user, org: lab}", "alice: {kind: user, org: labs}")
    assert problems(text) == [
        "bastion.yaml:17: principals.alice.org: unknown org 'labs' (declared: acme, lab); "
        "did you mean 'lab'?"
    ]


def test_granted_org_must_be_declared() -> None:
    text = edit("      orgs: [lab]\n", "      orgs: [lab, research]\n")
    assert problems(text) == [
        "bastion.yaml:10: compartments.general.grants.orgs[1]: unknown org 'research' "
        "(declared: acme, lab)"
    ]


def test_at_least_one_org() -> None:
    text = "version: 1\n"
    assert problems(text) == [
        "bastion.yaml:1: orgs: declare at least one org: every principal belongs to one"
    ]


def test_empty_orgs_mapping_is_located() -> None:
    text = "version: 1\n\norgs: {}\n"
    assert problems(text) == [
        "bastion.yaml:3: orgs: declare at least one org: every principal belongs to one"
    ]


def test_vendor_org_may_not_hold_a_standing_critical_grant() -> None:
    text = edit(
        "  secret:\n    level: critical\n",
        "  secret:\n    level: critical\n    grants: {orgs: [lab, acme]}\n",
    )
    assert problems(text) == [
        "bastion.yaml:13: compartments.secret.grants.orgs[1]: vendor org 'acme' may not hold a "
        "standing grant to a critical compartment"
    ]


def test_vendor_org_may_hold_a_standing_restricted_grant() -> None:
    text = edit("    level: critical\n", "    level: restricted\n    grants: {orgs: [acme]}\n")
    assert parse_config(text).compartments["secret"].grants.orgs == ("acme",)


def test_vendor_principal_may_not_hold_a_standing_critical_grant() -> None:
    text = edit(
        "    level: critical\n",
        "    level: critical\n    grants:\n"
        "      principals: [alice, victor, someone-added-by-cli]\n",
    )
    assert problems(text) == [
        "bastion.yaml:14: compartments.secret.grants.principals[1]: 'victor' belongs to vendor "
        "org 'acme', which may not hold a standing grant to a critical compartment"
    ]


def test_several_cross_reference_problems_are_reported_together() -> None:
    text = edit("    upstream: local\n", "    upstream: nope\n").replace("org: acme}", "org: nope}")
    assert problems(text) == [
        "bastion.yaml:18: principals.victor.org: unknown org 'nope' (declared: acme, lab)",
        "bastion.yaml:21: models[0].upstream: unknown upstream 'nope' (declared: local)",
    ]


# -- compartment rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["restricted", "critical"])
def test_strict_levels_require_token_binding(level: str) -> None:
    text = edit("    level: critical\n", f"    level: {level}\n    token_binding: optional\n")
    assert problems(text) == [
        f"bastion.yaml:13: compartments.secret.token_binding: must be 'required' for a {level} "
        "compartment: stolen tokens must be useless without the device key"
    ]


def test_lower_levels_may_make_token_binding_optional() -> None:
    text = edit("    level: internal\n", "    level: internal\n    token_binding: optional\n")
    assert parse_config(text).compartments["general"].token_binding == "optional"


def test_audit_defaults_follow_the_level() -> None:
    config = parse_config(BASE)
    assert config.compartments["general"].audit == "best-effort"
    assert config.compartments["secret"].audit == "required"
    text = edit("    level: internal\n", "    level: internal\n    audit: required\n")
    assert parse_config(text).compartments["general"].audit == "required"


def test_a_grant_listed_twice() -> None:
    text = edit("      orgs: [lab]\n", "      orgs: [lab, lab]\n")
    assert problems(text) == [
        "bastion.yaml:10: compartments.general.grants.orgs[1]: 'lab' is listed twice"
    ]


# -- keys and types ------------------------------------------------------------------------------


def test_bad_enum_value() -> None:
    text = edit("    level: critical\n", "    level: top\n")
    assert problems(text) == [
        "bastion.yaml:12: compartments.secret.level: must be one of open, internal, restricted, "
        "critical (got 'top')"
    ]


def test_unknown_key_with_suggestion() -> None:
    text = edit("    api: openai\n", "    api: openai\n    timeout_secs: 5\n")
    assert problems(text) == [
        "bastion.yaml:6: upstreams.local.timeout_secs: unknown key; did you mean 'timeout_seconds'?"
    ]


def test_unknown_key_without_a_close_match_lists_the_keys() -> None:
    text = edit("  lab: {kind: internal}", "  lab: {kind: internal, manager: bob}")
    assert problems(text) == [
        "bastion.yaml:14: orgs.lab.manager: unknown key (expected one of: kind, description, "
        "sponsor, contract, allowed_networks, seat_limit, ceiling, working_hours, "
        "review_every_days, allowed_origins)"
    ]


def test_unknown_top_level_key() -> None:
    assert problems(BASE + "model: x\n") == [
        "bastion.yaml:23: model: unknown key; did you mean 'models'?"
    ]


def test_unknown_key_never_echoes_its_value() -> None:
    secret = "sk-live-0123456789abcdefghijklmnop"
    text = edit("    api: openai\n", f"    api: openai\n    api_key: {secret}\n")
    [problem] = problems(text)
    assert (
        problem
        == "bastion.yaml:6: upstreams.local.api_key: unknown key; did you mean 'api_key_env'?"
    )
    assert secret not in problem


def test_missing_required_key_points_at_its_parent() -> None:
    text = edit("    api: openai\n", "")
    assert problems(text) == ["bastion.yaml:3: upstreams.local.api: missing required key"]


def test_missing_version() -> None:
    text = BASE.replace("version: 1\n", "# no version\n")
    assert problems(text) == ["bastion.yaml:2: version: missing required key"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("'1'", "must be a whole number (got '1')"),
        ("true", "must be a whole number (got true)"),
        ("2", "unsupported version 2: this Bastion reads version 1"),
    ],
)
def test_version(value: str, message: str) -> None:
    assert problems(BASE.replace("version: 1", f"version: {value}")) == [
        f"bastion.yaml:1: version: {message}"
    ]


@pytest.mark.parametrize(
    ("line", "old", "new", "message"),
    [
        (4, "base_url: http://127.0.0.1:8081/v1", "base_url: 8081", "must be a string (got 8081)"),
        (4, "base_url: http://127.0.0.1:8081/v1", "base_url: [a]", "must be a string (got a list)"),
        (17, "org: lab}", "org: lab, disabled: 'no'}", "must be true or false (got 'no')"),
        (
            6,
            "api: openai\n",
            "api: openai\n    timeout_seconds: '60'\n",
            "must be a number (got '60')",
        ),
        (
            6,
            "api: openai\n",
            "api: openai\n    timeout_seconds: 0\n",
            "must be greater than 0 (got 0)",
        ),
        (
            6,
            "api: openai\n",
            "api: openai\n    timeout_seconds: 3601\n",
            "must be at most 3600 (got 3601)",
        ),
    ],
)
def test_wrong_types_and_ranges(line: int, old: str, new: str, message: str) -> None:
    [problem] = problems(edit(old, new))
    assert problem.startswith(f"bastion.yaml:{line}: ")
    assert problem.endswith(message)


def test_gateway_limits() -> None:
    text = BASE + "gateway:\n  max_body_bytes: 100\n  max_header_bytes: 1.5\n"
    assert problems(text) == [
        "bastion.yaml:24: gateway.max_body_bytes: must be at least 1024 (got 100)",
        "bastion.yaml:25: gateway.max_header_bytes: must be a whole number (got 1.5)",
    ]


def test_section_of_the_wrong_shape() -> None:
    text = BASE.replace("models:\n  - name: demo", "models:\n  demo:\n    name: demo")
    assert problems(text.replace("    upstream: local\n    compartment: general\n", "")) == [
        "bastion.yaml:19: models: must be a list (got a mapping)"
    ]


def test_entry_of_the_wrong_shape_lists_its_keys() -> None:
    text = edit("  lab: {kind: internal}", "  lab: internal")
    assert problems(text) == [
        "bastion.yaml:14: orgs.lab: must be a mapping with keys kind, description, sponsor, "
        "contract, allowed_networks, seat_limit, ceiling, working_hours, review_every_days, "
        "allowed_origins (got 'internal')"
    ]


# -- names ---------------------------------------------------------------------------------------


def test_bad_name_as_a_key() -> None:
    text = edit("  alice: {kind: user, org: lab}", "  Alice Smith: {kind: user, org: lab}")
    assert problems(text) == [
        "bastion.yaml:17: principals['Alice Smith']: name must be 1-63 lowercase letters, "
        "digits, '.', '_' or '-', starting with a letter or digit (got 'Alice Smith')"
    ]


def test_number_as_a_name() -> None:
    text = edit("  alice: {kind: user, org: lab}", "  42: {kind: user, org: lab}")
    assert problems(text) == ["bastion.yaml:17: principals[42]: name must be a string (got 42)"]


def test_model_names_may_have_slashes_and_colons() -> None:
    text = edit("  - name: demo\n", "  - name: meta/llama-3:8b\n")
    config = parse_config(text)
    assert config.models[0].name == "meta/llama-3:8b"
    assert config.models[0].upstream_model == "meta/llama-3:8b"


def test_bad_model_name() -> None:
    text = edit("  - name: demo\n", "  - name: Demo Chat\n")
    assert problems(text) == [
        "bastion.yaml:20: models[0].name: must be 1-63 lowercase letters, digits, '.', '_', '-', "
        "'/' or ':', starting with a letter or digit (got 'Demo Chat')"
    ]


def test_long_values_are_cut_in_messages() -> None:
    long_name = "x" * 200
    text = edit("    compartment: general\n", f"    compartment: {long_name}\n")
    [problem] = problems(text)
    assert long_name not in problem
    assert "'" + "x" * 60 + "…'" in problem


# -- upstreams -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://h/v1", "must start with http:// or https:// (got 'ftp://h/v1')"),
        ("http:///v1", "must name a host (got 'http:///v1')"),
        (
            "http://h/v1?x=1",
            "must not have a query (?...) or fragment (#...) (got 'http://h/v1?x=1')",
        ),
        (
            "http://h/v1#top",
            "must not have a query (?...) or fragment (#...) (got 'http://h/v1#top')",
        ),
        ("http://h:99999", "is not a valid URL (got 'http://h:99999')"),
        (
            "'http://h /v1'",
            "must be a URL without spaces, at most 2048 characters (got 'http://h /v1')",
        ),
    ],
)
def test_bad_base_url(url: str, message: str) -> None:
    text = edit("base_url: http://127.0.0.1:8081/v1", f"base_url: {url}")
    assert problems(text) == [f"bastion.yaml:4: upstreams.local.base_url: {message}"]


def test_base_url_with_credentials_is_refused_without_echoing_them() -> None:
    text = edit("base_url: http://127.0.0.1:8081/v1", "base_url: https://user:hunter2@h/v1")
    [problem] = problems(text)
    assert "hunter2" not in problem
    assert problem == (
        "bastion.yaml:4: upstreams.local.base_url: must not contain credentials "
        "(user:password@); name the key's environment variable in api_key_env instead"
    )


def test_base_url_trailing_slash_is_dropped() -> None:
    text = edit("base_url: http://127.0.0.1:8081/v1", "base_url: https://API.example.com/v1/")
    assert parse_config(text).upstreams["local"].base_url == "https://API.example.com/v1"


def test_api_key_env_names_a_variable() -> None:
    text = edit("    api: openai\n", "    api: openai\n    api_key_env: OPENAI_API_KEY\n")
    assert parse_config(text).upstreams["local"].api_key_env == "OPENAI_API_KEY"


def test_api_key_pasted_into_api_key_env_is_never_echoed() -> None:
    secret = "sk-proj-Abc123"
    text = edit("    api: openai\n", f"    api: openai\n    api_key_env: {secret}\n")
    [problem] = problems(text)
    assert secret not in problem
    assert problem == (
        "bastion.yaml:6: upstreams.local.api_key_env: must be the NAME of an environment "
        "variable (capital letters, digits and '_', e.g. OPENAI_API_KEY) that holds the key, "
        "never the key itself"
    )


def test_upstream_defaults() -> None:
    upstream = parse_config(BASE).upstreams["local"]
    assert upstream.api_key_env is None
    assert upstream.timeout_seconds == 60
    assert upstream.connect_timeout_seconds == 5


def test_number_as_a_key_of_an_entry() -> None:
    text = edit("  lab: {kind: internal}", "  lab: {kind: internal, 7: x}")
    assert problems(text) == [
        "bastion.yaml:14: orgs.lab[7]: unknown key: keys here are names, not numbers or other "
        "values"
    ]
