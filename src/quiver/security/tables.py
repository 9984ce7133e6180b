"""The security tables, on the registry's ``metadata`` (created by migration 0004).

- ``api_keys``: one row per key ever created; only the SHA-256 of the secret is stored. A name
  is unique among the keys not revoked, so a revoked key's name can be given to a new key.
- ``permissions``: the permission policies of each project, as JSON specs.
- ``audit_log``: the append-only log; nothing in Quiver updates or deletes its rows.
"""

from __future__ import annotations

import sqlalchemy as sa

from quiver.registry.tables import metadata

__all__ = ["api_keys", "audit_log", "permissions"]

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("project", sa.String(63), nullable=True),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(255), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("revoked_by", sa.String(255), nullable=True),
    sa.Index(
        "ux_api_keys_active_name",
        "name",
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    ),
)

permissions = sa.Table(
    "permissions",
    metadata,
    sa.Column("project", sa.String(63), primary_key=True),
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=True),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("project", sa.String(63), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("principal", sa.String(255), nullable=False),
    sa.Column("key_id", sa.String(32), nullable=True),
    sa.Column("channel", sa.String(8), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("resource", sa.Text, nullable=False, server_default=""),
    sa.Column("outcome", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Column("client", sa.String(255), nullable=True),
    sa.Column("method", sa.String(8), nullable=True),
    sa.Column("path", sa.Text, nullable=True),
    sa.Column("message", sa.Text, nullable=True),
    sa.Index("ix_audit_log_time", "project", "created_at"),
    sa.Index("ix_audit_log_principal", "project", "principal", "created_at"),
)
