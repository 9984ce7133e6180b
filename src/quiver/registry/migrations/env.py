"""Alembic environment: runs on the connection the registry hands over."""

from __future__ import annotations

from alembic import context

from quiver.registry.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the registry always passes one
    raise RuntimeError("Quiver's migrations run through quiver.registry.Registry")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
