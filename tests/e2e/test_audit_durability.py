"""An ``audit: required`` compartment loses no acknowledged event when the gateway is killed.

Real processes: the stand-in upstream and ``bastion serve`` (SQLite in its state directory).
A few client threads call a model of an ``audit: required`` compartment as fast as they can and
note the ``x-bastion-event`` id (the ``request.decided`` event) of every response they received
whole. Mid-load the server gets SIGKILL — no shutdown hook, no final flush. Every noted id must
then be in the database, and a server restarted on the same state directory must serve, and
``bastion audit verify`` must find the log intact.
"""

from __future__ import annotations

import collections
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

import bastion.client
from bastion.client import load_profile
from tests.conftest import UPSTREAM_KEY

from .conftest import BASTION, ROOT, Deployment, free_port, stop, wait_ready

pytestmark = pytest.mark.e2e

CONFIG = """\
version: 1
upstreams:
  example-openai:
    base_url: http://127.0.0.1:{upstream_port}/v1
    api: openai
    api_key_env: EXAMPLE_UPSTREAM_KEY
models:
  - name: vault-chat
    upstream: example-openai
    upstream_model: example-gpt
    compartment: vault
compartments:
  vault:
    level: restricted
    audit: required
    grants:
      orgs: [lab]
orgs:
  lab: {{kind: internal}}
principals:
  alice: {{kind: user, org: lab}}
"""
PROFILE = "durability-alice"
CLIENTS = 4
LOAD_SECONDS = 2.5


@dataclass
class Stack:
    """The upstream and one ``bastion serve`` at a time, on fixed ports, in one directory."""

    deployment: Deployment
    port: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_server(self) -> subprocess.Popen[bytes]:
        d = self.deployment
        with d.log.open("ab") as out:
            server = subprocess.Popen(
                [*BASTION, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=d.workdir,
                env=d.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(server)
        d.server = server
        wait_ready(d.url + "/readyz", server, d.log)
        return server

    @property
    def database(self) -> Path:
        return self.deployment.workdir / ".bastion" / "bastion.db"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    upstream_port, port = free_port(), free_port()
    (tmp_path / "bastion.yaml").write_text(
        CONFIG.format(upstream_port=upstream_port), encoding="utf-8"
    )
    env = {
        **os.environ,
        "EXAMPLE_UPSTREAM_KEY": UPSTREAM_KEY,
        "BASTION_CLIENT_DIR": str(tmp_path / "client"),
        "BASTION_CHECKPOINT_SECONDS": "1",  # checkpoints get signed while the load runs
        "PYTHONPATH": str(ROOT),
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    upstream_log = logs / "upstream.log"
    processes: list[subprocess.Popen[bytes]] = []
    with upstream_log.open("wb") as out:
        upstream = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "examples" / "upstream.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(upstream_port),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    processes.append(upstream)
    # the Deployment's server is replaced by each start_server(); this placeholder is the upstream
    deployment = Deployment(
        f"http://127.0.0.1:{port}", tmp_path, env, upstream, logs / "server.log"
    )
    stack = Stack(deployment, port)
    try:
        wait_ready(f"http://127.0.0.1:{upstream_port}/healthz", upstream, upstream_log)
        stack.start_server()
        yield stack
    finally:
        for process in [*stack.processes, *processes]:
            stop(process)


@dataclass
class Load:
    """What the client threads saw: the event id of each response received whole, the rest."""

    acknowledged: list[str] = field(default_factory=list)
    before_kill: collections.Counter[str] = field(default_factory=collections.Counter)
    after_kill: collections.Counter[str] = field(default_factory=collections.Counter)
    killed: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, outcome: str, event_id: str | None = None) -> None:
        with self.lock:
            (self.after_kill if self.killed.is_set() else self.before_kill)[outcome] += 1
            if event_id is not None:
                self.acknowledged.append(event_id)


def call(client: httpx.Client, n: int) -> httpx.Response:
    return client.post(
        "/v1/chat/completions",
        json={"model": "vault-chat", "messages": [{"role": "user", "content": f"call {n}"}]},
    )


def hammer(client: httpx.Client, load: Load, worker: int) -> None:
    """Call until the server is gone; note every response whose body arrived complete."""
    n = 0
    while True:
        n += 1
        try:
            response = call(client, worker * 1_000_000 + n)  # reads the whole body, or raises
        except httpx.HTTPError as exc:
            load.note(type(exc).__name__)
            if load.killed.is_set():
                return
            continue
        except Exception as exc:
            load.note(f"unexpected {type(exc).__name__}: {exc}")
            return
        if response.status_code == 200 and "You said: call" in response.text:
            load.note("200", response.headers["x-bastion-event"])
        else:
            load.note(f"{response.status_code} {response.text[:200]}")


def decided_events(database: Path) -> dict[str, dict[str, object]]:
    """The ``request.decided`` events in the database, read without the server's help."""
    with sqlite3.connect(database) as conn:
        rows = conn.execute(
            "SELECT id, body FROM audit_events WHERE name = 'request.decided'"
        ).fetchall()
    conn.close()
    return {event_id: orjson.loads(body) for event_id, body in rows}


def test_sigkill_mid_load_loses_no_acknowledged_event(stack: Stack) -> None:
    d = stack.deployment
    d.login("alice", profile=PROFILE)
    profile = load_profile(PROFILE, env=d.env)
    load = Load()
    with bastion.client.httpx_client(profile, timeout=10.0) as client:
        assert call(client, 0).status_code == 200  # token obtained before the clock starts
        threads = [
            threading.Thread(target=hammer, args=(client, load, worker), daemon=True)
            for worker in range(1, CLIENTS + 1)
        ]
        for thread in threads:
            thread.start()
        time.sleep(LOAD_SECONDS)
        deadline = time.monotonic() + 30  # a slow machine: load on until enough was answered
        while len(load.acknowledged) <= 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        load.killed.set()  # set first: a reply completing from here on counts as after the kill
        assert d.server.poll() is None, "the server died before the kill"
        os.kill(d.server.pid, signal.SIGKILL)
        d.server.wait(10)
        for thread in threads:
            thread.join(15)
        assert not any(thread.is_alive() for thread in threads)

    assert d.server.returncode == -signal.SIGKILL
    acknowledged = list(load.acknowledged)
    assert len(acknowledged) > 20, (load.before_kill, load.after_kill)
    assert set(load.before_kill) == {"200"}, f"calls failed before the kill: {load.before_kill}"
    assert not [o for o in load.after_kill if o.startswith("unexpected")], load.after_kill

    stored = decided_events(stack.database)
    missing = [event_id for event_id in acknowledged if event_id not in stored]
    assert not missing, (
        f"{len(missing)} of {len(acknowledged)} acknowledged request.decided events are not "
        f"in the database after SIGKILL: {missing[:10]}"
    )
    for event_id in acknowledged:
        event = stored[event_id]
        assert (event["compartment"], event["status"], event["outcome"]) == (
            "vault",
            200,
            "completed",
        ), event

    stack.start_server()  # same state directory, same port: the profile's URL still holds
    with bastion.client.httpx_client(profile, timeout=10.0) as client:
        after = call(client, 1)
    assert after.status_code == 200, after.text
    assert after.headers["x-bastion-event"] in decided_events(stack.database)

    verify = d.cli("audit", "verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "audit log OK" in verify.stdout
    assert "Traceback" not in d.log.read_text(errors="replace")
