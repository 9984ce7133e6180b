"""Computed features: SQL transformations (:mod:`quiver.features.sql`, the sandbox, and
:mod:`quiver.features.transformations`) and on-demand feature views
(:mod:`quiver.features.on_demand`, :mod:`quiver.features.computed`); time-windowed
aggregations (:mod:`quiver.features.aggregations`, the definition;
:mod:`quiver.features.aggregation_sql`, offline; :mod:`quiver.features.tiles` and
:mod:`quiver.features.tile_store`, online).

Importing this package loads nothing heavy: sqlglot, DuckDB, pandas and pyarrow are imported
by the functions that need them.
"""
