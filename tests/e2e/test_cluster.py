"""Cluster mode with real processes: ``bastion serve --workers 2`` (two gateway processes on one
port) and ``bastion worker`` on this machine's PostgreSQL (a fresh schema) and Redis (a fresh key
prefix), the stand-in upstream, the ``bastion`` CLI and the official OpenAI SDK as the client.

What a deployer relies on: ``cluster status`` shows every process with its kind; the gateways
serve but do not detect (with no worker running, traffic raises no finding); the worker raises
the finding from traffic the gateways served; and a worker killed outright (SIGKILL, no state
saved) resumes when restarted without raising the same finding twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

import bastion.client
from bastion.cluster import cluster_status
from bastion.detect.findings import Finding
from bastion.store import Store
from bastion.store import findings as finding_rows
from tests.conftest import CONFIG, UPSTREAM_KEY, _postgres_schema_url

from .conftest import BASTION, ROOT, Deployment, free_port, stop, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

SECRET_MODELS = "".join(
    f"  - name: secret-{n}\n    upstream: example-openai\n    compartment: frontier\n"
    for n in range(3)
)


@dataclass
class Cluster:
    deployment: Deployment
    database_url: str
    worker_port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    worker: subprocess.Popen[bytes] | None = None

    def start(self, *args: str, log: str) -> subprocess.Popen[bytes]:
        d = self.deployment
        with (d.workdir / "logs" / log).open("ab") as out:
            process = subprocess.Popen(
                [*BASTION, *args],
                cwd=d.workdir,
                env=d.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # serve --workers forks: stop the whole group after
            )
        self.processes.append(process)
        return process

    def start_worker(self) -> subprocess.Popen[bytes]:
        self.worker = self.start("worker", "--port", str(self.worker_port), log="worker.log")
        url = f"http://127.0.0.1:{self.worker_port}/readyz"
        wait_ready(url, self.worker, self.deployment.workdir / "logs" / "worker.log")
        return self.worker

    def status(self) -> dict[str, Any]:
        """What ``bastion cluster status --json`` prints."""
        out = self.deployment.cli("cluster", "status", "--json").stdout
        result: dict[str, Any] = json.loads(out)
        return result

    def kinds(self, *, live: bool = True) -> list[str]:
        """The process kinds in the status report (read in-process: polled often)."""
        store = Store(self.database_url)
        try:
            report = cluster_status(store, time.time())
        finally:
            store.close()
        return sorted(p.row["kind"] for p in report.processes if not (live and p.stale))

    def d5(self) -> list[Finding]:
        store = Store(self.database_url)
        try:
            with store.read() as conn:
                return finding_rows.query(conn, detection="D5")
        finally:
            store.close()

    def raised_events(self) -> int:
        store = Store(self.database_url)
        try:
            with store.read() as conn:
                query = sa.text("SELECT count(*) FROM audit_events WHERE name = 'finding.raised'")
                return int(conn.execute(query).scalar_one())
        finally:
            store.close()


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {what}")
        time.sleep(0.2)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    stop(process)
    # uvicorn's worker processes, if their parent was killed before it could stop them
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    database = _postgres_schema_url()
    database_url = next(database)
    upstream_port, port, worker_port = free_port(), free_port(), free_port()
    config = CONFIG.replace("http://upstream.test", f"http://127.0.0.1:{upstream_port}")
    (tmp_path / "bastion.yaml").write_text(
        config.replace("models:\n", "models:\n" + SECRET_MODELS, 1), encoding="utf-8"
    )
    env = {
        **os.environ,
        "EXAMPLE_UPSTREAM_KEY": UPSTREAM_KEY,
        "BASTION_CLIENT_DIR": str(tmp_path / "client"),
        "BASTION_DATABASE_URL": database_url,
        "BASTION_REDIS_URL": "redis://127.0.0.1:6379/15",
        "BASTION_REDIS_PREFIX": "t-" + secrets.token_hex(6),  # this test's keys only
        "PYTHONPATH": str(ROOT),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    with (logs / "upstream.log").open("wb") as out:
        upstream = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "upstream.py"), "--port", str(upstream_port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deployment = Deployment(f"http://127.0.0.1:{port}", tmp_path, env, upstream, logs / "serve.log")
    stack = Cluster(deployment, database_url, worker_port, [upstream])
    try:
        wait_ready(f"http://127.0.0.1:{upstream_port}/healthz", upstream, logs / "upstream.log")
        gateways = stack.start("serve", "--port", str(port), "--workers", "2", log="serve.log")
        deployment.server = gateways
        wait_ready(deployment.url + "/readyz", gateways, deployment.log)
        yield stack
    finally:
        for process in reversed(stack.processes):
            _stop_group(process)
        for _ in database:  # drops the schema
            pass


def chat(d: Deployment, model: str) -> int:
    client = openai.OpenAI(
        base_url=d.url + "/v1",
        api_key="unused",
        http_client=bastion.client.http_client(profile="cluster-alice"),
        max_retries=0,
    )
    try:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    except openai.APIStatusError as error:
        return error.status_code
    finally:
        client.close()
    return 200


def test_gateways_serve_the_worker_detects_and_a_killed_worker_resumes_once(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = cluster.deployment
    monkeypatch.setenv("BASTION_CLIENT_DIR", d.env["BASTION_CLIENT_DIR"])
    eventually(lambda: cluster.kinds() == ["gateway", "gateway"], 20, "two gateways")

    # The gateways serve, but run no detection: enumeration goes unnoticed without a worker.
    d.login("alice", profile="cluster-alice")
    assert chat(d, "demo-chat") == 200
    assert [chat(d, f"secret-{n}") for n in range(3)] == [403, 403, 403]
    time.sleep(1.0)  # ten times the engine's poll: long enough for a gateway that did detect
    assert cluster.d5() == []

    # The worker picks up the traffic the gateways recorded and raises the finding once.
    cluster.start_worker()
    eventually(lambda: len(cluster.d5()) == 1, 15, "D5 raised by the worker")
    worker_url = f"http://127.0.0.1:{cluster.worker_port}"
    for path in ("/v1/models", "/admin/locks", "/oauth/token"):  # health only, never a way in
        assert httpx.get(worker_url + path, timeout=5).status_code == 404
    (found,) = cluster.d5()
    assert found.principal == "alice"
    raised = cluster.raised_events()
    assert raised >= 1
    status = cluster.status()  # the operator's view: both gateways and the worker, all fresh
    assert sorted(p["kind"] for p in status["processes"]) == ["gateway", "gateway", "worker"]
    assert not any(p["stale"] for p in status["processes"])
    listed = d.cli("findings", "list", "--json", "--detection", "D5").stdout.splitlines()
    assert [json.loads(line)["id"] for line in listed] == [found.id]

    # Killed outright, its engine state unsaved: restarted, it re-reads the log and merges.
    worker = cluster.worker
    assert worker is not None
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    cluster.start_worker()
    eventually(
        lambda: cluster.kinds(live=False).count("worker") == 2,
        10,
        "the restarted worker heartbeats next to the killed one's last row",
    )
    time.sleep(1.5)  # the restarted engine has caught up with the whole log by now
    assert [f.id for f in cluster.d5()] == [found.id]
    assert cluster.raised_events() == raised
