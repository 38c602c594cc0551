"""Detection: findings and the detection engine's state snapshot.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "findings",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("detection", sa.String(80), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("techniques", sa.Text, nullable=False),
        sa.Column("entity_type", sa.String(16), nullable=False),
        sa.Column("entity", sa.String(200), nullable=False),
        sa.Column("principal", sa.String(64), nullable=False),
        sa.Column("org", sa.String(64), nullable=False),
        sa.Column("explanation", sa.String(1000), nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False, index=True),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
    )
    op.create_index("ix_findings_entity", "findings", ["detection", "entity_type", "entity"])
    op.create_table(
        "detector_state",
        sa.Column("key", sa.String(80), primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("saved_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("detector_state")
    op.drop_index("ix_findings_entity", table_name="findings")
    op.drop_table("findings")
