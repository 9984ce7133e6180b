"""Drift scores: the latest drift check of each model version, per feature (issue 17).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_scores",
        sa.Column("project", sa.String(63), primary_key=True),
        sa.Column("model_name", sa.String(63), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("feature", sa.String(255), primary_key=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("psi", sa.Float, nullable=True),
        sa.Column("p_value", sa.Float, nullable=True),
        sa.Column("drifted", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("drift_scores")
