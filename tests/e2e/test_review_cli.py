"""`bastion review` against a real server: the sponsor lists, shows, keeps and completes the
review the server opened for the vendor org; a vendor and bad ids are refused."""

from __future__ import annotations

import re
import time

import pytest

from .conftest import Deployment

pytestmark = pytest.mark.e2e
REVIEW_ID = re.compile(r"rv_[0-9a-f]{12}")


def open_review_id(deployment: Deployment, profile: str) -> str:
    """The id the server's lifecycle sweep opened at startup (it may still be running)."""
    deadline = time.monotonic() + 10
    while True:
        listed = deployment.cli("review", "list", "--open", "--profile", profile)
        found = REVIEW_ID.findall(listed.stdout)
        if found or time.monotonic() > deadline:
            assert len(found) == 1, listed.stdout
            assert "acme" in listed.stdout
            return found[0]
        time.sleep(0.2)


def test_the_sponsor_reviews_from_the_cli(deployment: Deployment) -> None:
    deployment.login("alice", profile="rv-alice")
    deployment.login("victor", profile="rv-victor")
    review_id = open_review_id(deployment, "rv-alice")

    shown = deployment.cli("review", "show", review_id, "--profile", "rv-alice")
    assert f"{review_id}: org acme" in shown.stdout
    assert re.search(r"victor\s+│ user\s+│ -", shown.stdout), shown.stdout  # no grants yet

    vendor = deployment.cli(
        "review",
        "keep",
        review_id,
        "victor",
        "--reason",
        "me",
        "--profile",
        "rv-victor",
        check=False,
    )
    assert vendor.returncode == 1
    assert "vendor_control_plane" in vendor.stderr

    early = deployment.cli("review", "complete", review_id, "--profile", "rv-alice", check=False)
    assert early.returncode == 1
    assert "have no decision yet: victor" in early.stderr

    kept = deployment.cli(
        "review",
        "keep",
        review_id,
        "victor",
        "--reason",
        "contract renewed",
        "--profile",
        "rv-alice",
    )
    assert f"victor: kept in review {review_id}" in kept.stdout
    done = deployment.cli("review", "complete", review_id, "--profile", "rv-alice")
    assert f"completed {review_id} for org acme" in done.stdout

    for bad in ("rv_nope", "../access/grants"):
        missing = deployment.cli("review", "show", bad, "--profile", "rv-alice", check=False)
        assert missing.returncode == 1, missing.stdout
        assert "error:" in missing.stderr
        assert "Traceback" not in missing.stderr
