"""Monitoring: feature statistics, freshness, drift, validation, the catalogue, lineage, usage,
metrics and the serving cache.

Kept light: importing this package imports nothing; each module loads on first use.

- ``statistics.py``: per-feature statistics of a materialization (computed over the rows it
  pulled) and of a training set, and their storage in the registry (tables of migration 0007).
- ``freshness.py``: per view, the age of the newest materialized value and the lag behind the
  source.
- ``drift.py``: a model version's training statistics against the features materialized since.
- ``validate.py``, ``catalog.py``, ``lineage.py``: ``quiver validate``, ``quiver docs`` and the
  lineage lookups.
- ``metrics.py``: the Prometheus metrics of ``quiver serve`` (``/metrics``), observed and read
  from the registry when scraped.
- ``usage.py``: reads per feature, view, service and model, counted in memory by a server and
  flushed to the registry (migration 0008).
- ``cache.py``: the serving cache of online reads (memory or Redis), invalidated by push and
  materialization.
"""
