"""Materialization runs and per-view watermarks.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "materialization_runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("view", sa.String(63), nullable=False),
        sa.Column("schema_version", sa.String(32), nullable=False),
        sa.Column("start_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rows_written", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("duration_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
    )
    with op.batch_alter_table("materialization_runs") as batch:
        batch.create_index(
            "ix_materialization_runs_view", ["project", "view", "started_at"], unique=False
        )
    op.create_table(
        "materialization_watermarks",
        sa.Column("project", sa.String(63), primary_key=True),
        sa.Column("view", sa.String(63), primary_key=True),
        sa.Column("watermark", sa.DateTime(timezone=True), nullable=False),
        sa.Column("schema_version", sa.String(32), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("materialization_watermarks")
    with op.batch_alter_table("materialization_runs") as batch:
        batch.drop_index("ix_materialization_runs_view")
    op.drop_table("materialization_runs")
