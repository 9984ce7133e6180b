"""Computed features: SQL transformations (:mod:`quiver.features.sql`, the sandbox, and
:mod:`quiver.features.transformations`) and on-demand feature views
(:mod:`quiver.features.on_demand`, :mod:`quiver.features.computed`).

Importing this package loads nothing heavy: sqlglot, DuckDB, pandas and pyarrow are imported
by the functions that need them.
"""
