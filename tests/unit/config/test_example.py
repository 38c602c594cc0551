"""The example ``bastion init`` writes: valid, and wired to the demo's stand-in upstream."""

from __future__ import annotations

from pathlib import Path

from bastion.config import example_config_text, load_config, parse_config
from bastion.config.models import ApiStyle, Level, OrgKind

DEMO_UPSTREAM = "http://127.0.0.1:8081"


def test_example_parses() -> None:
    config = parse_config(example_config_text())
    assert config.version == 1


def test_example_round_trips_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text(example_config_text(), encoding="utf-8")
    assert load_config(path) == parse_config(example_config_text())


def test_example_upstreams_point_at_the_demo_upstream() -> None:
    upstreams = parse_config(example_config_text()).upstreams
    assert set(upstreams) == {"example-openai", "example-anthropic"}
    openai, anthropic = upstreams["example-openai"], upstreams["example-anthropic"]
    assert (openai.base_url, openai.api) == (f"{DEMO_UPSTREAM}/v1", ApiStyle.OPENAI)
    assert (anthropic.base_url, anthropic.api) == (DEMO_UPSTREAM, ApiStyle.ANTHROPIC)
    assert openai.api_key_env == anthropic.api_key_env == "EXAMPLE_UPSTREAM_KEY"


def test_example_models_and_compartments() -> None:
    config = parse_config(example_config_text())
    routes = {m.name: (m.upstream, m.compartment) for m in config.models}
    assert routes == {
        "demo-chat": ("example-openai", "general"),
        "demo-claude": ("example-anthropic", "general"),
        "cyber-frontier": ("example-openai", "frontier"),
        "vendor-chat": ("example-openai", "vendor-work"),
        "vendor-lab-chat": ("example-openai", "vendor-lab"),
    }
    frontier = config.compartments["frontier"]
    assert frontier.level is Level.CRITICAL
    assert frontier.grants.orgs == frontier.grants.principals == ()
    assert config.compartments["general"].grants.orgs == ("lab",)


def test_example_orgs_and_principals() -> None:
    config = parse_config(example_config_text())
    assert {name: org.kind for name, org in config.orgs.items()} == {
        "lab": OrgKind.INTERNAL,
        "acme": OrgKind.VENDOR,
        "oldco": OrgKind.VENDOR,
    }
    alice = config.principals["alice"]
    assert (alice.kind, alice.org, alice.disabled) == ("user", "lab", False)


def test_example_teaches_the_real_provider_urls() -> None:
    text = example_config_text()
    assert "https://api.openai.com/v1" in text
    assert "https://api.anthropic.com" in text
