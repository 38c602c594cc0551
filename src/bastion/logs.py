"""Structured JSON logs: one object per line, and nothing secret in any of them.

A log line carries the time, level, logger, message and the name of an exception's class —
never a traceback or an exception's text (either could quote a token, a key or a prompt). The
same formatter is installed for uvicorn's loggers so the whole process speaks one format.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

# ``extra=`` keys a log call may attach; anything else is left out of the line.
ALLOWED_EXTRAS = ("event", "principal", "route", "status", "epoch", "count")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            data["error_type"] = record.exc_info[0].__name__
        for key in ALLOWED_EXTRAS:
            if key in record.__dict__:
                data[key] = record.__dict__[key]
        return orjson.dumps(data, default=str).decode()


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not the stream it was at
    configuration time (which an embedding program, or a test, may have replaced and closed)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # always sys.stderr


class Outage:
    """A failure that repeats while a dependency is down (the database, say), logged once when it
    starts and once when it ends — not at every retry, which would bury everything else."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self.down = False
        self.failures = 0  # in the current outage

    def failed(self, exc: BaseException, consequence: str = "retrying") -> None:
        if not self.down:
            self._log.warning(
                "%s failed (%s); %s",
                self._what,
                type(exc).__name__,
                consequence,
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        self.down = True
        self.failures += 1

    def recovered(self) -> None:
        if self.down:
            self._log.warning("%s working again after %d failures", self._what, self.failures)
        self.down, self.failures = False, 0


def log_config(level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for ``bastion serve`` (also handed to uvicorn)."""
    handler = {"()": "bastion.logs.StderrHandler", "formatter": "json"}
    logger = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "bastion.logs.JsonFormatter"}},
        "handlers": {"default": handler},
        "loggers": {
            "bastion": logger,
            "uvicorn": logger,
            "uvicorn.error": {**logger, "handlers": ["default"]},
            "uvicorn.access": {**logger, "level": "WARNING"},
        },
    }
