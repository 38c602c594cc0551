"""``playbooks.yaml``: which findings Bastion answers automatically, and how.

A playbook matches findings (by detection id, severity, confidence, how often the finding has
repeated, the org's kind, the compartments its evidence touched) and lists actions in order.
Every matching playbook runs; an action already taken for a finding is not taken twice. Each
action runs in ``enforce`` mode (it acts) or ``dry-run`` (it only records what it would have
done). Wide actions wait for an admin's approval: suspending a vendor org (unless the finding is
critical) and locking a compartment (always: break-glass only).

    playbooks:
      - name: token-replay
        match: {detections: [D2]}
        actions: [revoke_family, open_incident, notify]
      - name: enumeration
        match: {detections: [D5], org_kinds: [vendor]}
        actions:
          - {action: throttle, rate: 6, ttl: 1h}
          - {action: suspend_principal, min_count: 3}
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictStr,
    field_validator,
    model_validator,
)

ACTIONS = (
    "step_up",
    "throttle",
    "revoke_family",
    "suspend_principal",
    "suspend_org",
    "lock_compartment",
    "lock_key",
    "lock_network",
    "notify",
    "open_incident",
)
Action = Literal[
    "step_up",
    "throttle",
    "revoke_family",
    "suspend_principal",
    "suspend_org",
    "lock_compartment",
    "lock_key",
    "lock_network",
    "notify",
    "open_incident",
]
SeverityName = Literal["low", "medium", "high", "critical"]
# Actions whose reach is a whole org or compartment: they wait for approval by default.
WIDE = frozenset({"suspend_org", "lock_compartment"})
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# The ids findings carry: D1 … D15, and S:<name> for Sigma rules (detect/sigma/rules.py).
_DETECTION = re.compile(r"D([1-9]|1[0-5])|S:[a-z0-9._-]{1,64}")
_DURATION = re.compile(r"(\d{1,7})([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_TTL = 365 * 86400


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"is not a name (lowercase letters, digits, '.', '_', '-'), got {value[:40]!r}"
        )
    return value


def _detection(value: str) -> str:
    if not _DETECTION.fullmatch(value):
        raise ValueError(
            f"is not a detection id (D1 to D15, or S:<sigma rule name>), got {value[:40]!r}"
        )
    return value


def _duration(value: object) -> object:
    """``90``, ``90s``, ``15m``, ``4h``, ``2d`` → seconds (numbers pass through)."""
    if isinstance(value, bool):  # YAML's `yes`/`true` would otherwise become 1 second
        raise ValueError("is not a duration such as 90s, 15m, 4h or 2d, got a boolean")
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if not match:
            raise ValueError(f"is not a duration such as 90s, 15m, 4h or 2d, got {value[:40]!r}")
        return int(match.group(1)) * _UNITS[match.group(2)]
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Match(_Frozen):
    """Which findings a playbook answers; every given condition must hold."""

    detections: tuple[Annotated[StrictStr, AfterValidator(_detection)], ...] = ()  # () = any
    min_severity: SeverityName = "low"
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    org_kinds: tuple[Literal["vendor", "internal"], ...] = ("vendor", "internal")
    compartments: tuple[StrictStr, ...] = ()  # () = any; else the evidence touched one of them


class Step(_Frozen):
    """One action of a playbook."""

    action: Action
    mode: Literal["enforce", "dry-run"] | None = None  # None: the playbook's mode
    requires_approval: bool | None = None  # None: true for wide actions, false otherwise
    # A wide action waits for approval unless the finding is at least this severe.
    approval_waived_at: SeverityName | None = None
    min_count: int = Field(default=1, ge=1, le=1_000_000)  # the finding has repeated this often
    ttl: Annotated[int | None, BeforeValidator(_duration), Field(ge=1, le=MAX_TTL)] = None
    rate: float | None = Field(default=None, gt=0, le=10_000)  # throttle: requests per minute

    @model_validator(mode="after")
    def _consistent(self) -> Step:
        if self.rate is not None and self.action != "throttle":
            raise ValueError(f"{self.action}: only throttle takes a rate")
        if self.action == "lock_compartment" and (
            self.requires_approval is False or self.approval_waived_at is not None
        ):
            raise ValueError(
                "lock_compartment is break-glass only: it always waits for an admin's approval"
            )
        if self.ttl is not None and self.action in ("notify", "open_incident"):
            raise ValueError(f"{self.action} takes no ttl")
        return self

    @property
    def needs_approval(self) -> bool:
        return self.requires_approval if self.requires_approval is not None else self.action in WIDE


def _step(value: object) -> object:
    return {"action": value} if isinstance(value, str) else value


class Playbook(_Frozen):
    name: Annotated[StrictStr, AfterValidator(_name)]
    description: StrictStr = Field(default="", max_length=500)
    mode: Literal["enforce", "dry-run"] = "enforce"
    match: Match = Field(default_factory=Match)
    actions: tuple[Annotated[Step, BeforeValidator(_step)], ...]

    @field_validator("actions")
    @classmethod
    def _some_actions(cls, actions: tuple[Step, ...]) -> tuple[Step, ...]:
        # Not Field(min_length=1): pydantic would also report "too short" for every list
        # that has one bad step, next to the step's own error.
        if not actions:
            raise ValueError("must list at least one action")
        return actions

    @model_validator(mode="after")
    def _d8_never_suspends(self) -> Playbook:
        """D8 (off-hours) only amplifies other findings: it never suspends anyone alone."""
        if set(self.match.detections) == {"D8"}:
            wide = [s.action for s in self.actions if s.action.startswith("suspend_")]
            if wide:
                raise ValueError(
                    f"playbook {self.name!r}: D8 (off-hours use) alone must never suspend "
                    f"({', '.join(wide)}); match it together with another detection"
                )
        return self


class Playbooks(_Frozen):
    """The whole file."""

    version: Literal[1] = 1
    playbooks: tuple[Playbook, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Playbooks:
        names = [p.name for p in self.playbooks]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"playbook names must be unique; repeated: {', '.join(twice)}")
        return self


class Automatic(_Frozen):
    """Limits on automatic actions, so a detector bug cannot lock out the whole lab."""

    enabled: bool = True
    # At most this many enforced automatic actions per window; beyond it actions are recorded as
    # rate_limited (not taken) and a notification says so.
    max_actions: int = Field(default=20, ge=1, le=100_000)
    window: Annotated[int, BeforeValidator(_duration), Field(ge=1, le=86400)] = 300
