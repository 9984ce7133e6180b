"""Model registry: models, immutable versions with stage and lineage, prediction jobs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("project", sa.String(63), primary_key=True),
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("project", sa.String(63), primary_key=True),
        sa.Column("model_name", sa.String(63), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("framework", sa.String(32), nullable=False),
        sa.Column("model_type", sa.String(32), nullable=False),
        sa.Column("algorithm", sa.String(64), nullable=True),
        sa.Column("stage", sa.String(16), nullable=False, server_default="none"),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("lineage", sa.Text, nullable=False),
        sa.Column("metrics", sa.Text, nullable=False),
        sa.Column("feature_importance", sa.Text, nullable=False),
        sa.Column("artifact_dir", sa.Text, nullable=False),
        sa.Column("checksums", sa.Text, nullable=False),
        sa.Column("training_duration_seconds", sa.Float, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("stage_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["project", "model_name"], ["models.project", "models.name"], ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ux_model_versions_production",
        "model_versions",
        ["project", "model_name"],
        unique=True,
        sqlite_where=sa.text("stage = 'production'"),
        postgresql_where=sa.text("stage = 'production'"),
    )
    op.create_table(
        "prediction_jobs",
        sa.Column("prediction_id", sa.String(64), primary_key=True),
        sa.Column("project", sa.String(63), nullable=False),
        sa.Column("model_name", sa.String(63), nullable=False),
        sa.Column("model_version", sa.Integer, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("input", sa.Text, nullable=True),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("rows", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("duration_seconds", sa.Float, nullable=False, server_default="0"),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
    )
    op.create_index("ix_prediction_jobs_project", "prediction_jobs", ["project"])


def downgrade() -> None:
    op.drop_index("ix_prediction_jobs_project", table_name="prediction_jobs")
    op.drop_table("prediction_jobs")
    op.drop_index("ux_model_versions_production", table_name="model_versions")
    op.drop_table("model_versions")
    op.drop_table("models")
