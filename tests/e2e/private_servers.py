"""A PostgreSQL and a Redis owned by one test, which it may stop and start again at will.

The fault tests stop the database and Redis under a running cluster. The machine's shared servers
(127.0.0.1:5432 and :6379) serve the rest of the suite and other work, so these tests never touch
them: each starts its own, on a free loopback port, and removes everything on exit, failures
included.

- :class:`PrivateRedis`: ``redis-server`` without persistence; ``stop`` terminates it (its data
  is gone, as after a crash of a Redis without persistence), ``start`` brings it back on the
  same port.
- :class:`PrivatePostgres`: an ``initdb`` cluster in a temporary directory, run as the
  ``postgres`` user when the tests run as root (PostgreSQL refuses to run as root), trust
  authentication, ``fsync`` off (durability against power loss is not what is tested);
  ``stop`` is ``pg_ctl stop -m fast`` (connections are cut), ``start`` brings it back on the
  same port with its data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PG_BIN = Path(os.environ.get("BASTION_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_closed(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _accepts(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"port {port} still accepts connections after {timeout}s")
        time.sleep(0.05)


class PrivateRedis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._log = workdir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        with self._log.open("ab") as out:
            self._process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not _accepts(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = self._log.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        _wait_closed(self.port, 5)


class PrivatePostgres:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._dir = workdir / "pg"
        self._data = self._dir / "data"
        self._log = self._dir / "postgres.log"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *argv: str, timeout: float = 60.0) -> None:
        result = subprocess.run(
            [*self._as_postgres, *argv],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            tail = self._log.read_text(errors="replace")[-2000:] if self._log.exists() else ""
            raise RuntimeError(f"{argv[0]} failed:\n{result.stdout}{result.stderr}{tail}")

    def init(self) -> None:
        self._dir.mkdir(mode=0o700)
        if self._as_postgres:
            shutil.chown(self._dir, "postgres", "postgres")
            shutil.chown(self._dir.parent, "postgres", "postgres")
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self._data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--no-instructions",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self._dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
        }
        with (self._data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())

    @property
    def running(self) -> bool:
        return _accepts(self.port)

    def start(self) -> None:
        self._run(
            str(PG_BIN / "pg_ctl"), "start", "-w", "-t", "30", "-D", str(self._data),
            "-l", str(self._log),
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(PG_BIN / "pg_ctl"), "stop", "-w", "-t", "30", "-m", mode, "-D", str(self._data)
        )
        _wait_closed(self.port, 5)

    def discard(self) -> None:
        """Stop at once if running (``immediate``: nothing of it is kept)."""
        if (self._data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")


@contextlib.contextmanager
def private_servers() -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    """A running private PostgreSQL and Redis; both stopped and their files removed on exit."""
    workdir = Path(tempfile.mkdtemp(prefix="bastion-private-"))
    postgres, redis = PrivatePostgres(workdir), PrivateRedis(workdir)
    try:
        postgres.init()
        postgres.start()
        redis.start()
        yield postgres, redis
    finally:
        redis.stop()
        postgres.discard()
        shutil.rmtree(workdir, ignore_errors=True)
