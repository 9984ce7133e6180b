"""Data quality: validation counts on runs, feature sets (issue 15).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # What a view's validation rules found in a materialization run (quiver.quality).
    with op.batch_alter_table("materialization_runs") as batch:
        batch.add_column(
            sa.Column("rows_invalid", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("rows_dropped", sa.BigInteger, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("validation", sa.Text, nullable=True))
    # Rows of a batch prediction whose features were missing (quiver.ml.predict).
    with op.batch_alter_table("prediction_jobs") as batch:
        batch.add_column(
            sa.Column("rows_missing_features", sa.BigInteger, nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("prediction_jobs") as batch:
        batch.drop_column("rows_missing_features")
    with op.batch_alter_table("materialization_runs") as batch:
        batch.drop_column("validation")
        batch.drop_column("rows_dropped")
        batch.drop_column("rows_invalid")
