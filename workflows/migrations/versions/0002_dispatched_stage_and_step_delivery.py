"""Which stage was dispatched (and when it was entered), and which delivery runs a step.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dispatched_stage", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("stage_entered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    # runs of the earlier schema were sent as they were entered: nothing to re-send
    op.execute("UPDATE run SET dispatched_stage = current_stage")
    with op.batch_alter_table("step", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("task_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("step", schema=None) as batch_op:
        batch_op.drop_column("task_id")
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_column("stage_entered_at")
        batch_op.drop_column("dispatched_stage")
