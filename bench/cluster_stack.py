"""A Bastion cluster on one machine, for the cluster benchmark and the cluster acceptance tests.

``cluster_stack`` starts the stand-in upstream, N ``bastion serve`` gateway processes (each on its
own port, as N hosts behind a load balancer would be) and one ``bastion worker``, all on a fresh
PostgreSQL schema and a fresh Redis key prefix, sharing one state directory (the issuer and log
keys a real cluster distributes to every host) and one public URL: clients sign their DPoP proofs
for the public URL and may send them to any gateway, exactly as behind a load balancer.

Everything is stopped and the schema dropped on exit, Ctrl-C included. Gateways and the worker
can be killed (SIGKILL) and restarted while the stack runs, to test faults.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from bastion.audit import keys as audit_keys
from bastion.audit.commitment import Committer
from bastion.audit.log import AuditLog
from bastion.config import load_config
from bastion.identity.assertions import ASSERTION_TYPE, make_client_assertion
from bastion.identity.dpop import DPoPSigner
from bastion.identity.keys import generate_private_jwk, public_jwk
from bastion.identity.principals import PrincipalService
from bastion.settings import Settings
from bastion.store import Store
from bench.run import ServerProcess, Upstream, free_port, start_server, start_upstream

POSTGRES_URL = os.environ.get(
    "BASTION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("BASTION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
PUBLIC_URL = "http://bastion.cluster.test"  # what a load balancer in front would be called
CHAT_PATH = "/v1/chat/completions"

CONFIG = """\
version: 1
upstreams:
  stand-in:
    base_url: {upstream}/v1
    api: openai
    api_key_env: EXAMPLE_UPSTREAM_KEY
    forward_headers: [x-example-chunk-delay, x-example-chunks]
models:
  - {{name: chat, upstream: stand-in, upstream_model: example-gpt, compartment: general}}
  - {{name: strict-chat, upstream: stand-in, upstream_model: example-gpt, compartment: strict}}
  - {{name: metered-chat, upstream: stand-in, upstream_model: example-gpt, compartment: metered}}
  - {{name: ledger-chat, upstream: stand-in, upstream_model: example-gpt, compartment: ledger}}
compartments:
  general:
    level: internal
    audit: best-effort
    grants: {{orgs: [lab]}}
  strict:
    level: internal
    audit: best-effort
    grants: {{orgs: [lab]}}
    lock_view: {{strict: true, max_age_seconds: 2}}
  metered:
    level: internal
    audit: best-effort
    grants: {{orgs: [lab]}}
    quotas:
      principal: {{requests_per_minute: {quota}}}
  ledger:
    level: restricted
    audit: required
    grants: {{orgs: [lab]}}
orgs:
  lab: {{kind: internal}}
