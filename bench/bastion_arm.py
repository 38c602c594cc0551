"""The Bastion arms of the benchmark: `bastion serve` with every check on, in front of the same
example upstream, called with a DPoP-bound token and a fresh DPoP proof per request.

The arms differ only in the compartment's audit mode, set explicitly (its level, ``restricted``,
would default to ``required``):

    bastion                 ``audit: best-effort``: the request's event is queued, never awaited
    bastion-audit-required  ``audit: required``: the ``request.authorized`` event is committed
                            before the request goes upstream and the ``request.decided`` event
                            before the response ends, so every request waits for two commits
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx
import orjson

from bastion.identity.assertions import ASSERTION_TYPE, make_client_assertion
from bastion.identity.dpop import DPoPSigner
from bastion.identity.keys import generate_private_jwk, public_jwk
from bench.run import Arm, Cleanup, Upstream, free_port, start_server

CONFIG = """\
version: 1
upstreams:
  bench:
    base_url: {upstream}/v1
    api: openai
    api_key_env: EXAMPLE_UPSTREAM_KEY
models:
  - name: example-gpt
    upstream: bench
    compartment: general
compartments:
  general:
    level: restricted
    audit: {audit}
    grants: {{orgs: [lab]}}
orgs:
  lab: {{kind: internal}}
principals:
  bench: {{kind: service, org: lab}}
"""


def _bastion(workdir: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "bastion", *args], cwd=workdir, check=True, capture_output=True
    )


def _token(url: str, private: dict[str, str]) -> str:
    token_url = url + "/oauth/token"
    signer = DPoPSigner(private)
    for _ in range(50):  # the server applies the enrolled key within a poll interval
        response = httpx.post(
            token_url,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": make_client_assertion(
                    private, client_id="bench", audience=token_url
                ),
            },
            headers={"DPoP": signer.proof(method="POST", url=token_url)},
        )
        if response.status_code == 200:
            return str(response.json()["access_token"])
        time.sleep(0.1)
    raise RuntimeError(f"bastion refused a token: {response.text}")


def start_bastion(
    upstream: Upstream,
    *,
    name: str = "bastion",
    audit: str = "best-effort",
    env: dict[str, str] | None = None,
) -> tuple[Arm, Cleanup]:
    """``env``: more settings for the server (e.g. ``BASTION_INTEGRITY_INTERVAL``), to compare
    a variant in the same run."""
    workdir = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    (workdir / "bastion.yaml").write_text(CONFIG.format(upstream=upstream.url, audit=audit))
    private = generate_private_jwk()
    (workdir / "bench.pub.json").write_bytes(orjson.dumps(public_jwk(private)))
    _bastion(workdir, "init")
    _bastion(workdir, "key", "enroll", "bench", "bench.pub.json")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(
        name,
        [sys.executable, "-m", "bastion", "serve", "--port", str(port), "--log-level", "warning"],
        health_url=url + "/readyz",
        env={
            "EXAMPLE_UPSTREAM_KEY": upstream.api_key,
            "BASTION_ACCESS_TOKEN_TTL": "900",
            "BASTION_CONFIG": str(workdir / "bastion.yaml"),
            "BASTION_STATE_DIR": str(workdir / ".bastion"),
            **(env or {}),
        },
    )
    token = _token(url, private)
    signer = DPoPSigner(private)

    def headers(method: str, request_url: str) -> dict[str, str]:
        return {
            "authorization": f"DPoP {token}",
            "dpop": signer.proof(method=method, url=request_url, access_token=token),
        }

    def cleanup() -> None:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    return Arm(name, url, headers), cleanup


start_bastion_audit_required = partial(
    start_bastion, name="bastion-audit-required", audit="required"
)
