"""An outage is logged when it starts and when it ends, never at every retry."""

from __future__ import annotations

import logging

import pytest

from bastion.logs import JsonFormatter, Outage


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("bastion.test.outage")
    outage = Outage(logger, "state epoch poll")
    with caplog.at_level(logging.INFO, logger="bastion.test.outage"):
        outage.recovered()  # nothing was down: nothing to say
        for _ in range(50):
            outage.failed(ConnectionError("db.internal:5432 password=hunter2"), "serving on")
        outage.recovered()
        outage.recovered()
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "state epoch poll failed (ConnectionError); serving on",
        "state epoch poll working again after 50 failures",
    ]
    line = JsonFormatter().format(caplog.records[0])
    assert '"error_type":"ConnectionError"' in line
    assert "hunter2" not in line  # an exception's text never reaches the log line
    assert "Traceback" not in line
    assert not outage.down
