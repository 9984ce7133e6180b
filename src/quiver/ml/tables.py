"""The model registry's tables, on the registry's ``metadata`` (created by migration 0003)."""

from __future__ import annotations

import sqlalchemy as sa

from quiver.registry.tables import metadata

__all__ = ["model_versions", "models", "prediction_jobs"]

models = sa.Table(
    "models",
    metadata,
    sa.Column("project", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

model_versions = sa.Table(
    "model_versions",
    metadata,
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
    sa.Index(
        "ux_model_versions_production",
        "project",
        "model_name",
        unique=True,
        sqlite_where=sa.text("stage = 'production'"),
        postgresql_where=sa.text("stage = 'production'"),
    ),
)

prediction_jobs = sa.Table(
    "prediction_jobs",
    metadata,
    sa.Column("prediction_id", sa.String(64), primary_key=True),
    sa.Column("project", sa.String(63), nullable=False, index=True),
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
    # data quality (migration 0006): rows scored, flagged or refused with missing features
    sa.Column("rows_missing_features", sa.BigInteger, nullable=False, server_default="0"),
)