principals:
  ops: {{kind: service, org: lab, roles: [admin]}}
{principals}"""


@dataclass
class Caller:
    """A service principal with its device key and a DPoP-bound access token."""

    principal: str
    private: dict[str, Any]
    token: str = ""

    def headers(self, method: str = "POST", path: str = CHAT_PATH) -> dict[str, str]:
        """Authorization and a fresh proof, for ``path`` at the public URL (any gateway)."""
        proof = DPoPSigner(self.private).proof(
            method=method, url=PUBLIC_URL + path, access_token=self.token
        )
        return {"authorization": f"DPoP {self.token}", "dpop": proof}


@dataclass
class Stack:
    workdir: Path
    database_url: str
    prefix: str
    upstream: Upstream
    env: dict[str, str]
    gateways: list[ServerProcess | None] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    worker: ServerProcess | None = None
    worker_url: str = ""
    callers: dict[str, Caller] = field(default_factory=dict)

    # -- processes -------------------------------------------------------------------------------

    def start_gateway(self, index: int | None = None) -> int:
        """Start a gateway (a new one, or again at ``index`` on its old port); its index."""
        if index is None:
            self.gateways.append(None)
            self.urls.append(f"http://127.0.0.1:{free_port()}")
            index = len(self.gateways) - 1
        port = self.urls[index].rsplit(":", 1)[1]
        self.gateways[index] = start_server(
            f"gateway {index}",
            [*_BASTION, "serve", "--port", port, "--log-level", "warning"],
            health_url=self.urls[index] + "/readyz",
            env=self.env,
            cwd=self.workdir,
        )
        return index

    def kill_gateway(self, index: int) -> None:
        """SIGKILL: no shutdown, no flush — a crashed host."""
        process = self.gateways[index]
        if process is not None:
            process.kill()
            self.gateways[index] = None

    def start_worker(self) -> None:
        self.worker_url = self.worker_url or f"http://127.0.0.1:{free_port()}"
        self.worker = start_server(
            "worker",
            [*_BASTION, "worker", "--port", self.worker_url.rsplit(":", 1)[1]],
            health_url=self.worker_url + "/readyz",
            env=self.env,
            cwd=self.workdir,
        )

    def kill_worker(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [*_BASTION, *args],
            cwd=self.workdir,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"bastion {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    # -- callers ---------------------------------------------------------------------------------

    def caller(self, principal: str) -> Caller:
        """``principal``'s caller: its key enrolled (once, through the CLI) and a token issued
        by the first live gateway."""
        if principal in self.callers:
            return self.callers[principal]
        private = generate_private_jwk()
        key_file = self.workdir / f"{principal}.pub.json"
        key_file.write_bytes(orjson.dumps(public_jwk(private)))
        self.cli("key", "enroll", principal, str(key_file))
        caller = Caller(principal, private)
        caller.token = self.token(caller)
        self.callers[principal] = caller
        return caller

    def callers_for(self, principals: Sequence[str]) -> list[Caller]:
        """Several callers at once, faster than :meth:`caller` one by one: their keys enrolled
        from this process in one go (as ``bastion key enroll`` does, audited as ``bench``), then
        a token each."""
        new = [p for p in dict.fromkeys(principals) if p not in self.callers]
        if new:
            settings = Settings.from_env(self.env)
            keys = audit_keys.load_or_create(settings.state_dir)
            hashed = load_config(settings.config_file).audit.hash_source_addresses
            audit = AuditLog(Committer(keys.salt, hash_addresses=hashed), keys.signer, keys.origin)
            store = Store(settings.resolved_database_url)
            try:
                service = PrincipalService(store, audit)
                for principal in new:
                    private = generate_private_jwk()
                    service.enroll(principal, public_jwk(private), author="bench")
                    self.callers[principal] = Caller(principal, private)
            finally:
                store.close()
            for principal in new:
                self.callers[principal].token = self.token(self.callers[principal])
        return [self.callers[p] for p in principals]

    def token(self, caller: Caller) -> str:
        endpoint = "/oauth/token"
        url = next(u for u, g in zip(self.urls, self.gateways, strict=True) if g is not None)
        response: httpx.Response | None = None
        for _ in range(100):  # the gateway applies the enrolled key within its poll
            response = httpx.post(
                url + endpoint,
                data={
                    "grant_type": "client_credentials",
                    "client_assertion_type": ASSERTION_TYPE,
                    "client_assertion": make_client_assertion(
                        caller.private, client_id=caller.principal, audience=PUBLIC_URL + endpoint
                    ),
                },
                headers={
                    "DPoP": DPoPSigner(caller.private).proof(
                        method="POST", url=PUBLIC_URL + endpoint
                    )
                },
            )
            if response.status_code == 200:
                return str(response.json()["access_token"])
            time.sleep(0.1)
        raise RuntimeError(f"no token for {caller.principal}: {response and response.text}")

    def close(self) -> None:
        for process in [*self.gateways, self.worker]:
            if process is not None:
                process.stop()


_BASTION = [sys.executable, "-m", "bastion"]


@contextlib.contextmanager
def _schema(database_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for this stack, dropped on exit."""
    schema = "bench_" + secrets.token_hex(6)
    admin = sa.create_engine(database_url, pool_pre_ping=True)  # the server may have restarted
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        yield f"{database_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()


@contextlib.contextmanager
def cluster_stack(
    gateways: int = 3,
    *,
    worker: bool = True,
    services: int = 8,
    quota: int = 30,
    database_url: str = POSTGRES_URL,
    redis_url: str = REDIS_URL,
    extra_env: dict[str, str] | None = None,
    config: str = CONFIG,
) -> Iterator[Stack]:
    """Start the stack (see the module docstring); principals ``ops`` (admin) and ``svc-0`` …
    ``svc-{services-1}``; ``metered-chat`` allows ``quota`` requests a minute per principal.
    ``config`` is the ``bastion.yaml`` template (``CONFIG`` with more models, say), formatted
    with ``upstream``, ``quota`` and ``principals``."""
    upstream, stop_upstream = start_upstream()
    workdir = Path(tempfile.mkdtemp(prefix="bastion-cluster-"))
    principals = "".join(f"  svc-{n}: {{kind: service, org: lab}}\n" for n in range(services))
    text = config.format(upstream=upstream.url, quota=quota, principals=principals)
    (workdir / "bastion.yaml").write_text(text, encoding="utf-8")
    try:
        with _schema(database_url) as schema_url:
            env = {
                "EXAMPLE_UPSTREAM_KEY": upstream.api_key,
                "BASTION_CONFIG": str(workdir / "bastion.yaml"),
                "BASTION_STATE_DIR": str(workdir / ".bastion"),
                "BASTION_DATABASE_URL": schema_url,
                "BASTION_REDIS_URL": redis_url,
                "BASTION_REDIS_PREFIX": "c" + secrets.token_hex(6),
                "BASTION_PUBLIC_URL": PUBLIC_URL,
                "BASTION_ACCESS_TOKEN_TTL": "900",
                **(extra_env or {}),
            }
            stack = Stack(workdir, schema_url, env["BASTION_REDIS_PREFIX"], upstream, env)
            try:
                stack.cli("init")  # keys and the database, once, before anything serves
                for _ in range(gateways):
                    stack.start_gateway()
                if worker:
                    stack.start_worker()
                yield stack
            finally:
                stack.close()
    finally:
        stop_upstream()
        shutil.rmtree(workdir, ignore_errors=True)
