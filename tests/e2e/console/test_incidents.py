"""The Incidents pages in a real browser against a real ``bastion serve``: dave's access token is
replayed from a second network (the same token and device key, another ``X-Forwarded-For``
through the trusted loopback hop), detection D2 fires and the built-in playbook revokes the
token family and opens an incident; an admin opens it, locks dave from its page, and dave's
next SDK call is refused."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from playwright.sync_api import Page, expect

import bastion.client
from bastion.client.profile import load_profile
from bastion.errors import InvalidGrant
from tests.e2e.conftest import Deployment

pytestmark = pytest.mark.e2e

HOME = {"x-forwarded-for": "203.0.113.5"}
ELSEWHERE = {"x-forwarded-for": "198.51.100.7"}
WAIT_SECONDS = 20.0


@pytest.fixture
def dave(console_deployment: Deployment) -> Iterator[Callable[[], openai.OpenAI]]:
    """Fresh official-SDK clients for dave (each logs in anew with his device key)."""
    made: list[openai.OpenAI] = []

    def client() -> openai.OpenAI:
        profile = load_profile("dave", env=console_deployment.env)
        sdk = openai.OpenAI(
            base_url=console_deployment.url + "/v1",
            api_key="unused",
            http_client=bastion.client.http_client(profile, timeout=15),
            max_retries=0,
        )
        made.append(sdk)
        return sdk

    yield client
    for sdk in made:
        sdk.close()


def _chat(sdk: openai.OpenAI, headers: dict[str, str]) -> object:
    return sdk.chat.completions.create(
        model="demo-chat",
        messages=[{"role": "user", "content": "hello from the incidents test"}],
        extra_headers=headers,
    )


def _open_incident_of(page: Page, url: str, principal: str) -> None:
    """Reload the list until the principal's incident is there (detection runs in the
    background), then open it."""
    deadline = time.monotonic() + WAIT_SECONDS
    row = page.locator("tr[data-incident]", has_text=principal)
    while True:
        page.goto(url + "/console/incidents?status=contained")
        if row.count():
            break
        assert time.monotonic() < deadline, "no incident for the token replay"
        page.wait_for_timeout(500)
    row.first.get_by_role("link").click()


def test_lock_the_principal_of_a_token_replay_from_its_incident(
    admin_page: Page,
    console_deployment: Deployment,
    dave: Callable[[], openai.OpenAI],
    shoot: Callable[[Page, str], Path],
) -> None:
    replayed = dave()
    assert "example upstream" in str(_chat(replayed, HOME))  # dave at work
    _chat(replayed, ELSEWHERE)  # the same token and key, from a second network
    page = admin_page
    _open_incident_of(page, console_deployment.url, "dave")
    expect(page.locator("#incident-status")).to_have_text("contained")
    expect(page.locator("#incident-title")).to_contain_text("D2 on family")
    expect(page.locator("#timeline")).to_contain_text("finding.raised D2")
    expect(page.locator("#timeline")).to_contain_text("response.revoke_family")
    expect(page.locator("#actions")).to_contain_text("revoke_family")
    evidence = page.locator("#findings a.evidence-link").first
    expect(evidence).to_have_attribute("href", re.compile(r"^/console/audit/events/ev_"))
    expect(page.locator("#blast-radius")).to_contain_text("demo-chat")
    expect(page.locator("#incident")).to_contain_text("198.51.100.0/24")

    # The playbook revoked the replayed family; a fresh login gives dave a working token.
    fresh = dave()
    assert "example upstream" in str(_chat(fresh, HOME))

    page.select_option("#lock-target", "principal:dave")
    page.fill("#lock-reason", "token replayed from 198.51.100.7; lock until we talk to dave")
    page.get_by_role("button", name="Lock", exact=True).click()
    expect(page.locator(".notice")).to_contain_text("Locked.")
    expect(page.locator("#locks")).to_contain_text("principal dave")
    expect(page.locator("#locks")).to_contain_text("principal:root")
    expect(page.locator("#timeline")).to_contain_text("lock.created by principal:root")

    # dave's next SDK call is refused at once, with the token he already holds ...
    with pytest.raises(openai.PermissionDeniedError) as refused:
        _chat(fresh, HOME)
    assert refused.value.status_code == 403
    assert "locked" in str(refused.value)
    # ... and a new login is refused too
    with pytest.raises(InvalidGrant, match="locked"):
        _chat(dave(), HOME)

    page.reload()
    expect(page.locator("#locks")).to_contain_text("principal dave")
    shoot(page, "console-incident")
    page.goto(console_deployment.url + "/console/incidents")
    expect(page.locator("#incidents")).to_contain_text("dave")
    shoot(page, "console-incidents")
