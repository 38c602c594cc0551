"""What the simulation plans: calls at simulated times, benign or labelled with a scenario.

A :class:`Call` is one thing a principal does — a model call, a model listing, an admin API
call, or (by the admin) a new hire's onboarding or a new laptop's key — at ``at`` seconds
after the start of the run, from ``source`` with the user agent ``agent``, in the client session
``session`` (one login: one token family; calls sharing a session share the client and its
tokens, which is how a stolen session is replayed). The runner executes calls in time order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

# The first simulated instant: a Monday at midnight UTC, fixed so a seed always gives the same
# run (no daylight-saving change falls in the weeks after it).
START = datetime(2030, 1, 7, tzinfo=UTC)
DAY = 86_400.0
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Call:
    at: float  # seconds since START
    principal: str
    session: str
    source: str
    agent: str
    kind: str = "chat"  # chat | models | admin | hire | rekey
    model: str = ""
    tokens: int = 0  # output tokens asked for
    prompt: str = ""
    scenario: str = ""  # "" for benign traffic, else the id of the scenario it belongs to
    method: str = ""  # admin calls
    path: str = ""


def local_time(zone: str, day: int, hour: float) -> float:
    """Seconds since START of ``hour`` (local, may exceed 24) on day ``day`` in ``zone``."""
    date = (START + timedelta(days=day)).date()
    midnight = datetime(date.year, date.month, date.day, tzinfo=ZoneInfo(zone))
    return (midnight + timedelta(hours=hour)).timestamp() - START.timestamp()


def weekday(day: int) -> int:
    """0 for Monday (the run starts on one)."""
    return day % 7
