"""The registry's tables (SQLAlchemy Core). Alembic migrations create and evolve them."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

projects = sa.Table(
    "projects",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

objects = sa.Table(
    "objects",
    metadata,
    sa.Column("project", sa.String(63), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("spec_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=True),
)

object_versions = sa.Table(
    "object_versions",
    metadata,
    sa.Column("project", sa.String(63), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("spec_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("author", sa.String(255), nullable=True),
    sa.Column("message", sa.Text, nullable=True),
)

# -- materialization (issue 4) ------------------------------------------------------------------

materialization_runs = sa.Table(
    "materialization_runs",
    metadata,
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
    sa.Column("online_store", sa.String(255), nullable=False, server_default=""),
    sa.Column("job_id", sa.String(32), nullable=True),
    # data quality (migration 0006): what the view's validation rules found
    sa.Column("rows_invalid", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("rows_dropped", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("validation", sa.Text, nullable=True),
    sa.Index("ix_materialization_runs_view", "project", "view", "started_at"),
)

materialization_watermarks = sa.Table(
    "materialization_watermarks",
    metadata,
    sa.Column("project", sa.String(63), primary_key=True),
    sa.Column("view", sa.String(63), primary_key=True),
    sa.Column("online_store", sa.String(255), primary_key=True),
    sa.Column("watermark", sa.DateTime(timezone=True), nullable=False),
    sa.Column("schema_version", sa.String(32), nullable=False),
    sa.Column("run_id", sa.String(32), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
