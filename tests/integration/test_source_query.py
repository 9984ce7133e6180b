"""Feature views that read a SQL source query over their own source: checked like any user SQL,
run in the sandbox, and read the same way offline, at materialization and online."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from quiver import Entity, FeatureView, Field, FileSource, InvalidError
from quiver.loader import definitions_from_mapping
from quiver.store import FeatureStore

customer = Entity(name="customer", join_keys=["customer_id"])
SOURCE = FileSource(name="orders_source", path="data/orders.parquet")
QUERY = (
    "SELECT customer_id, event_timestamp, amount, upper(country) AS country_code "
    "FROM orders_source WHERE status = 'paid' "
    "QUALIFY row_number() OVER (PARTITION BY customer_id, event_timestamp ORDER BY amount DESC) = 1"
)
view = FeatureView(
    name="paid_orders",
    entities=[customer],
    source=SOURCE,
    source_query=QUERY,
    schema=[
        Field(name="amount", dtype="float64"),
        Field(name="country_code", dtype="string"),
        Field(name="amount_cents", dtype="int64", transformation="CAST(amount * 100 AS BIGINT)"),
    ],
)


@pytest.fixture
def store(tmp_path: Path) -> FeatureStore:
    (tmp_path / "data").mkdir()
    pd.DataFrame(
        {
            "customer_id": [1, 1, 1, 2, 2],
            "event_timestamp": pd.to_datetime(
                ["2024-01-01", "2024-02-01", "2024-03-01", "2024-01-05", "2024-01-05"], utc=True
            ),
            "amount": [10.0, 20.0, 30.0, 5.0, 7.5],
            "status": ["paid", "paid", "refunded", "paid", "paid"],
            "country": ["de", "de", "fr", "us", "us"],
        }
    ).to_parquet(tmp_path / "data" / "orders.parquet")
    s = FeatureStore(repo_path=tmp_path)
    s.apply([customer, view])
    return s


def test_the_query_result_is_read_the_same_offline_and_online(store: FeatureStore) -> None:
    entity = pd.DataFrame(
        {
            "customer_id": [1, 1, 2, 3],
            "event_timestamp": pd.to_datetime(
                ["2024-01-15", "2024-06-01", "2024-06-01", "2024-06-01"], utc=True
            ),
        }
    )
    rows = store.get_historical_features(entity, ["paid_orders:*"]).to_arrow().to_pylist()
    got = [(r["amount"], r["country_code"], r["amount_cents"]) for r in rows]
    # the refunded order of 2024-03-01 is filtered out; the tie of customer 2 keeps 7.5
    assert got == [(10.0, "DE", 1000), (20.0, "DE", 2000), (7.5, "US", 750), (None, None, None)]
    store.materialize(datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    online = store.get_online_features(
        ["paid_orders:*"], [{"customer_id": 1}, {"customer_id": 2}]
    ).to_dict()
    assert online["amount"] == [20.0, 7.5]
    assert online["country_code"] == ["DE", "US"]
    assert online["amount_cents"] == [2000, 750]
    store.close()


def test_push_to_a_query_view_is_refused(store: FeatureStore) -> None:
    with pytest.raises(InvalidError, match="reads a source query"):
        store.push("paid_orders", [{"customer_id": 1, "amount": 1.0, "country_code": "DE"}])
    store.close()


def test_plan_checks_what_the_query_returns(store: FeatureStore) -> None:
    bad = view.model_copy(
        update={"source_query": "SELECT customer_id, event_timestamp, amount FROM orders_source"}
    )
    with pytest.raises(InvalidError, match="returns no column 'country_code'"):
        store.plan([bad])
    store.close()


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("SELECT * FROM read_parquet('data/orders.parquet')", "table function 'read_parquet'"),
        ("SELECT * FROM other_source", "does not read the view's source 'orders_source'"),
        ("SELECT * FROM main.orders_source", "not a data source name"),
        ("SELECT * FROM (SELECT * FROM orders_source)", "subqueries"),
        ("WITH x AS (SELECT 1) SELECT * FROM orders_source", "WITH"),
        ("SELECT * FROM orders_source UNION ALL SELECT * FROM orders_source", "one SELECT"),
        ("SELECT getenv('HOME') AS h FROM orders_source", "function 'getenv'"),
        ("SELECT * FROM orders_source; COPY orders_source TO 'x.csv'", "one SELECT"),
        ("COPY orders_source TO 'x.csv'", "one SELECT"),
    ],
)
def test_source_queries_are_sandboxed(query: str, named: str) -> None:
    with pytest.raises(InvalidError) as info:
        view.model_validate({**view.to_spec(), "source": "orders_source", "source_query": query})
    assert named in info.value.message


def test_yaml_and_python_source_queries_are_equal() -> None:
    defs = definitions_from_mapping(
        {
            "entities": [customer.to_spec()],
            "data_sources": [SOURCE.to_spec()],
            "feature_views": [
                {
                    "name": "paid_orders",
                    "entities": ["customer"],
                    "source": "orders_source",
                    "source_query": QUERY,
                    "features": [
                        {"name": "amount", "dtype": "float64"},
                        {"name": "country_code", "dtype": "string"},
                        {
                            "name": "amount_cents",
                            "dtype": "int64",
                            "transformation": "CAST(amount * 100 AS BIGINT)",
                        },
                    ],
                }
            ],
        }
    )
    assert defs.feature_views["paid_orders"].to_spec() == view.normalized().to_spec()


def test_a_query_joins_another_registered_source(store: FeatureStore, tmp_path: Path) -> None:
    pd.DataFrame({"code": ["de", "us"], "vat": [0.19, 0.07]}).to_parquet(
        tmp_path / "data" / "countries.parquet"
    )
    countries = FileSource(name="countries", path="data/countries.parquet")
    taxed = FeatureView(
        name="taxed_orders",
        entities=[customer],
        source="orders_source",
        source_query=(
            "SELECT o.customer_id, o.event_timestamp, o.amount * (1 + c.vat) AS gross "
            "FROM orders_source AS o JOIN countries AS c ON o.country = c.code "
            "WHERE o.status = 'paid'"
        ),
        schema=[Field(name="gross", dtype="float64")],
    )
    missing = taxed.model_copy(update={"name": "t2"})
    from quiver.errors import NotFoundError, ReferencedError

    with pytest.raises(NotFoundError, match="reads 'countries', which is not a registered"):
        store.plan([missing])
    store.apply([countries, taxed])
    entity = pd.DataFrame(
        {"customer_id": [1, 2], "event_timestamp": pd.to_datetime(["2024-06-01"] * 2, utc=True)}
    )
    rows = store.get_historical_features(entity, ["taxed_orders:gross"]).to_arrow()
    assert rows.column("gross").to_pylist() == [pytest.approx(23.8), pytest.approx(8.025)]
    store.materialize(datetime(2023, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))
    online = store.get_online_features(
        ["taxed_orders:gross"], [{"customer_id": 1}, {"customer_id": 2}]
    ).to_dict()
    assert online["gross"] == rows.column("gross").to_pylist()
    with pytest.raises(ReferencedError, match="taxed_orders"):
        store.delete("data_source", "countries")
    store.close()
