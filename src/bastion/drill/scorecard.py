"""The drill's scorecard: for each step of the threat model, was it blocked, detected,
contained, how fast, and how many attacker requests got through after the first malicious one.

A step **passes** when it was blocked (no attacker request succeeded) or contained (the
attacker was cut off by a lock or throttle), containment came under :data:`CONTAIN_LIMIT`
seconds after the first malicious request, and at most :data:`MAX_LEAKED` attacker requests
succeeded after that first one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .device import Attempt

CONTAIN_LIMIT = 1.0
MAX_LEAKED = 3


@dataclass
class StepResult:
    step: str  # T1 … T10
    title: str
    attempts: list[Attempt] = field(default_factory=list)  # the attacker's, in order
    detections: list[str] = field(default_factory=list)  # e.g. ["D2 fd_…"]
    actions: list[str] = field(default_factory=list)  # e.g. ["revoke_family done"]
    incident: str = ""
    first_malicious: float | None = None
    detected_at: float | None = None
    contained_at: float | None = None
    note: str = ""
    error: str = ""  # the step could not be run (a set-up problem, not a verdict)

    def record(self, attempt: Attempt) -> Attempt:
        if self.first_malicious is None:
            self.first_malicious = attempt.at
        self.attempts.append(attempt)
        if attempt.contained and self.contained_at is None:
            self.contained_at = attempt.at
        return attempt

    @property
    def blocked(self) -> bool:
        return bool(self.attempts) and not any(a.served for a in self.attempts)

    @property
    def contained(self) -> bool:
        return self.contained_at is not None

    @property
    def detected(self) -> bool:
        return bool(self.detections)

    @property
    def leaked(self) -> int:
        """Attacker requests that succeeded after the first malicious one."""
        return sum(1 for a in self.attempts[1:] if a.served)

    @property
    def time_to_detect(self) -> float | None:
        return _since(self.first_malicious, self.detected_at)

    @property
    def time_to_contain(self) -> float | None:
        """Seconds from the first malicious request to the first one refused by containment;
        0 when every request was blocked outright."""
        if self.blocked and self.contained_at is None:
            return 0.0
        return _since(self.first_malicious, self.contained_at)

    @property
    def passed(self) -> bool:
        if self.error or not self.attempts:
            return False
        if self.leaked > MAX_LEAKED:
            return False
        if self.blocked:
            return True
        contain = self.time_to_contain
        return contain is not None and contain < CONTAIN_LIMIT

    @property
    def outcome(self) -> str:
        words = [
            w
            for w, yes in (
                ("blocked", self.blocked),
                ("detected", self.detected),
                ("contained", self.contained),
            )
            if yes
        ]
        return " + ".join(words) or "NOT STOPPED"

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["attempts"] = [asdict(a) for a in self.attempts]
        data.update(
            blocked=self.blocked,
            detected=self.detected,
            contained=self.contained,
            leaked=self.leaked,
            time_to_detect=self.time_to_detect,
            time_to_contain=self.time_to_contain,
            outcome=self.outcome,
            passed=self.passed,
        )
        return data


def _since(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(end - start, 0.0), 3)


def passed(results: Sequence[StepResult]) -> bool:
    return bool(results) and all(r.passed for r in results)


def summary(results: Sequence[StepResult]) -> dict[str, Any]:
    return {
        "passed": passed(results),
        "steps": [r.as_dict() for r in results],
        "limits": {"contain_seconds": CONTAIN_LIMIT, "max_leaked": MAX_LEAKED},
    }
