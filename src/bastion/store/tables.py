"""SQLAlchemy table definitions: the one description of Bastion's durable state.

Times are UNIX seconds as floats (exact to the microsecond, the same in SQLite and PostgreSQL).
Secrets are never stored: refresh tokens and enrollment codes are kept as SHA-256 digests.
The Alembic migrations under ``store/migrations`` create exactly these tables.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

principals = sa.Table(
    "principals",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("org", sa.String(64), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # config | cli | api
    sa.Column("disabled", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # Last token issued or refreshed: a principal idle past the dormancy limit is disabled.
    sa.Column("last_active_at", sa.Float, nullable=True),
)

device_keys = sa.Table(
    "device_keys",
    metadata,
    sa.Column("jkt", sa.String(64), primary_key=True),
    sa.Column("principal", sa.String(64), nullable=False, index=True),
    sa.Column("public_jwk", sa.Text, nullable=False),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)

enrollment_codes = sa.Table(
    "enrollment_codes",
    metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("principal", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=True),
)

token_families = sa.Table(
    "token_families",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("principal", sa.String(64), nullable=False, index=True),
    sa.Column("jkt", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("revoked_reason", sa.String(200), nullable=True),
    # When the login that started the family passed MFA (None: it did not); refreshes keep it.
    sa.Column("mfa_at", sa.Float, nullable=True),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("family", sa.String(32), nullable=False, index=True),
    sa.Column("issued_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("rotated_at", sa.Float, nullable=True),
)

locks = sa.Table(
    "locks",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("target_type", sa.String(16), nullable=False),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("author", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("released_at", sa.Float, nullable=True),
    sa.Column("released_by", sa.String(128), nullable=True),
    sa.Column("rate", sa.Float, nullable=True),  # throttle locks: requests per minute
    sa.Index("ix_locks_active", "target_type", "target", "released_at"),
)

# The audit log: event ``idx`` is its leaf index in the Merkle tree (dense, from 0); ``body`` is
# the canonical JSON of the frozen event, ``leaf`` the commitment the tree hashes (body with
# sensitive fields HMAC'd). ``audit_nodes`` holds every complete subtree hash (level, index), so
# proofs never rehash history; ``audit_checkpoints`` the signed C2SP checkpoints.
audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("time", sa.Float, nullable=False, index=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("leaf", sa.Text, nullable=False),
)

audit_nodes = sa.Table(
    "audit_nodes",
    metadata,
    sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("root", sa.LargeBinary(32), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

state = sa.Table(
    "state",
    metadata,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

processes = sa.Table(
    "processes",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("lock_view_at", sa.Float, nullable=True),
)

# Just-in-time access: requests, their approvals, and the time-bound grants they produce.
access_requests = sa.Table(
    "access_requests",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("principal", sa.String(64), nullable=False, index=True),
    sa.Column("compartment", sa.String(64), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("duration", sa.Float, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending|approved|denied
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # a pending request lapses then
    sa.Column("decided_at", sa.Float, nullable=True),
)

approvals = sa.Table(
    "approvals",
    metadata,
    sa.Column("request", sa.String(32), primary_key=True),
    sa.Column("approver", sa.String(64), primary_key=True),
    sa.Column("decision", sa.String(8), nullable=False),  # approve|deny
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)

grants = sa.Table(
    "grants",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("principal", sa.String(64), nullable=False, index=True),
    sa.Column("compartment", sa.String(64), nullable=False),
    sa.Column("request", sa.String(32), nullable=True),
    sa.Column("granted_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("revoked_by", sa.String(128), nullable=True),
)

# MFA: one TOTP factor per principal. ``secret`` is encrypted with the state directory's MFA key
# (never stored in the clear); ``last_step`` is the last accepted TOTP time step (no code reuse).
mfa_factors = sa.Table(
    "mfa_factors",
    metadata,
    sa.Column("principal", sa.String(64), primary_key=True),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("confirmed_at", sa.Float, nullable=True),
    sa.Column("last_step", sa.BigInteger, nullable=True),
    # Wrong codes since the last accepted one, and when the last came (brute-force throttle).
    sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failed_at", sa.Float, nullable=True),
)

# Access reviews: a vendor org's sponsor recertifies (keep) or removes each vendor principal.
reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("org", sa.String(64), nullable=False, index=True),
    sa.Column("opened_at", sa.Float, nullable=False),
    sa.Column("due_at", sa.Float, nullable=False),
    sa.Column("completed_at", sa.Float, nullable=True),
    sa.Column("completed_by", sa.String(64), nullable=True),
)

review_decisions = sa.Table(
    "review_decisions",
    metadata,
    sa.Column("review", sa.String(32), primary_key=True),
    sa.Column("principal", sa.String(64), primary_key=True),
    sa.Column("decision", sa.String(8), nullable=False),  # keep|remove
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("decided_by", sa.String(64), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
)

# Detection: findings (deduplicated per detection and entity) and the engine's state snapshot
# (per detector, plus the audit log position it has processed up to) so it resumes after a restart.
findings = sa.Table(
    "findings",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("detection", sa.String(80), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("techniques", sa.Text, nullable=False),  # JSON list
    sa.Column("entity_type", sa.String(16), nullable=False),
    sa.Column("entity", sa.String(200), nullable=False),
    sa.Column("principal", sa.String(64), nullable=False),
    sa.Column("org", sa.String(64), nullable=False),
    sa.Column("explanation", sa.String(1000), nullable=False),
    sa.Column("evidence", sa.Text, nullable=False),  # JSON list of audit event ids
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False, index=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Index("ix_findings_entity", "detection", "entity_type", "entity"),
)

detector_state = sa.Table(
    "detector_state",
    metadata,
    sa.Column("key", sa.String(80), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),  # JSON
    sa.Column("saved_at", sa.Float, nullable=False),
)

# Webhook deliveries that failed for good (dead letters): what was to be sent, to which webhook
# (by name: URLs and secrets are never stored), how often it was tried and the last error.
deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("webhook", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.String(500), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float, nullable=True),
    sa.Column("dead_at", sa.Float, nullable=True),
)

# Incidents: findings about the same entity or campaign, grouped, with the actions taken on them.
# ``entities`` is a JSON object of the implicated principals, orgs, token families, device keys
# and source networks; the timeline and blast radius are assembled from the audit log on read.
incidents = sa.Table(
    "incidents",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("title", sa.String(300), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # open | contained | resolved
    sa.Column("owner", sa.String(128), nullable=True),
    sa.Column("entities", sa.Text, nullable=False),  # JSON
    sa.Column("opened_at", sa.Float, nullable=False, index=True),
    sa.Column("first_signal_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("contained_at", sa.Float, nullable=True),
    sa.Column("resolved_at", sa.Float, nullable=True),
    sa.Column("resolved_by", sa.String(128), nullable=True),
    sa.Column("resolution", sa.String(1000), nullable=True),
)

incident_findings = sa.Table(
    "incident_findings",
    metadata,
    sa.Column("incident", sa.String(32), primary_key=True),
    sa.Column("finding", sa.String(32), primary_key=True),
    sa.Column("added_at", sa.Float, nullable=False),
    sa.Index("ix_incident_findings_finding", "finding"),
)

# Response actions, automatic (from a playbook) or manual: what was (or would have been) done,
# to which target, why, and whether it was undone. ``status``: done | dry_run | pending_approval |
# rate_limited | skipped | failed | undone | rejected.
response_actions = sa.Table(
    "response_actions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("target_type", sa.String(16), nullable=False),
    sa.Column("target", sa.String(128), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),  # enforce | dry-run
    sa.Column("status", sa.String(24), nullable=False, index=True),
    sa.Column("playbook", sa.String(64), nullable=False),  # "" for manual actions
    sa.Column("finding", sa.String(32), nullable=True, index=True),
    sa.Column("incident", sa.String(32), nullable=True, index=True),
    sa.Column("author", sa.String(128), nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),  # JSON
    sa.Column("lock", sa.String(32), nullable=True),  # the lock it created, if any
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("executed_at", sa.Float, nullable=True),
    sa.Column("undone_at", sa.Float, nullable=True),
    sa.Column("undone_by", sa.String(128), nullable=True),
)

# The console (issue 8): server-side sessions and one-time login codes. Only SHA-256 digests of
# the session id and of the code are kept; the browser holds the session id, the CLI the code.
console_sessions = sa.Table(
    "console_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("principal", sa.String(64), nullable=False, index=True),
    sa.Column("method", sa.String(16), nullable=False),  # link | oidc
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # the absolute limit
    # Signed in with the link, TOTP still owed: such a session opens the TOTP page only.
    sa.Column("mfa_pending", sa.Boolean, nullable=False),
    sa.Column("mfa_at", sa.Float, nullable=True),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("ended_reason", sa.String(32), nullable=True),
)

console_login_codes = sa.Table(
    "console_login_codes",
    metadata,
    sa.Column("code_hash", sa.String(64), primary_key=True),
    sa.Column("principal", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("used_at", sa.Float, nullable=True),
)
