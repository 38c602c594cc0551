"""D12: org-wide anomaly — several principals of one vendor org flagged in one window (T1199).

This detector consumes *findings*, not events. Besides the :class:`Detector` protocol's
``observe`` (which ignores every observation) it has::

    on_finding(finding: Finding, ctx: Context) -> list[Draft]

which the engine calls for every stored finding (new or merged) that is ``open`` and not from
D12 itself. Per org (the finding's ``org``, else the org of its principal), it keeps the
principals flagged within ``span`` seconds (1 h); once ``min_principals`` (3) distinct principals
are flagged, the org itself gets a finding: MEDIUM, HIGH at ``high_principals`` (5) or when at
least two of the principals have HIGH or CRITICAL findings. A compromised vendor environment
shows up as many accounts misbehaving at once; one noisy account does not.

Only vendor orgs are watched unless ``vendors_only`` is False. Findings without a principal
(org-level findings such as D7's) and the detections in ``ignore`` (D8 by default: off-hours
is an amplifier, and an org-wide shift change must not escalate) do not count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

from ..detector import Context, StatefulDetector, Structure
from ..findings import Draft, Finding, Severity
from ..observation import Observation
from ..state import Windows

SEP = "\t"


class OrgWide(StatefulDetector):
    id: ClassVar[str] = "D12"
    title: ClassVar[str] = "Org-wide anomaly"
    techniques: ClassVar[tuple[str, ...]] = ("T1199",)
    window: ClassVar[float] = 3600.0

    def __init__(
        self,
        *,
        min_principals: int = 3,
        high_principals: int = 5,
        span: float = 3600.0,
        ignore: tuple[str, ...] = ("D8",),
        vendors_only: bool = True,
        cap_orgs: int = 2_000,
        flags_per_org: int = 512,
    ) -> None:
        self.min_principals = min_principals
        self.high_principals = high_principals
        self.ignore = frozenset(ignore)
        self.vendors_only = vendors_only
        # org → (time, "principal<TAB>detection<TAB>evidence id", severity rank)
        self.flags = Windows(span, cap_orgs, flags_per_org)

    def structures(self) -> Mapping[str, Structure]:
        return {"flags": self.flags}

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]:
        return []

    def on_finding(self, finding: Finding, ctx: Context) -> list[Draft]:
        """Count ``finding`` towards its org; a draft for the org once enough principals of
        it are flagged within the span."""
        if finding.detection == self.id or finding.status != "open":
            return []
        if not finding.principal or finding.detection.split(":")[0] in self.ignore:
            return []
        org = finding.org or ctx.org_of(finding.principal)
        if not org or (self.vendors_only and not ctx.is_vendor(org)):
            return []
        evidence = finding.evidence[-1] if finding.evidence else ""
        window = self.flags.of(org)
        flag = SEP.join((finding.principal, finding.detection, evidence))
        window.add(finding.last_seen, flag, float(finding.severity.rank))
        return self._judge(org, window.items, "vendor org" if ctx.is_vendor(org) else "org")

    def _judge(self, org: str, items: Iterable[tuple[float, str, float]], kind: str) -> list[Draft]:
        detections: dict[str, set[str]] = {}
        strongest: dict[str, float] = {}
        evidence: dict[str, str] = {}
        for _, flag, rank in items:
            principal, detection, event = flag.split(SEP)
            detections.setdefault(principal, set()).add(detection)
            strongest[principal] = max(strongest.get(principal, 0.0), rank)
            if event:
                evidence[principal] = event
        if len(detections) < self.min_principals:
            return []
        strong = sum(1 for rank in strongest.values() if rank >= Severity.HIGH.rank)
        high = len(detections) >= self.high_principals or strong >= 2
        listed = "; ".join(
            f"{principal}: {', '.join(sorted(found))}"
            for principal, found in sorted(detections.items())[:10]
        )
        return [
            Draft(
                detection=self.id,
                severity=Severity.HIGH if high else Severity.MEDIUM,
                confidence=min(0.5 + 0.1 * len(detections), 0.9),
                entity_type="org",
                entity=org,
                explanation=(
                    f"{kind} {org}: {len(detections)} principals flagged within "
                    f"{self.flags.span / 60:.0f} min ({listed})"
                ),
                evidence=tuple(evidence[p] for p in sorted(evidence)),
                techniques=self.techniques,
                principal="",
                org=org,
            )
        ]
