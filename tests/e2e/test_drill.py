"""The contractor-breach drill end to end, as ``make demo`` runs it: the example config, the
stand-in model server behind Bastion's guard, ``bastion serve`` trusting loopback as a proxy
(the drill plays the vendor's sites through X-Forwarded-For), and ``bastion drill`` in its own
process. Every step must pass: blocked or contained in under a second, at most three attacker
requests served after the first malicious one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bastion.config import example_config_text

from .conftest import BASTION, ROOT, free_port, stop, wait_ready

pytestmark = pytest.mark.e2e
STEPS = ["T1", "T2", "T3", "T4", "T5", "T6", "T7", "T8", "T9", "T10"]


@pytest.fixture(scope="module")
def drilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], Path]]:
    workdir = tmp_path_factory.mktemp("drill")
    upstream_port, port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    config = example_config_text().replace("127.0.0.1:8081", f"127.0.0.1:{upstream_port}")
    (workdir / "bastion.yaml").write_text(config, encoding="utf-8")
    env = {
        **os.environ,
        "EXAMPLE_UPSTREAM_KEY": "drill-upstream-key-" + "x" * 16,
        "BASTION_TRUSTED_PROXIES": "127.0.0.1/32",
        "PYTHONPATH": str(ROOT),
    }
    upstream_cmd = [
        sys.executable,
        str(ROOT / "examples" / "upstream.py"),
        "--port",
        str(upstream_port),
        "--guard-jwks-url",
        f"{url}/.well-known/jwks.json",
        "--guard-audience",
        f"http://127.0.0.1:{upstream_port}/v1",
        "--guard-audience",
        f"http://127.0.0.1:{upstream_port}",
    ]
    serve_cmd = [*BASTION, "serve", "--host", "127.0.0.1", "--port", str(port)]
    logs = {name: workdir / f"{name}.log" for name in ("upstream", "server")}
    processes = []
    try:
        for name, cmd in (("upstream", upstream_cmd), ("server", serve_cmd)):
            with logs[name].open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
                    )
                )
        wait_ready(f"http://127.0.0.1:{upstream_port}/healthz", processes[0], logs["upstream"])
        wait_ready(url + "/readyz", processes[1], logs["server"])
        drill = subprocess.run(
            [*BASTION, "drill", "contractor-breach", "--url", url, "--json"],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert drill.stdout, drill.stderr + logs["server"].read_text()[-3000:]
        scorecard = json.loads(drill.stdout)
        scorecard["exit_code"] = drill.returncode
        yield scorecard, workdir
    finally:
        for process in reversed(processes):
            stop(process)


def test_every_step_of_the_threat_model_is_run_and_passes(
    drilled: tuple[dict[str, Any], Path],
) -> None:
    scorecard, _ = drilled
    steps = {step["step"]: step for step in scorecard["steps"]}
    assert list(steps) == STEPS
    failed = {name: step for name, step in steps.items() if not step["passed"]}
    assert not failed, json.dumps(failed, indent=1)[:4000]
    assert scorecard["passed"]
    assert scorecard["exit_code"] == 0


def test_each_step_is_blocked_or_contained_fast_with_few_requests_leaked(
    drilled: tuple[dict[str, Any], Path],
) -> None:
    scorecard, _ = drilled
    for step in scorecard["steps"]:
        assert step["blocked"] or step["contained"], step["step"]
        assert step["leaked"] <= 3, step["step"]
        if not step["blocked"]:
            assert step["time_to_contain"] is not None
            assert step["time_to_contain"] < 1.0


def test_the_attacks_that_get_in_are_caught_by_detections_and_playbooks(
    drilled: tuple[dict[str, Any], Path],
) -> None:
    scorecard, _ = drilled
    steps = {step["step"]: step for step in scorecard["steps"]}
    found = {name: {d.split()[0] for d in step["detections"]} for name, step in steps.items()}
    assert "D2" in found["T2"]
    assert "D5" in found["T4"]
    assert "D4" in found["T6"]
    assert "D9" in found["T7"]
    assert any(a.startswith("revoke_family") and a.endswith("done") for a in steps["T2"]["actions"])
    assert any(a.startswith("suspend_principal") for a in steps["T6"]["actions"])
    assert steps["T2"]["incident"].startswith("in_")


def test_the_incidents_can_be_inspected_afterwards(drilled: tuple[dict[str, Any], Path]) -> None:
    scorecard, workdir = drilled
    incident = next(s["incident"] for s in scorecard["steps"] if s["step"] == "T2")
    shown = subprocess.run(
        [*BASTION, "incident", "show", incident],
        cwd=workdir,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert incident in shown.stdout
    assert "revoke_family" in shown.stdout
