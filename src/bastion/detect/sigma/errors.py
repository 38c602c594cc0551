"""What is wrong with one rule, before the loader knows which file and line it came from."""

from __future__ import annotations


class RuleProblem(Exception):
    """A rule cannot be used as written. ``key`` names the YAML key the problem is at (a field
    name such as ``principal`` or a correlation key such as ``group-by``), so the loader can
    point at its line; empty means the rule's first line."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.key = key
