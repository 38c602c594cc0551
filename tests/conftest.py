"""Shared fixtures: configs, the stand-in upstream, and databases (SQLite and real PostgreSQL)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

# The CLI's rich consoles are made at import and keep a COLUMNS they find set then; pytest-xdist
# workers inherit one. Tests set their own width (the ``cli`` fixture), so start without it.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)

UPSTREAM_KEY = "upstream-secret-" + "k" * 16

CONFIG = """\
version: 1
upstreams:
  example-openai:
    base_url: http://upstream.test/v1
    api: openai
    api_key_env: EXAMPLE_UPSTREAM_KEY
    forward_headers: [x-example-chunk-delay, x-example-chunks]  # the stand-in's test controls
  example-anthropic:
    base_url: http://upstream.test
    api: anthropic
    api_key_env: EXAMPLE_UPSTREAM_KEY
models:
  - name: demo-chat
    upstream: example-openai
    upstream_model: example-gpt
    compartment: general
  - name: demo-claude
    upstream: example-anthropic
    upstream_model: example-claude
    compartment: general
  - name: demo-embed
    upstream: example-openai
    upstream_model: example-embed
    compartment: general
  - name: cyber-frontier
    upstream: example-openai
    upstream_model: example-gpt
    compartment: frontier
compartments:
  general:
    level: internal
    grants:
      orgs: [lab]
  frontier:
    level: critical
    grants:
      principals: [carol]
    access:
      approvals: 2
      approvers: [bob, audrey]
orgs:
  lab: {kind: internal}
  acme:
    kind: vendor
    sponsor: alice
    contract: {start: "2026-01-01T00:00:00Z", end: "2099-01-01T00:00:00Z"}
principals:
  alice: {kind: user, org: lab}
  bob: {kind: user, org: lab}
  carol: {kind: user, org: lab}
  victor: {kind: user, org: acme}
  audrey: {kind: user, org: lab, roles: [auditor]}
"""

POSTGRES_URL = os.environ.get(
    "BASTION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
def config_text() -> str:
    return CONFIG


@pytest.fixture
def upstream_env() -> dict[str, str]:
    return {"EXAMPLE_UPSTREAM_KEY": UPSTREAM_KEY}


def _postgres_schema_url() -> Iterator[str]:
    schema = "t_" + secrets.token_hex(6)
    admin = sa.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError as exc:  # the suite promises a real server; say so loudly
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same tests run against SQLite and against this machine's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'bastion.db'}"
    else:
        yield from _postgres_schema_url()
