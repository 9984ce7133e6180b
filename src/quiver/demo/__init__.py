"""The churn demo: deterministic synthetic data and the ``features.py`` of ``quiver init --demo``.

Attributes:
    FEATURES_TEMPLATE: The source text of the demo repo's ``features.py``.
    TRAINING_SPEC_TEMPLATE: The demo repo's ``churn_model.yaml`` training spec.
    LABEL_SOURCE: The name of the data source that holds the label (entity) table.
"""

from __future__ import annotations

from importlib import resources

from quiver.demo.data import TABLE_NAMES, build_demo_tables, generate_demo_data

__all__ = [
    "FEATURES_TEMPLATE",
    "LABEL_SOURCE",
    "TABLE_NAMES",
    "TRAINING_SPEC_TEMPLATE",
    "build_demo_tables",
    "generate_demo_data",
]

FEATURES_TEMPLATE: str = (
    resources.files(__name__).joinpath("features_template.py").read_text(encoding="utf-8")
)
"""The demo repo's ``features.py``, copied verbatim by ``quiver init --demo``."""

TRAINING_SPEC_TEMPLATE: str = (
    resources.files(__name__).joinpath("churn_model.yaml").read_text(encoding="utf-8")
)
"""The demo repo's ``churn_model.yaml`` training spec."""

LABEL_SOURCE = "churn_labels"
"""The data source holding ``customer_id, event_timestamp, churned, lifetime_value``."""
