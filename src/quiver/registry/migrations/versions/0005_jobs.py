"""Background jobs and schedules (leases), watermarks per online store (issue 16).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("progress", sa.Text, nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("schedule", sa.String(63), nullable=True),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.create_index("ix_jobs_project", ["project", "created_at"], unique=False)
        batch.create_index("ix_jobs_status", ["status"], unique=False)
    op.create_table(
        "schedule_leases",
        sa.Column("project", sa.String(63), primary_key=True),
        sa.Column("view", sa.String(63), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_fire", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_job_id", sa.String(32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("materialization_runs") as batch:
        batch.add_column(
            sa.Column("online_store", sa.String(255), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("job_id", sa.String(32), nullable=True))
    # Watermarks become per (view, online store): a new table; the old rows, which do not say
    # their store, are dropped (the next incremental run of each view starts as a first run).
    op.drop_table("materialization_watermarks")
    op.create_table(
        "materialization_watermarks",
        sa.Column("project", sa.String(63), primary_key=True),
        sa.Column("view", sa.String(63), primary_key=True),
        sa.Column("online_store", sa.String(255), primary_key=True),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("materialization_watermarks")
    op.create_table(
        "materialization_watermarks",
        sa.Column("project", sa.String(63), primary_key=True),
        sa.Column("view", sa.String(63), primary_key=True),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("materialization_runs") as batch:
        batch.drop_column("job_id")
        batch.drop_column("online_store")
    op.drop_table("schedule_leases")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_status")
        batch.drop_index("ix_jobs_project")
    op.drop_table("jobs")
