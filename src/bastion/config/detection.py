"""The ``detection`` section of bastion.yaml: tuning kept as data, not inside rules.

Learning mode (per org or principal: findings are recorded but raise no risk), suppressions
(known egress ranges, VPNs, jump hosts: matching findings are recorded as suppressed), honeytokens
(principals and device keys that no legitimate caller ever uses), the risk score's decay and
the level at which it forbids the most sensitive compartments, an optional IP intelligence
database, content classification at the gateway (D10), and operator Sigma rules.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from .vendor import Cidr

_DETECTION = re.compile(r"D([1-9]|1[0-5])|S:[a-z0-9._-]{1,64}")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_JKT = re.compile(r"[A-Za-z0-9_-]{43}")
_ENTRY_POINT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*")
_LABEL = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")
# The shipped keyword classifier's labels (bastion.detect.content.LABELS): offensive cyber topics
# and jailbreak phrasing.
OFFENSIVE_LABELS = (
    "exploit_development",
    "malware",
    "credential_theft",
    "command_and_control",
    "defense_evasion",
    "privilege_escalation",
    "lateral_movement",
    "jailbreak",
)


def _detection(value: str) -> str:
    if not _DETECTION.fullmatch(value):
        raise ValueError(
            f"is not a detection id (D1 to D15, or S:<sigma rule name>), got {value[:40]!r}"
        )
    return value


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"is not a name (lowercase letters, digits, '.', '_', '-'), got {value[:40]!r}"
        )
    return value


def _label(value: str) -> str:
    if not _LABEL.fullmatch(value):
        raise ValueError(
            f"is not a content label (lowercase letters, digits, '_', '.', ':', '-'), "
            f"got {value[:40]!r}"
        )
    return value


def _jkt(value: str) -> str:
    if not _JKT.fullmatch(value):
        raise ValueError("is not a device key thumbprint (43 base64url characters)")
    return value


DetectionId = Annotated[StrictStr, AfterValidator(_detection)]
Name = Annotated[StrictStr, AfterValidator(_name)]
Path = Annotated[StrictStr, Field(min_length=1, max_length=1000)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Learning(_Frozen):
    """Who is in learning mode: their findings are recorded but raise no risk score."""

    orgs: tuple[Name, ...] = ()
    principals: tuple[Name, ...] = ()


class Suppression(_Frozen):
    """Findings matching every given field are recorded as ``suppressed`` (no risk)."""

    detections: tuple[DetectionId, ...] = ()  # empty: every detection
    networks: tuple[Cidr, ...] = ()
    principals: tuple[Name, ...] = ()
    orgs: tuple[Name, ...] = ()
    reason: Annotated[StrictStr, Field(min_length=1, max_length=500)]


class Honeytokens(_Frozen):
    """Credentials no legitimate caller uses: presenting one is denied and a critical finding."""

    principals: tuple[Name, ...] = ()
    keys: tuple[Annotated[StrictStr, AfterValidator(_jkt)], ...] = ()

    def covers(self, principal: str | None, jkt: str | None = None) -> bool:
        """Whether ``principal`` or the device key ``jkt`` is a honeytoken."""
        return bool(principal and principal in self.principals) or bool(jkt and jkt in self.keys)


class Risk(_Frozen):
    """Per-principal and per-org risk scores (0-100) that decay, visible to Cedar as
    ``context.risk``; at ``forbid_critical_at`` the default policy forbids critical models."""

    half_life_minutes: Annotated[StrictInt, Field(ge=1, le=10_080)] = 60
    forbid_critical_at: Annotated[StrictInt, Field(ge=1, le=100)] = 70


class IpIntel(_Frozen):
    """MaxMind-format databases: ASN (``autonomous_system_number``) and anonymizer/hosting lists."""

    asn_db: Path | None = None
    anonymizer_db: Path | None = None


def _entry_point(value: str) -> str:
    if not _ENTRY_POINT.fullmatch(value):
        raise ValueError(
            f"is not a Python entry point 'package.module:attribute', got {value[:80]!r}"
        )
    return value


class Content(_Frozen):
    """D10 content signals: the gateway labels what requests to these compartments ask about
    (a label and a score enter the audit event, never the prompt). ``levels`` and
    ``compartments`` add up; ``classifier`` replaces the shipped keyword classifier with an
    operator's (``"module:attr"``, an object with ``classify(payload) -> (label, score) | None``
    or a class making one). D10 raises findings for ``labels`` scored at least ``threshold``."""

    enabled: StrictBool = True
    levels: tuple[Literal["open", "internal", "restricted", "critical"], ...] = (
        "restricted",
        "critical",
    )
    compartments: tuple[Name, ...] = ()
    classifier: Annotated[StrictStr, AfterValidator(_entry_point)] | None = None
    max_chars: Annotated[StrictInt, Field(ge=256, le=1024 * 1024)] = 16 * 1024
    threshold: Annotated[float, Field(strict=True, ge=0.0, le=1.0)] = 0.6
    labels: tuple[Annotated[StrictStr, AfterValidator(_label)], ...] = OFFENSIVE_LABELS


class Detection(_Frozen):
    enabled: StrictBool = True
    learning: Learning = Field(default_factory=Learning)
    suppressions: tuple[Suppression, ...] = ()
    honeytokens: Honeytokens = Field(default_factory=Honeytokens)
    risk: Risk = Field(default_factory=Risk)
    ip_intel: IpIntel = Field(default_factory=IpIntel)
    content: Content = Field(default_factory=Content)
    rules: tuple[Path, ...] = ()  # Sigma rule files or directories
