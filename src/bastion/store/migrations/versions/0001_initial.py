"""Initial schema: principals, device keys, enrollment codes, token families, refresh tokens,
locks, audit events, the state epoch and live processes.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "principals",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("org", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "device_keys",
        sa.Column("jkt", sa.String(64), primary_key=True),
        sa.Column("principal", sa.String(64), nullable=False, index=True),
        sa.Column("public_jwk", sa.Text, nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    op.create_table(
        "enrollment_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("principal", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("used_at", sa.Float, nullable=True),
    )
    op.create_table(
        "token_families",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("principal", sa.String(64), nullable=False, index=True),
        sa.Column("jkt", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float, nullable=True),
        sa.Column("revoked_reason", sa.String(200), nullable=True),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("family", sa.String(32), nullable=False, index=True),
        sa.Column("issued_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("rotated_at", sa.Float, nullable=True),
    )
    op.create_table(
        "locks",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("target_type", sa.String(16), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("released_at", sa.Float, nullable=True),
        sa.Column("released_by", sa.String(128), nullable=True),
    )
    op.create_index("ix_locks_active", "locks", ["target_type", "target", "released_at"])
    op.create_table(
        "audit_events",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("id", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("time", sa.Float, nullable=False, index=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("leaf", sa.Text, nullable=False),
    )
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("root", sa.LargeBinary(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "state",
        sa.Column("key", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "processes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=False),
    )
    op.execute(sa.text("INSERT INTO state (key, value) VALUES ('epoch', 1)"))
    # Appenders update this row first: it serializes them (row lock / SQLite write lock).
    op.execute(sa.text("INSERT INTO state (key, value) VALUES ('audit_appends', 0)"))


def downgrade() -> None:
    for table in (
        "processes",
        "state",
        "audit_checkpoints",
        "audit_nodes",
        "audit_events",
        "locks",
        "refresh_tokens",
        "token_families",
        "enrollment_codes",
        "device_keys",
        "principals",
    ):
        op.drop_table(table)
