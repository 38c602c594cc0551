"""The Audit page in a real browser against a real ``bastion serve``: find an SDK call's event
with the search form, download its inclusion receipt, and check it offline with the installed
``bastion-verify`` and the log's verifier key from the deployment's state directory."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import Deployment

from .conftest import SdkCall

pytestmark = pytest.mark.e2e

VERIFY = Path(sys.executable).parent / "bastion-verify"


def test_find_an_sdk_call_download_its_receipt_and_verify_it(
    page: Page,
    console_deployment: Deployment,
    sdk_call: SdkCall,
    shoot: Callable[[Page, str], Path],
    tmp_path: Path,
) -> None:
    started = datetime.fromtimestamp(int(time.time()), UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert "example upstream" in str(sdk_call("alice", "demo-chat"))
    page.get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", name="Audit", exact=True)).to_be_visible()
    expect(page.locator("#integrity [data-state]")).to_have_attribute("data-state", "ok")
    form = page.locator("#audit-search")
    form.get_by_label("Principal").fill("alice")
    form.get_by_label("Model").fill("demo-chat")
    form.get_by_label("Event").fill("request.decided")
    form.get_by_label("From (UTC)").fill(started)
    form.get_by_role("button", name="Search").click()
    expect(page).to_have_url(re.compile(r"/console/audit\?principal=alice&model=demo-chat"))
    row = page.locator("#events tbody tr[data-event]").first
    expect(row).to_contain_text("request.decided")
    expect(row).to_contain_text("alice")
    expect(row).to_contain_text("allowed")
    event_id = row.get_attribute("data-event")
    assert event_id is not None
    expect(page.locator("#checkpoint [data-field=size]")).not_to_have_text("")
    shoot(page, "console-audit")

    row.get_by_role("link", name="request.decided").click()
    expect(page).to_have_url(re.compile(rf"/console/audit/events/{event_id}$"))
    expect(page.locator("#recorded")).to_contain_text(f'"id": "{event_id}"')
    for _ in range(20):  # the server signs a checkpoint every second here
        if page.locator("#receipt").count():
            break
        page.wait_for_timeout(500)
        page.reload()
    with page.expect_download() as info:
        page.locator("#receipt").click()
    download = info.value
    assert download.suggested_filename == f"bastion-receipt-{event_id}.json"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)

    key = (console_deployment.workdir / ".bastion" / "audit-log.pub").read_text().strip()
    page.goto(console_deployment.url + "/console/audit")
    expect(page.locator("#verifier-key")).to_have_text(key)  # the page shows the same key
    checked = subprocess.run(
        [str(VERIFY), "receipt", "--key", key, str(saved)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert re.match(r"VERIFIED: entry \d+ is in \S+/bastion-audit-[0-9a-f]{8} at", checked.stdout)
    # the same file with one byte of the event changed does not verify
    saved.write_text(saved.read_text().replace("alice", "alicf", 1))
    forged = subprocess.run(
        [str(VERIFY), "receipt", "--key", key, str(saved)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert forged.returncode == 1, forged.stdout + forged.stderr
    assert "NOT VERIFIED" in forged.stdout
