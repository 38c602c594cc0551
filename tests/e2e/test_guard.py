"""``bastion guard`` as operators run it: a real process between ``bastion serve`` and the
stand-in model server, keys fetched from Bastion's JWKS over loopback. SDK calls (plain and
streaming) go through both; a direct call to the guard is refused; the health probe is open."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest

import bastion.client
from tests.conftest import CONFIG, UPSTREAM_KEY

from .conftest import BASTION, ROOT, Deployment, free_port, stop, wait_ready

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Deployment, str]]:
    """The stand-in model server, ``bastion guard`` in front of it, and Bastion pointed at the
    guard. Yields the deployment and the guard's URL."""
    workdir = tmp_path_factory.mktemp("guarded")
    model_port, guard_port, port = free_port(), free_port(), free_port()
    guard_url, url = f"http://127.0.0.1:{guard_port}", f"http://127.0.0.1:{port}"
    config = CONFIG.replace("http://upstream.test", guard_url)
    (workdir / "bastion.yaml").write_text(config, encoding="utf-8")
    env = {
        **os.environ,
        "EXAMPLE_UPSTREAM_KEY": UPSTREAM_KEY,
        "BASTION_CLIENT_DIR": str(workdir / "client"),
        "PYTHONPATH": str(ROOT),
    }
    model_cmd = [sys.executable, str(ROOT / "examples" / "upstream.py"), "--port", str(model_port)]
    guard_cmd = [
        *BASTION,
        "guard",
        "--upstream",
        f"http://127.0.0.1:{model_port}",
        "--listen",
        f"127.0.0.1:{guard_port}",
        "--jwks-url",
        f"{url}/.well-known/jwks.json",
        "--audience",
        f"{guard_url}/v1",
        "--audience",
        guard_url,
        "--open-path",
        "/healthz",
        "--log-level",
        "warning",
    ]
    serve_cmd = [*BASTION, "serve", "--host", "127.0.0.1", "--port", str(port)]
    logs = {name: workdir / f"{name}.log" for name in ("model", "guard", "server")}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, cmd in (("model", model_cmd), ("guard", guard_cmd), ("server", serve_cmd)):
            with logs[name].open("wb") as out:
                processes.append(
                    subprocess.Popen(cmd, cwd=workdir, env=env, stdout=out, stderr=out)
                )
        model, guard, server = processes
        wait_ready(f"http://127.0.0.1:{model_port}/healthz", model, logs["model"])
        wait_ready(f"{guard_url}/healthz", guard, logs["guard"])  # the open path reaches it
        wait_ready(f"{url}/readyz", server, logs["server"])
        deployment = Deployment(url, workdir, env, server, logs["server"])
        deployment.login("alice", profile="guard-alice")
        yield deployment, guard_url
    finally:
        for process in reversed(processes):
            stop(process)


def test_sdk_calls_pass_through_bastion_and_the_guard(
    guarded: tuple[Deployment, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment, _ = guarded
    monkeypatch.setenv("BASTION_CLIENT_DIR", deployment.env["BASTION_CLIENT_DIR"])
    with openai.OpenAI(
        base_url=deployment.url + "/v1",
        api_key="unused",
        http_client=bastion.client.http_client(profile="guard-alice"),
        max_retries=0,
    ) as client:
        reply = client.chat.completions.create(
            model="demo-chat", messages=[{"role": "user", "content": "via the guard"}]
        )
        assert "via the guard" in (reply.choices[0].message.content or "")
        stream = client.chat.completions.create(
            model="demo-chat",
            messages=[{"role": "user", "content": "streamed via the guard"}],
            stream=True,
        )
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 3
    assert "streamed via the guard" in "".join(pieces)


def test_a_direct_call_to_the_guard_is_refused(guarded: tuple[Deployment, str]) -> None:
    _, guard_url = guarded
    response = httpx.post(
        f"{guard_url}/v1/chat/completions",
        json={"model": "example-gpt", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {UPSTREAM_KEY}"},
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_assertion"
    log = (guarded[0].workdir / "guard.log").read_text()
    assert "missing_assertion" in log
    assert UPSTREAM_KEY not in log
