"""Operator Sigma rules on a real gateway: the shipped example correlation fires on refused
requests from a vendor principal made with the official SDK, stays quiet for internal staff, and
a bad rule is reported by ``bastion config check`` and stops startup, like a bad config."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import openai
import pytest

from bastion.errors import ConfigError
from bastion.testing import BASE_URL, Harness, running
from tests.conftest import CONFIG
from tests.integration.conftest import Cli

pytestmark = pytest.mark.anyio
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sigma" / "vendor_forbidden_burst.yml"
WITH_RULES = CONFIG + "detection:\n  rules: [rules]\n"


async def refused(harness: Harness, principal: str, model: str, times: int) -> None:
    profile = harness.profiles.get(principal) or await harness.enroll(principal)
    http = harness.sdk_client(profile)
    sdk = openai.AsyncOpenAI(
        base_url=BASE_URL + "/v1", api_key="unused", http_client=http, max_retries=0
    )
    async with http:
        for _ in range(times):
            with pytest.raises(openai.PermissionDeniedError):
                await sdk.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}]
                )


@pytest.fixture
async def with_example(
    tmp_path: Path,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Harness]:
    (tmp_path / "rules").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "rules")
    async with running(
        WITH_RULES,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
    ) as harness:
        yield harness


async def test_the_example_correlation_fires_on_refusals_by_a_vendor_principal(
    with_example: Harness,
) -> None:
    detection = with_example.services.detection
    await refused(with_example, "victor", "demo-chat", 19)  # victor: vendor acme, no grant
    await detection.catch_up()
    assert detection.findings(detection="S:vendor_forbidden_burst") == []
    await refused(with_example, "victor", "demo-chat", 1)
    await detection.catch_up()
    (finding,) = detection.findings(detection="S:vendor_forbidden_burst")
    assert (finding.entity_type, finding.entity, finding.principal, finding.org) == (
        "principal",
        "victor",
        "victor",
        "acme",
    )
    assert str(finding.severity) == "high"
    assert finding.techniques == ("T1078", "T1526", "AML.T0014")
    assert len(finding.evidence) == 5
    assert "at least 20 matching events for principal victor within 10m" in finding.explanation
    assert detection.findings(detection="S:vendor_forbidden") == []  # generate: false


async def test_the_example_stays_quiet_for_internal_staff(with_example: Harness) -> None:
    await refused(with_example, "bob", "cyber-frontier", 21)  # bob: internal, not granted
    await with_example.services.detection.catch_up()
    assert with_example.services.detection.findings(detection="S:vendor_forbidden_burst") == []


async def test_a_bad_rule_stops_startup(tmp_path: Path, upstream_env: dict[str, str]) -> None:
    (tmp_path / "rules").mkdir()
    text = EXAMPLE.read_text(encoding="utf-8").replace("org_kind: vendor", "org_knd: vendor")
    (tmp_path / "rules" / "bad.yml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        async with running(WITH_RULES, tmp_path, env=upstream_env):
            pass
    (problem,) = caught.value.problems
    assert "rule 'Vendor request refused': unknown field 'org_knd'" in problem
    assert not (tmp_path / ".bastion").exists()  # refused before anything was written


def test_config_check_counts_sigma_rules(cli: Cli) -> None:
    (cli.root / "bastion.yaml").write_text(WITH_RULES, encoding="utf-8")
    (cli.root / "rules").mkdir()
    shutil.copy(EXAMPLE, cli.root / "rules")
    result = cli("config", "check")
    assert result.code == 0
    assert "Sigma rules: ok — 1 detection rules, 1 correlations" in result.out.splitlines()


def test_config_check_reports_a_bad_rule_with_file_and_line(cli: Cli) -> None:
    (cli.root / "bastion.yaml").write_text(WITH_RULES, encoding="utf-8")
    (cli.root / "rules").mkdir()
    text = EXAMPLE.read_text(encoding="utf-8").replace("timespan: 10m", "timespan: 10 minutes")
    (cli.root / "rules" / "burst.yml").write_text(text, encoding="utf-8")
    result = cli("config", "check")
    assert result.code == 1
    assert result.out == ""
    line = text[: text.index("title: Burst")].count("\n") + 1
    assert result.err.splitlines() == [
        "error: invalid configuration (rules/burst.yml)",
        f"  rules/burst.yml:{line}: rule 'Burst of refused requests from one vendor "
        "principal': Timespan '10 minutes' is invalid.",
    ]
