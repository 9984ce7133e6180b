"""The computed-features repo shared by the unit and CLI tests: a view with a SQL
transformation, an on-demand view with a request field, another with a SQL expression."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

_DEFINITIONS = """
customer = Entity(name="customer", join_keys=["customer_id"])
behavior = FeatureView(
    name="behavior",
    entities=[customer],
    source=FileSource(name="behavior_source", path="data/behavior.parquet"),
    schema=[
        Field(name="orders", dtype="int64"),
        Field(name="age", dtype="int64",
              transformation="date_diff('year', date_of_birth, event_timestamp)"),
    ],
)


@on_demand_feature_view(
    sources=[behavior, RequestSource(name="req", schema=[Field(name="bonus", dtype="float64")])],
    schema=[Field(name="score", dtype="float64")],
)
def scored(df):
@UDF_COMMENT@    return pd.DataFrame({"score": df["orders"] * 2 + df["bonus"]})


ratio = OnDemandFeatureView(
    name="ratio",
    sources=[behavior],
    schema=[Field(name="orders_per_year", dtype="float64",
                  transformation="orders / NULLIF(age, 0)")],
)
service = FeatureService(name="svc", features=["@FIRST_FEATURE@", "scored:score", "ratio:*"])
"""


def computed_definitions(imports: str, first_feature: str, udf_comment: str = "") -> str:
    """The definitions file: ``imports`` (lines after a blank one), then the objects; the
    service ``svc`` serves ``first_feature`` first; ``udf_comment`` is a line in the function."""
    udf = f"    {udf_comment}\n" if udf_comment else ""
    return imports + _DEFINITIONS.replace("@UDF_COMMENT@", udf).replace(
        "@FIRST_FEATURE@", first_feature
    )


def write_behavior(data: Path) -> None:
    """The source of ``behavior``: two customers, at ``data/behavior.parquet``."""
    pd.DataFrame(
        {
            "customer_id": [1, 2],
            "event_timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"], utc=True),
            "orders": [3, 4],
            "date_of_birth": pd.to_datetime(["1990-01-01", "2000-01-01"]).date,
        }
    ).to_parquet(data / "behavior.parquet")
