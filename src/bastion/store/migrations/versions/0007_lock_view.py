"""Cluster mode: each process's heartbeat says when it last proved its lock view current.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("processes") as batch:
        # wall-clock time of the last epoch read that matched the snapshot (NULL: never proved)
        batch.add_column(sa.Column("lock_view_at", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("processes") as batch:
        batch.drop_column("lock_view_at")
