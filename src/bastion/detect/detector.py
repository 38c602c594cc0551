"""The one protocol every detector implements, and the context it may read.

A detector is a small object with bounded state (see ``state.py``) and no I/O: ``observe`` takes
one observation and returns zero or more drafts. It must be fast (the engine's budget is 20,000
events per second through *all* detectors on one core), deterministic given its state, and
tolerant of any field being empty. Exceptions are caught and counted by the engine; a detector
that raises never stops the others.

State lives in named structures (``structures()``) so the engine can snapshot it to the store
and restore it after a restart, and report sizes and evictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from bastion.config.models import BastionConfig, Level

from .findings import Draft
from .observation import Observation


@dataclass(frozen=True, slots=True)
class Context:
    """What detectors may know beyond the event: the current config (orgs, principals,
    compartments, detection tuning). Read-only; replaced when the config changes."""

    config: BastionConfig
    # Principal names (beyond the config's) and their org, from the store.
    orgs_of: Mapping[str, str] = field(default_factory=dict)

    def org_of(self, principal: str) -> str:
        declared = self.config.principals.get(principal)
        return declared.org if declared is not None else self.orgs_of.get(principal, "")

    def is_vendor(self, org: str) -> bool:
        declared = self.config.orgs.get(org)
        return declared is not None and declared.kind == "vendor"

    def level(self, compartment: str) -> Level | None:
        declared = self.config.compartments.get(compartment)
        return declared.level if declared is not None else None


class Structure(Protocol):
    def dump(self) -> Any: ...
    def load(self, data: Any) -> None: ...


class Detector(Protocol):
    id: ClassVar[str]  # "D5"
    title: ClassVar[str]
    techniques: ClassVar[tuple[str, ...]]  # ATT&CK / ATLAS ids
    window: ClassVar[float]  # seconds within which repeats merge into one finding

    def observe(self, obs: Observation, ctx: Context) -> list[Draft]: ...

    def structures(self) -> Mapping[str, Structure]: ...


class StatefulDetector:
    """Convenience base: state dump/load/size through :meth:`structures`."""

    id: ClassVar[str] = ""
    title: ClassVar[str] = ""
    techniques: ClassVar[tuple[str, ...]] = ()
    window: ClassVar[float] = 3600.0

    def structures(self) -> Mapping[str, Structure]:
        return {}

    def dump(self) -> dict[str, Any]:
        return {name: structure.dump() for name, structure in self.structures().items()}

    def load(self, data: Mapping[str, Any]) -> None:
        for name, structure in self.structures().items():
            if name in data:
                structure.load(data[name])
