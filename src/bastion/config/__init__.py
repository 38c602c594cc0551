"""``bastion.yaml``: the declarative description of what Bastion protects.

``load_config`` reads a file and ``parse_config`` reads text; both return a frozen
:class:`BastionConfig` or raise :class:`bastion.errors.ConfigError` naming the line and key path
of every problem. ``example_config_text`` is the commented example ``bastion init`` writes.
"""

from __future__ import annotations

from importlib import resources

from .loader import load_config, parse_config
from .models import BastionConfig

__all__ = ["BastionConfig", "example_config_text", "load_config", "parse_config"]


def example_config_text() -> str:
    """The shipped example config (package data), comments included."""
    return resources.files("bastion.config").joinpath("example.yaml").read_text(encoding="utf-8")
