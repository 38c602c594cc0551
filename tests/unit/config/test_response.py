"""The ``response`` section: webhooks are validated with clear errors that never echo a URL or
a pasted secret."""

from __future__ import annotations

import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError

BASE = """\
version: 1
orgs:
  lab: {kind: internal}
principals:
  alice: {kind: user, org: lab}
response:
  webhooks:
    - name: soc
      url: "https://hooks.example.com/bastion"
      secret_env: SOC_WEBHOOK_SECRET
      format: json
      min_severity: high
      events: [finding]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.problems


def test_a_webhook_parses_with_its_defaults() -> None:
    (hook,) = parse_config(BASE).response.webhooks
    assert (hook.name, hook.format, hook.min_severity, hook.events) == (
        "soc",
        "json",
        "high",
        ("finding",),
    )
    minimal = BASE.replace("      format: json\n      min_severity: high\n", "")
    (hook,) = parse_config(minimal.replace("      events: [finding]\n", "")).response.webhooks
    assert (hook.format, hook.min_severity) == ("json", "medium")
    assert hook.events == ("finding", "response")  # both kinds unless the webhook says otherwise


def test_no_response_section_means_no_webhooks() -> None:
    text = BASE.split("response:")[0]
    assert parse_config(text).response.webhooks == ()


def test_http_is_allowed_on_loopback_only() -> None:
    local = BASE.replace("https://hooks.example.com/bastion", "http://127.0.0.1:9000/hook")
    assert parse_config(local).response.webhooks[0].url == "http://127.0.0.1:9000/hook"
    (problem,) = problems(BASE.replace("https://hooks.example.com", "http://hooks.example.com"))
    assert "response.webhooks[0].url" in problem
    assert "https://" in problem
    assert "loopback" in problem


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ftp://hooks.example.com/x", "must start with https://"),
        ("https://user:hunter2@hooks.example.com/x", "must not contain credentials"),
        ("https:///nohost", "must name a host"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https://hooks.example.com/a b", "without spaces"),
        ("https://hooks.example.com:99999/x", "not a valid URL"),
    ],
)
def test_bad_urls_are_named_without_echoing_them(url: str, expected: str) -> None:
    (problem,) = problems(BASE.replace("https://hooks.example.com/bastion", url))
    assert "response.webhooks[0].url" in problem
    assert expected in problem
    assert "hunter2" not in problem
    assert "hooks.example.com" not in problem


def test_a_pasted_secret_is_refused_and_never_echoed() -> None:
    (problem,) = problems(BASE.replace("SOC_WEBHOOK_SECRET", "whsec_s3cr3t-value"))
    assert "secret_env" in problem
    assert "NAME of an environment variable" in problem
    assert "s3cr3t" not in problem


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("format: json", "format: teams", "format"),
        ("min_severity: high", "min_severity: urgent", "min_severity"),
        ("events: [finding]", "events: [lunch]", "is not an event kind"),
        ("events: [finding]", "events: []", "at least one kind"),
        ("name: soc", "name: SOC!", "is not a name"),
        ("      events: [finding]\n", "      events: [finding]\n      retries: 3\n", "retries"),
    ],
)
def test_each_mistake_is_a_named_error(old: str, new: str, expected: str) -> None:
    found = problems(BASE.replace(old, new))
    assert any(expected in problem and "response.webhooks[0]" in problem for problem in found), (
        found
    )


def test_webhook_names_are_unique() -> None:
    second = '    - {name: soc, url: "https://other.example.com/h", secret_env: OTHER_SECRET}\n'
    (problem,) = problems(BASE + second)
    assert "unique" in problem
    assert "soc" in problem
