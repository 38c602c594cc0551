"""Playbooks: loading ``playbooks.yaml`` (or the built-in defaults) and matching findings.

Matching is pure: a finding, the kind of its org and the compartments its evidence touched go
in; the (playbook, step) pairs to carry out come out, in file order. The service
(``respond/service.py``) decides what each step targets and whether it may act.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bastion.config.loader import parse_document, read_text
from bastion.config.models import BastionConfig
from bastion.config.playbooks import Playbook, Playbooks, Step
from bastion.detect.findings import Finding, Severity
from bastion.errors import ConfigError

log = logging.getLogger("bastion.respond")
DEFAULTS = "default_playbooks.yaml"


def default_playbooks() -> Playbooks:
    text = resources.files("bastion.config").joinpath(DEFAULTS).read_text("utf-8")
    return parse_document(text, DEFAULTS, Playbooks)


def load_playbooks(config: BastionConfig, base_dir: Path) -> Playbooks:
    """The playbooks bastion.yaml names (relative to its directory), or the built-in ones.
    A missing or invalid file is a :class:`ConfigError` naming file and line."""
    name = config.response.playbooks
    if name is None:
        return default_playbooks()
    path = base_dir / name
    return parse_document(read_text(path), str(path), Playbooks)


class PlaybookSource:
    """The current playbooks, reloaded when the config names another file or the file changes.
    A file that breaks after startup keeps the last good playbooks running, and says why."""

    def __init__(self, base_dir: Path) -> None:
        self._base_dir = base_dir
        self._key: tuple[str | None, float] | None = None
        self._current: Playbooks | None = None
        self.error = ""

    def current(self, config: BastionConfig) -> Playbooks:
        name = config.response.playbooks
        key = (name, self._mtime(name))
        if self._current is None or key != self._key:
            try:
                self._current = load_playbooks(config, self._base_dir)
                self.error = ""
            except ConfigError as exc:
                if self._current is None:
                    raise
                self.error = "; ".join(exc.problems)[:1000]
                log.warning("playbooks not reloaded; keeping the running ones")
            self._key = key
        return self._current

    def _mtime(self, name: str | None) -> float:
        if name is None:
            return 0.0
        try:
            return (self._base_dir / name).stat().st_mtime
        except OSError:
            return -1.0


@dataclass(frozen=True, slots=True)
class Situation:
    """What a match needs to know beyond the finding itself."""

    org_kind: str  # vendor | internal | "" (unknown)
    compartments: frozenset[str]


def matches(playbook: Playbook, finding: Finding, situation: Situation) -> bool:
    match = playbook.match
    if match.detections and finding.detection not in match.detections:
        return False
    if finding.severity.rank < Severity(match.min_severity).rank:
        return False
    if finding.confidence < match.min_confidence:
        return False
    if situation.org_kind not in match.org_kinds:
        return False
    return not match.compartments or not situation.compartments.isdisjoint(match.compartments)


def planned(
    playbooks: Sequence[Playbook], finding: Finding, situation: Situation
) -> list[tuple[Playbook, Step]]:
    """The steps to consider for this finding now: from every matching playbook, in order,
    those whose ``min_count`` the finding has reached."""
    return [
        (playbook, step)
        for playbook in playbooks
        if matches(playbook, finding, situation)
        for step in playbook.actions
        if finding.count >= step.min_count
    ]
