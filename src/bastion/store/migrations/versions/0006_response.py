"""Response: automatic and manual actions, incidents, and throttle rates on locks.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("locks") as batch:
        batch.add_column(sa.Column("rate", sa.Float, nullable=True))
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("title", sa.String(300), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("owner", sa.String(128), nullable=True),
        sa.Column("entities", sa.Text, nullable=False),
        sa.Column("opened_at", sa.Float, nullable=False, index=True),
        sa.Column("first_signal_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("contained_at", sa.Float, nullable=True),
        sa.Column("resolved_at", sa.Float, nullable=True),
        sa.Column("resolved_by", sa.String(128), nullable=True),
        sa.Column("resolution", sa.String(1000), nullable=True),
    )
    op.create_table(
        "incident_findings",
        sa.Column("incident", sa.String(32), primary_key=True),
        sa.Column("finding", sa.String(32), primary_key=True),
        sa.Column("added_at", sa.Float, nullable=False),
    )
    op.create_index("ix_incident_findings_finding", "incident_findings", ["finding"])
    op.create_table(
        "response_actions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target_type", sa.String(16), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("status", sa.String(24), nullable=False, index=True),
        sa.Column("playbook", sa.String(64), nullable=False),
        sa.Column("finding", sa.String(32), nullable=True, index=True),
        sa.Column("incident", sa.String(32), nullable=True, index=True),
        sa.Column("author", sa.String(128), nullable=False),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("lock", sa.String(32), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("executed_at", sa.Float, nullable=True),
        sa.Column("undone_at", sa.Float, nullable=True),
        sa.Column("undone_by", sa.String(128), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("response_actions")
    op.drop_index("ix_incident_findings_finding", "incident_findings")
    op.drop_table("incident_findings")
    op.drop_table("incidents")
    with op.batch_alter_table("locks") as batch:
        batch.drop_column("rate")
