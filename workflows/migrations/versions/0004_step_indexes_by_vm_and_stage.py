"""Indexes for the per-VM and per-stage reads of a run's steps.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("step", schema=None) as batch_op:
        batch_op.create_index("ix_step_run_id_vm", ["run_id", "vm"], unique=False)
        batch_op.create_index("ix_step_run_id_stage", ["run_id", "stage"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("step", schema=None) as batch_op:
        batch_op.drop_index("ix_step_run_id_stage")
        batch_op.drop_index("ix_step_run_id_vm")
