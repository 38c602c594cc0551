"""Times as the CLI and the console show them: UTC wall-clock, and relative to a first signal."""

from __future__ import annotations

from datetime import UTC, datetime


def when(at: float | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC; "-" for no time."""
    if at is None:
        return "-"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")


def relative(seconds: float) -> str:
    """``T-1h02m``, ``T+0s``, ``T+2d03h``: a time relative to an incident's first signal."""
    sign = "-" if seconds < 0 else "+"
    total = int(abs(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        body = f"{days}d{hours:02d}h"
    elif hours:
        body = f"{hours}h{minutes:02d}m"
    elif minutes:
        body = f"{minutes}m{secs:02d}s"
    else:
        body = f"{secs}s"
    return f"T{sign}{body}"
