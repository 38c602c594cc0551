"""Integration fixtures: Bastion and its CLI in-process, on a real store.

Bastion runs with the stand-in upstream behind it; the CLI runs through ``main()`` in a fresh
directory.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
import pytest
from examples.upstream import create_app as create_upstream

from bastion.audit import keys as audit_keys
from bastion.audit.commitment import Committer
from bastion.audit.log import AuditLog
from bastion.cli.main import main
from bastion.store import Store
from bastion.testing import Harness, running
from tests.conftest import CONFIG, UPSTREAM_KEY


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def upstream_transport() -> httpx2.ASGITransport:
    return httpx2.ASGITransport(app=create_upstream(api_key=UPSTREAM_KEY))


@pytest.fixture
async def harness(
    tmp_path: Path,
    config_text: str,
    upstream_env: dict[str, str],
    upstream_transport: httpx2.ASGITransport,
    database_url: str,
) -> AsyncIterator[Harness]:
    """Bastion in-process; every test using it runs on SQLite and on PostgreSQL."""
    async with running(
        config_text,
        tmp_path,
        upstream=upstream_transport,
        env=upstream_env,
        database_url=database_url,
    ) as running_harness:
        yield running_harness


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


class Cli:
    """``bastion ARGS`` run in-process through ``main()`` (which renders errors), in ``root``."""

    def __init__(
        self, root: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.root = root
        self._capsys = capsys
        self._monkeypatch = monkeypatch
        self._store: Store | None = None

    def __call__(self, *args: str) -> CliResult:
        self._capsys.readouterr()
        self._monkeypatch.setattr(sys, "argv", ["bastion", *args])
        code: int | str | None = 0
        loggers = [logging.getLogger(name) for name in ("bastion", "uvicorn")]
        saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
        try:
            main()
        except SystemExit as exit_:
            code = exit_.code
        finally:  # serve/worker/guard configure logging: leave the next test's untouched
            for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
                logger.handlers[:] = handlers
                logger.setLevel(level)
                logger.propagate = propagate
        out, err = self._capsys.readouterr()
        assert "Traceback" not in out + err
        assert isinstance(code, int)
        return CliResult(code, out, err)

    @property
    def store(self) -> Store:
        """The store the commands wrote (opened on first use: opening creates the file)."""
        if self._store is None:
            self._store = Store(f"sqlite:///{self.root / '.bastion' / 'bastion.db'}")
        return self._store

    @property
    def audit(self) -> AuditLog:
        """The audit log the commands append to (its keys from the state directory)."""
        keys = audit_keys.load_or_create(self.root / ".bastion")
        return AuditLog(Committer(keys.salt), keys.signer, keys.origin)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


@pytest.fixture
def cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Cli]:
    """The CLI in an empty directory, with no ``BASTION_*`` variables and an 80-column pipe."""
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("BASTION_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("EXAMPLE_UPSTREAM_KEY", raising=False)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("BASTION_CLIENT_DIR", str(tmp_path / "client"))
    runner = Cli(tmp_path, capsys, monkeypatch)
    yield runner
    runner.close()


@pytest.fixture
def admin_cli(cli: Cli) -> Cli:
    """The CLI after ``bastion init`` beside the test config (alice, bob, carol, victor)."""
    (cli.root / "bastion.yaml").write_text(CONFIG, encoding="utf-8")
    assert cli("init").code == 0
    return cli


class People:
    """One authenticated client per principal, enrolled on first use."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.clients: dict[str, httpx.AsyncClient] = {}

    async def __call__(self, who: str) -> httpx.AsyncClient:
        if who not in self.clients:
            self.clients[who] = self.harness.client(await self.harness.enroll(who))
        return self.clients[who]

    async def close(self) -> None:
        for client in self.clients.values():
            await client.aclose()
