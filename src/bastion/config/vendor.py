"""The pieces of a vendor's boundary: contract window, working hours, network allow-lists.

They are plain values here; the gateway turns them into per-request facts (``policy/facts.py``)
that Cedar policies read.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime, time
from enum import StrEnum
from functools import lru_cache
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictStr, model_validator

_HHMM = re.compile(r"([01]\d|2[0-3]):[0-5]\d|24:00")


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"is not an IP address or CIDR network (got {value[:60]!r})") from None


Cidr = Annotated[StrictStr, AfterValidator(_cidr)]


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {value[:60]!r} (use an IANA name: Europe/Paris)"
        ) from None
    return value


def _hhmm(value: str) -> str:
    if not _HHMM.fullmatch(value):
        raise ValueError(f"must be a time HH:MM between 00:00 and 24:00 (got {value[:20]!r})")
    return value


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


class Day(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


def _some_days(value: tuple[Day, ...]) -> tuple[Day, ...]:
    if not value:
        raise ValueError("must list at least one day")
    return value


class Contract(_Frozen):
    """The window in which a vendor's people may use anything (``start`` ≤ t < ``end``)."""

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered_and_zoned(self) -> Contract:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("contract times need a time zone, e.g. 2026-12-31T23:59:59Z")
        if self.end <= self.start:
            raise ValueError("contract end must be after its start")
        return self

    def covers(self, now: float) -> bool:
        return self.start.timestamp() <= now < self.end.timestamp()


class WorkingHours(_Frozen):
    """A weekly window in a time zone: when a vendor's people may work (an org's
    ``working_hours``), or when a compartment may be used at all (its ``allowed_hours``)."""

    timezone: Annotated[StrictStr, AfterValidator(_zone)]
    days: Annotated[tuple[Day, ...], AfterValidator(_some_days)] = (
        Day.MON,
        Day.TUE,
        Day.WED,
        Day.THU,
        Day.FRI,
    )
    start: Annotated[StrictStr, AfterValidator(_hhmm)] = "08:00"
    end: Annotated[StrictStr, AfterValidator(_hhmm)] = "18:00"

    @model_validator(mode="after")
    def _ordered(self) -> WorkingHours:
        if self.end <= self.start:
            raise ValueError("hours end must be after their start (same day)")
        return self

    def covers(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, ZoneInfo(self.timezone))
        day = tuple(Day)[local.weekday()]
        clock = local.time().replace(microsecond=0)
        start = time.fromisoformat(self.start)
        end = time(23, 59, 59) if self.end == "24:00" else time.fromisoformat(self.end)
        return day in self.days and start <= clock and (clock < end or self.end == "24:00")


def network_allows(networks: tuple[str, ...], address: str) -> bool:
    """An empty allow-list allows everything; otherwise the address must be in one network."""
    if not networks:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _parsed(networks))


@lru_cache(maxsize=1024)
def _parsed(
    networks: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Parse an allow-list once, not on every request (the lists come from the config)."""
    return tuple(ipaddress.ip_network(net) for net in networks)
