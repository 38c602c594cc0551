"""End-to-end fixtures: real processes on loopback — the stand-in upstream under uvicorn and
``bastion serve`` — driven through the ``bastion`` CLI and the official SDKs."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import CONFIG, UPSTREAM_KEY

BASTION = [sys.executable, "-m", "bastion"]
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(
    url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"process exited early ({process.returncode}):\n{out}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class Deployment:
    url: str
    workdir: Path
    env: dict[str, str]
    server: subprocess.Popen[bytes]
    log: Path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*BASTION, *args],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"bastion {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
            )
        return result

    def login(self, principal: str, profile: str) -> None:
        """Enroll a device for ``principal`` the way a user does: admin code, then login."""
        added = self.cli("principal", "code", principal)
        code = added.stdout.strip().splitlines()[1].strip()
        self.cli(
            "login",
            "--server",
            self.url,
            "--principal",
            principal,
            "--code",
            code,
            "--profile",
            profile,
        )


@contextlib.contextmanager
def deployed(
    workdir: Path, config: str, extra_env: dict[str, str] | None = None
) -> Iterator[Deployment]:
    """Write ``config`` (its ``http://upstream.test`` pointed at the stand-in) into ``workdir``,
    start the stand-in upstream and ``bastion serve`` as real processes on loopback, wait until
    both answer, and stop them on exit."""
    upstream_port, port = free_port(), free_port()
    config = config.replace("http://upstream.test", f"http://127.0.0.1:{upstream_port}")
    (workdir / "bastion.yaml").write_text(config, encoding="utf-8")
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "EXAMPLE_UPSTREAM_KEY": UPSTREAM_KEY,
        "BASTION_CLIENT_DIR": str(workdir / "client"),
        "PYTHONPATH": str(ROOT),
        **(extra_env or {}),
    }
    logs = workdir / "logs"
    logs.mkdir()
    upstream_log, server_log = logs / "upstream.log", logs / "server.log"
    with upstream_log.open("wb") as up_out, server_log.open("wb") as server_out:
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
            stdout=up_out,
            stderr=subprocess.STDOUT,
        )
        server = subprocess.Popen(
            [*BASTION, "serve", "--host", "127.0.0.1", "--port", str(port), "--public-url", url],
            cwd=workdir,
            env=env,
            stdout=server_out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(f"http://127.0.0.1:{upstream_port}/healthz", upstream, upstream_log)
        wait_ready(url + "/readyz", server, server_log)
        yield Deployment(url, workdir, env, server, server_log)
    finally:
        stop(server)
        stop(upstream)


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(tmp_path_factory.mktemp("deploy"), CONFIG) as running:
        yield running
