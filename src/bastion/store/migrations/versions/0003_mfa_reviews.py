"""MFA factors, vendor access reviews and principal activity (for dormancy).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mfa_factors",
        sa.Column("principal", sa.String(64), primary_key=True),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("confirmed_at", sa.Float, nullable=True),
        sa.Column("last_step", sa.BigInteger, nullable=True),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed_at", sa.Float, nullable=True),
    )
    op.create_table(
        "reviews",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("org", sa.String(64), nullable=False, index=True),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("due_at", sa.Float, nullable=False),
        sa.Column("completed_at", sa.Float, nullable=True),
        sa.Column("completed_by", sa.String(64), nullable=True),
    )
    op.create_table(
        "review_decisions",
        sa.Column("review", sa.String(32), primary_key=True),
        sa.Column("principal", sa.String(64), primary_key=True),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("principals") as batch:
        batch.add_column(sa.Column("last_active_at", sa.Float, nullable=True))
    with op.batch_alter_table("token_families") as batch:
        batch.add_column(sa.Column("mfa_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("token_families") as batch:
        batch.drop_column("mfa_at")
    with op.batch_alter_table("principals") as batch:
        batch.drop_column("last_active_at")
    for table in ("review_decisions", "reviews", "mfa_factors"):
        op.drop_table(table)
