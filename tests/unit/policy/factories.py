"""Builders for policy tests: one small config, hand-made store rows, and snapshots over them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bastion.config import BastionConfig, parse_config
from bastion.policy.authorize import Caller, RequestFacts
from bastion.policy.snapshot import Snapshot, build_snapshot, load_policy_text
from bastion.store.keys import DeviceKeyRow
from bastion.store.locks import LockRow
from bastion.store.principals import PrincipalRow

NOW = 1_750_000_000.0

# general: internal, optional binding, granted to the org lab.
# frontier: critical (binding required), granted to the principal carol only.
# vault: internal, binding required, granted to nobody.
CONFIG = """\
version: 1
upstreams:
  oa:
    base_url: http://upstream.test/v1/
    api: openai
    api_key_env: OA_KEY
    timeout_seconds: 30
    connect_timeout_seconds: 2
  an:
    base_url: http://upstream.test
    api: anthropic
models:
  - name: chat
    upstream: oa
    upstream_model: gpt-x
    compartment: general
  - name: claude
    upstream: an
    compartment: general
  - name: frontier-model
    upstream: oa
    compartment: frontier
  - name: vault-model
    upstream: oa
    compartment: vault
compartments:
  general:
    level: internal
    token_binding: optional
    grants:
      orgs: [lab]
  frontier:
    level: critical
    grants:
      principals: [carol]
  vault:
    level: internal
    token_binding: required
orgs:
  lab: {kind: internal}
  acme: {kind: vendor}
principals:
  alice: {kind: user, org: lab}
  carol: {kind: user, org: lab}
  victor: {kind: user, org: acme}
  dave: {kind: user, org: lab, disabled: true}
"""

MODELS = ("chat", "claude", "frontier-model", "vault-model")


def config(text: str = CONFIG) -> BastionConfig:
    return parse_config(text)


def principal_row(
    name: str, org: str = "lab", *, kind: str = "service", disabled: bool = False
) -> PrincipalRow:
    return PrincipalRow(name, kind, org, "admin", disabled, NOW - 100)


def key_row(jkt: str, principal: str, *, revoked_at: float | None = None) -> DeviceKeyRow:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": f"x-of-{jkt}"}
    return DeviceKeyRow(jkt, principal, jwk, "EdDSA", NOW - 100, revoked_at)


def lock_row(
    target_type: str,
    target: str,
    *,
    lock_id: str | None = None,
    expires_at: float | None = None,
) -> LockRow:
    return LockRow(
        id=lock_id or f"lk-{target_type}-{target}",
        target_type=target_type,
        target=target,
        reason="test",
        author="tester",
        created_at=NOW - 10,
        expires_at=expires_at,
        released_at=None,
        released_by=None,
    )


def snapshot(
    *,
    epoch: int = 1,
    config_text: str = CONFIG,
    principals: Sequence[PrincipalRow] = (),
    device_keys: Sequence[DeviceKeyRow] = (),
    locks: Sequence[LockRow] = (),
    env: Mapping[str, str] | None = None,
    operator_policies: str = "",
) -> Snapshot:
    """A snapshot of ``config_text`` and the rows; ``operator_policies`` join the shipped ones."""
    schema, shipped = load_policy_text()
    return build_snapshot(
        epoch=epoch,
        config=config(config_text),
        principals=principals,
        device_keys=device_keys,
        locks=locks,
        env={} if env is None else env,
        policy_text=(schema, shipped + "\n" + operator_policies),
    )


def caller(
    principal: str, org: str = "lab", *, jkt: str = "jkt-1", family: str = "fam-1"
) -> Caller:
    return Caller(principal=principal, org=org, jkt=jkt, family=family)


def facts(
    *, token_bound: bool = True, source_ip: str = "192.0.2.7", api: str = "openai"
) -> RequestFacts:
    return RequestFacts(token_bound=token_bound, source_ip=source_ip, api=api)
