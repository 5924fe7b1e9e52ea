"""VM locks: a VM is held by one run (with its follow-ups) at a time.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vm_lock",
        sa.Column("vm", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("acquired_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["run.id"]),
        sa.PrimaryKeyConstraint("vm"),
    )
    with op.batch_alter_table("vm_lock", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vm_lock_run_id"), ["run_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("vm_lock", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vm_lock_run_id"))
    op.drop_table("vm_lock")
