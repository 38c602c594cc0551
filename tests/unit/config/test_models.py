"""The config models used directly from Python: the same rules hold without the loader."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.config.models import (
    ApiStyle,
    BastionConfig,
    Compartment,
    Grants,
    Level,
    Model,
    Org,
    OrgKind,
    Principal,
    PrincipalKind,
    TokenBinding,
    Upstream,
)
from bastion.config.problems import ConfigProblems, describe, format_path


def config(**overrides: object) -> BastionConfig:
    values: dict[str, object] = {
        "version": 1,
        "upstreams": {"u": Upstream(base_url="http://h/v1", api=ApiStyle.OPENAI)},
        "compartments": {
            "general": Compartment(level=Level.INTERNAL, grants=Grants(orgs=("lab",))),
            "frontier": Compartment(level=Level.CRITICAL),
        },
        "orgs": {"lab": Org(kind=OrgKind.INTERNAL), "acme": Org(kind=OrgKind.VENDOR)},
        "models": (
            Model(name="chat", upstream="u", compartment="general"),
            Model(name="cyber", upstream="u", upstream_model="gpt-x", compartment="frontier"),
        ),
    }
    values.update(overrides)
    return BastionConfig.model_validate(values)


def test_levels_are_ordered() -> None:
    assert [level.rank for level in Level] == [0, 1, 2, 3]
    assert Level.OPEN.rank < Level.INTERNAL.rank < Level.RESTRICTED.rank < Level.CRITICAL.rank
    assert Level("critical") is Level.CRITICAL


def test_model_lookup() -> None:
    built = config()
    chat = built.model("chat")
    assert chat is not None
    assert chat.upstream_model == "chat"
    assert built.model("nope") is None
    assert built.compartment_of("cyber") == built.compartments["frontier"]
    assert built.compartment_of("nope") is None


def test_models_are_frozen() -> None:
    built = config()
    with pytest.raises(ValidationError):
        built.version = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        built.orgs["lab"].kind = OrgKind.VENDOR  # type: ignore[misc]


def test_cross_references_hold_when_built_in_python() -> None:
    with pytest.raises(ValidationError) as caught:
        config(models=(Model(name="chat", upstream="gone", compartment="general"),))
    [error] = caught.value.errors()
    problems = error["ctx"]["error"]
    assert isinstance(problems, ConfigProblems)
    assert problems.problems == (
        (("models", 0, "upstream"), "unknown upstream 'gone' (declared: u)"),
    )


def test_vendor_critical_grant_is_refused_in_python() -> None:
    frontier = Compartment(level=Level.CRITICAL, grants=Grants(orgs=("acme",)))
    with pytest.raises(ValidationError, match="vendor org 'acme' may not hold a standing grant"):
        config(compartments={"general": Compartment(level=Level.OPEN), "frontier": frontier})


def test_strict_level_needs_token_binding_in_python() -> None:
    with pytest.raises(ValidationError, match="token_binding: must be 'required'"):
        Compartment(level=Level.RESTRICTED, token_binding=TokenBinding.OPTIONAL)


def test_validation_errors_from_python_do_not_show_input() -> None:
    with pytest.raises(ValidationError) as caught:
        Upstream(base_url="http://h", api=ApiStyle.OPENAI, api_key_env="sk-secret-value")
    assert "sk-secret-value" not in str(caught.value)


def test_principal_defaults() -> None:
    principal = Principal(kind=PrincipalKind.SERVICE, org="lab")
    assert principal.disabled is False


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("models", 0, "upstream"), "models[0].upstream"),
        (("compartments", "secret", "level"), "compartments.secret.level"),
        (("upstreams", "api.v1", "base_url"), "upstreams['api.v1'].base_url"),
        ((), ""),
    ],
)
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("top", "'top'"),
        ("s" * 61, "'" + "s" * 60 + "…'"),
        (True, "true"),
        (None, "null"),
        (1.5, "1.5"),
        ({"a": 1}, "a mapping"),
        ([1], "a list"),
        (b"x", "binary data"),
    ],
)
def test_describe(value: object, text: str) -> None:
    assert describe(value) == text
