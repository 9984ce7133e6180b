"""File sources on S3 (through ``pyarrow.fs``), against moto's S3 server on loopback.

Moto is the one stand-in server the project accepts: it speaks the S3 protocol over real HTTP, so
the code under test (pyarrow's S3 filesystem) runs unchanged.
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from _servers import MotoServer
from quiver import Entity, FeatureStore, FeatureView, Field, FileSource, NotFoundError
from quiver.config import load_config

T0 = datetime(2024, 5, 1, tzinfo=UTC)
UTC_US = pa.timestamp("us", tz="UTC")
BUCKET = "quiver-test"


@pytest.fixture(scope="module")
def s3_endpoint(moto_server: MotoServer) -> str:
    """The session's moto server (tests/_servers.py), with the test bucket."""
    moto_server.client("s3").create_bucket(Bucket=BUCKET)
    return moto_server.endpoint


def _client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )


def put(endpoint: str, key: str, body: bytes) -> None:
    _client(endpoint).put_object(Bucket=BUCKET, Key=key, Body=body)


def parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def csv_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pacsv.write_csv(table, buf)
    return buf.getvalue()


def rows(customer: list[int], hours: list[float], orders: list[int]) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array(customer, pa.int64()),
            "event_timestamp": pa.array([T0 + timedelta(hours=x) for x in hours], UTC_US),
            "orders": pa.array(orders, pa.int64()),
        }
    )


def make_store(tmp_path: Path, settings: dict[str, Any]) -> FeatureStore:
    (tmp_path / "data").mkdir(exist_ok=True)
    return FeatureStore(config=load_config(tmp_path, **settings))


def view_for(source: FileSource) -> FeatureView:
    return FeatureView(
        name=source.name + "_view",
        entities=["customer"],
        features=[Field(name="orders", dtype="int64")],
        source=source,
    )


customer = Entity(name="customer", join_keys=["customer_id"])


def s3_settings(endpoint: str) -> dict[str, Any]:
    return {
        "s3": {
            "endpoint_url": endpoint,
            "region": "us-east-1",
            "access_key_id": "test",
            "secret_access_key": "test",
        }
    }


def test_parquet_csv_directories_and_entity_df_on_s3(s3_endpoint: str, tmp_path: Path) -> None:
    put(s3_endpoint, "one/stats.parquet", parquet_bytes(rows([1, 1], [0, 2], [10, 20])))
    put(s3_endpoint, "csv/stats.csv", csv_bytes(rows([1, 2], [0, 1], [7, 8])))
    put(s3_endpoint, "hive/day=1/part.parquet", parquet_bytes(rows([1], [0], [1])))
    put(s3_endpoint, "hive/day=2/part.parquet", parquet_bytes(rows([1, 2], [24, 24], [2, 5])))
    put(s3_endpoint, "hive/_SUCCESS", b"")
    ents = pa.table(
        {
            "customer_id": pa.array([1, 2, 1], pa.int64()),
            "event_timestamp": pa.array([T0 + timedelta(hours=x) for x in (1, 30, 30)], UTC_US),
        }
    )
    put(s3_endpoint, "labels/entities.parquet", parquet_bytes(ents))

    store = make_store(tmp_path, s3_settings(s3_endpoint))
    sources = [
        FileSource(name="pq", path=f"s3://{BUCKET}/one/stats.parquet"),
        FileSource(name="csv", path=f"s3://{BUCKET}/csv/stats.csv"),
        FileSource(name="hive", path=f"s3://{BUCKET}/hive/"),
        FileSource(name="glob", path=f"s3://{BUCKET}/hive/*/*.parquet"),
    ]
    store.apply([customer, *sources, *(view_for(s) for s in sources)])
    out = store.get_historical_features(
        f"s3://{BUCKET}/labels/entities.parquet",
        [f"{s.name}_view:orders" for s in sources],
        full_feature_names=True,
    ).to_arrow()
    assert out.column("pq_view__orders").to_pylist() == [10, None, 20]
    assert out.column("csv_view__orders").to_pylist() == [7, 8, 7]
    assert out.column("hive_view__orders").to_pylist() == [1, 5, 2]
    assert out.column("glob_view__orders").to_pylist() == [1, 5, 2]


def test_credentials_from_aws_environment(
    s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(s3_endpoint, "env/stats.parquet", parquet_bytes(rows([1], [0], [42])))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    store = make_store(tmp_path, {})
    src = FileSource(name="env", path=f"s3://{BUCKET}/env/stats.parquet")
    store.apply([customer, src, view_for(src)])
    ents = pa.table(
        {"customer_id": [1], "event_timestamp": pa.array([T0 + timedelta(hours=1)], UTC_US)}
    )
    out = store.get_historical_features(ents, ["env_view:orders"]).to_arrow()
    assert out.column("orders").to_pylist() == [42]


def test_missing_s3_object_is_not_found(s3_endpoint: str, tmp_path: Path) -> None:
    store = make_store(tmp_path, s3_settings(s3_endpoint))
    src = FileSource(name="gone", path=f"s3://{BUCKET}/nothing/here.parquet")
    store.apply([customer, src, view_for(src)])
    ents = pa.table({"customer_id": [1], "event_timestamp": pa.array([T0], UTC_US)})
    with pytest.raises(
        NotFoundError, match=r"data source 'gone'.*s3://quiver-test/nothing/here.parquet"
    ):
        store.get_historical_features(ents, ["gone_view:orders"]).to_arrow()
