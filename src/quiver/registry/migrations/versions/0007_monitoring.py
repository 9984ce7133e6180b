"""Monitoring: feature statistics, training-set statistics (issue 17).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feature_statistics",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("view", sa.String(63), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("start_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("newest_event_ts", sa.DateTime(timezone=True), nullable=True),
        sa.Column("statistics", sa.Text, nullable=False),
    )
    op.create_index(
        "ix_feature_statistics_view", "feature_statistics", ["project", "view", "computed_at"]
    )
    op.create_table(
        "training_statistics",
        sa.Column("project", sa.String(63), primary_key=True),
        sa.Column("model_name", sa.String(63), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("statistics", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("training_statistics")
    op.drop_index("ix_feature_statistics_view", table_name="feature_statistics")
    op.drop_table("feature_statistics")
