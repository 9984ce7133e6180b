"""The monitoring tables, on the registry's ``metadata`` (created by migration 0007).

- ``feature_statistics``: one row per successful materialization run of a view: the run, when,
  how many rows, the newest event timestamp it wrote and the per-feature statistics (JSON).
- ``training_statistics``: one row per model version: the per-feature statistics of its
  training split (JSON, keyed by feature reference ``view:feature``).
- ``drift_scores`` (migration 0009): the latest drift check of each model version, one row per
  feature (its PSI, test p-value and status), read by the Prometheus metrics.
"""

from __future__ import annotations

import sqlalchemy as sa

from quiver.registry.tables import metadata

__all__ = ["drift_scores", "feature_statistics", "training_statistics"]

feature_statistics = sa.Table(
    "feature_statistics",
    metadata,
    sa.Column("run_id", sa.String(32), primary_key=True),
    sa.Column("project", sa.String(63), nullable=False),
    sa.Column("view", sa.String(63), nullable=False),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("start_ts", sa.DateTime(timezone=True), nullable=True),
    sa.Column("end_ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("newest_event_ts", sa.DateTime(timezone=True), nullable=True),
    sa.Column("statistics", sa.Text, nullable=False),
    sa.Index("ix_feature_statistics_view", "project", "view", "computed_at"),
)

training_statistics = sa.Table(
    "training_statistics",
    metadata,
    sa.Column("project", sa.String(63), primary_key=True),
    sa.Column("model_name", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("statistics", sa.Text, nullable=False),
)

drift_scores = sa.Table(
    "drift_scores",
    metadata,
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
