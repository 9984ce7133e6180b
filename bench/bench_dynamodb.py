"""Benchmark: the DynamoDB online store's writes and reads against plain boto3, on moto's server.

moto (started here on loopback, as the tests do) stands in for DynamoDB and is slow (~1-15 ms
a request, all of it in one Python process), so absolute numbers say little about AWS; the
point is Quiver's overhead over plain boto3 doing the same requests to the same server.

Data: ``--entities`` rows (default 5,000), 10 features (4 int64, 4 float64, 2 string), one view.

Writes (one child process, the three in turn, each into a fresh table, ``--repeat`` times):

- Quiver: ``DynamoDBOnlineStore.write(layout, arrow_table)``: validation, encoding, the newest
  row per key, one conditional ``PutItem`` per row on 8 threads;
- reference, the same requests: the same items prebuilt, conditional ``PutItem`` on 8 threads;
- reference, unconditional: the same items with ``BatchWriteItem`` (25 a request) on 8
  threads: faster, but it could put an older row over a newer one (why Quiver does not use it).

Reads (one child process per size; ``--calls`` calls of 1 and of 100 random keys after 20
warm-up calls, the three reads in turn on the same keys):

- Quiver: ``FeatureStore.get_online_features`` (validation, ``BatchGetItem``, decoding, statuses,
  the response) and the store's own ``read`` (``BatchGetItem`` + decoding);
- reference: one plain boto3 ``BatchGetItem`` of the same keys (no decoding).

Run: ``python bench/bench_dynamodb.py [--quick] [--entities 5000] [--calls 200]``.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "_data" / "dynamodb"
sys.path.insert(0, str(HERE.parent / "tests"))  # the moto server helper the tests use
sys.path.insert(0, str(HERE))

from _common import child_main, fmt_bytes, fmt_seconds, median, print_table, run_child  # noqa: E402

WORKERS = 8
CONDITION = "attribute_not_exists(#k) OR #ts < :ts OR (#ts = :ts AND #cts <= :cts)"
INT_FEATURES = ["f_int_0", "f_int_1", "f_int_2", "f_int_3"]
FLOAT_FEATURES = ["f_float_0", "f_float_1", "f_float_2", "f_float_3"]
STR_FEATURES = ["f_str_0", "f_str_1"]
FEATURES = INT_FEATURES + FLOAT_FEATURES + STR_FEATURES
DTYPES = {**dict.fromkeys(INT_FEATURES, "int64"), **dict.fromkeys(FLOAT_FEATURES, "float64")}
DTYPES.update(dict.fromkeys(STR_FEATURES, "string"))


def settings(endpoint: str, prefix: str) -> dict[str, Any]:
    return {
        "type": "dynamodb",
        "endpoint_url": endpoint,
        "region": "us-east-1",
        "access_key_id": "test",
        "secret_access_key": "test",
        "table_prefix": prefix,
        "max_workers": WORKERS,
    }


def client(endpoint: str) -> Any:
    import boto3
    import botocore.config

    return boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=botocore.config.Config(max_pool_connections=2 * WORKERS),
    )


def build_data(entities: int) -> Any:
    """One row per entity, event times in the last day."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(7)
    now_us = int(time.time() * 1e6)
    columns: dict[str, Any] = {
        "customer_id": np.arange(1, entities + 1, dtype=np.int64),
        "event_timestamp": pa.array(
            now_us - rng.integers(0, 86_400 * 10**6, size=entities), pa.timestamp("us", tz="UTC")
        ),
    }
    for name in INT_FEATURES:
        columns[name] = rng.integers(0, 10**6, size=entities)
    for name in FLOAT_FEATURES:
        columns[name] = rng.random(entities)
    for name in STR_FEATURES:
        columns[name] = pa.array([f"s{v}" for v in rng.integers(0, 10**6, size=entities)])
    return pa.table(columns)


def layout() -> Any:
    from quiver.online.encoding import ViewLayout

    return ViewLayout(
        project="bench",
        view="wide",
        join_keys=("customer_id",),
        key_dtypes=("int64",),
        feature_names=tuple(FEATURES),
        feature_dtypes=tuple(DTYPES[f] for f in FEATURES),
    )


def prebuilt_items(table: Any) -> list[dict[str, Any]]:
    """The items Quiver writes for ``table``, built outside the timing (for the references)."""
    from quiver.online.encoding import prepare_write

    lay = layout()
    cols = prepare_write(lay, table)
    values = lay.row_codec.encode_arrow(cols.features, cols.event_us, cols.created_us)
    prefix = lay.version.encode() + b"#"
    return [
        {
            "k": {"B": prefix + k},
            "ts": {"N": str(e)},
            "cts": {"N": str(c)},
            "v": {"B": v},
        }
        for k, e, c, v in zip(cols.keys, cols.event_us, cols.created_us, values, strict=True)
    ]


def conditional_puts(boto: Any, name: str, part: list[dict[str, Any]]) -> None:
    """The reference write: one conditional ``PutItem`` per item."""
    for item in part:
        with contextlib.suppress(boto.exceptions.ConditionalCheckFailedException):
            boto.put_item(
                TableName=name,
                Item=item,
                ConditionExpression=CONDITION,
                ExpressionAttributeNames={"#k": "k", "#ts": "ts", "#cts": "cts"},
                ExpressionAttributeValues={":ts": item["ts"], ":cts": item["cts"]},
            )


def batch_write(boto: Any, name: str, part: list[dict[str, Any]]) -> None:
    """The unconditional reference write: one ``BatchWriteItem`` of up to 25 items."""
    request = {name: [{"PutRequest": {"Item": item}} for item in part]}
    while request:
        request = boto.batch_write_item(RequestItems=request)["UnprocessedItems"]


# -- cases (each in a child process) ----------------------------------------------------------


def case_write(args: dict[str, Any]) -> dict[str, Any]:
    """Quiver's write and the two reference writes, in turn, each into a fresh table."""
    from quiver.online.dynamodb import DynamoDBOnlineStore

    table = build_data(args["entities"])
    endpoint = args["endpoint"]
    items = prebuilt_items(table)
    boto = client(endpoint)
    out: dict[str, Any] = {"quiver": [], "put": [], "batch": []}
    for _ in range(args["repeat"]):
        for kind in out:
            prefix = f"w{uuid.uuid4().hex[:8]}."
            opts = {k: v for k, v in settings(endpoint, prefix).items() if k != "type"}
            store = DynamoDBOnlineStore(**opts)
            store.prepare_views([layout()])  # the table, outside the timing
            name = store.table_name(layout())
            start = time.perf_counter()
            if kind == "quiver":
                store.write(layout(), table)
            elif kind == "put":
                step = -(-len(items) // WORKERS)
                parts = [items[i : i + step] for i in range(0, len(items), step)]
                with ThreadPoolExecutor(WORKERS) as pool:
                    list(pool.map(partial(conditional_puts, boto, name), parts))
            else:
                parts = [items[i : i + 25] for i in range(0, len(items), 25)]
                with ThreadPoolExecutor(WORKERS) as pool:
                    list(pool.map(partial(batch_write, boto, name), parts))
            out[kind].append(time.perf_counter() - start)
            store.close()
    out["times"] = out["quiver"]
    return out


def case_read(args: dict[str, Any]) -> dict[str, Any]:
    """Quiver's two reads and the plain ``BatchGetItem``, called in turn on the same keys."""
    from quiver import FeatureStore
    from quiver.online import ReadRequest

    endpoint, size = args["endpoint"], args["size"]
    rng = random.Random(11)
    key_sets = [rng.sample(range(1, args["entities"] + 1), size) for _ in range(args["calls"] + 20)]
    store = FeatureStore(args["repo"])
    refs = [f"wide:{f}" for f in FEATURES]
    online = store.online_store
    lay = layout()
    every = tuple(range(len(FEATURES)))
    boto = client(endpoint)
    prefix = lay.version.encode() + b"#"
    name = f"{args['prefix']}bench.wide"

    def sdk(keys: list[int]) -> Any:
        return store.get_online_features(refs, [{"customer_id": k} for k in keys])

    def read(keys: list[int]) -> Any:
        return online.read([ReadRequest(lay, every, [keys])])

    def reference(keys: list[int]) -> Any:
        request = {name: {"Keys": [{"k": {"B": prefix + k.to_bytes(8, "big")}} for k in keys]}}
        found = []
        while request:
            reply = boto.batch_get_item(RequestItems=request)
            found += reply["Responses"].get(name, [])
            request = reply["UnprocessedKeys"]
        return found

    calls = {"sdk": sdk, "store": read, "boto3": reference}
    out: dict[str, Any] = {kind: [] for kind in calls}
    for i, keys in enumerate(key_sets):
        for kind, call in calls.items():
            start = time.perf_counter()
            call(keys)
            if i >= 20:  # after the warm-up
                out[kind].append(time.perf_counter() - start)
    out["times"] = out["sdk"]
    return out


def build_repo(root: Path, online: dict[str, Any], table: Any) -> None:
    import pyarrow.parquet as pq
    import yaml

    from quiver import Entity, FeatureStore, FeatureView, Field, FileSource

    if root.exists():
        shutil.rmtree(root)
    (root / "data").mkdir(parents=True)
    pq.write_table(table, root / "data" / "source.parquet")
    config = {
        "project": "bench",
        "definitions": [],
        "registry": {"url": "sqlite:///data/registry.db"},
        "online_store": online,
    }
    (root / "quiver.yaml").write_text(yaml.safe_dump(config))
    customer = Entity(name="customer", join_keys=["customer_id"])
    source = FileSource(name="source", path="data/source.parquet")
    view = FeatureView(
        name="wide",
        entities=[customer],
        features=[Field(name=f, dtype=DTYPES[f]) for f in FEATURES],
        source=source,
    )
    with FeatureStore(root) as store:
        store.apply([customer, source, view])
        now = datetime.now(UTC) + timedelta(seconds=1)
        store.materialize(now - timedelta(days=2), now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 entities, fewer calls")
    parser.add_argument("--entities", type=int, default=5_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    if opts.quick:
        opts.entities, opts.calls, opts.repeat = 1_000, 50, 2

    from _servers import start_moto

    server = start_moto()
    try:
        endpoint = server.endpoint
        print(f"moto on {endpoint}; {opts.entities:,} entities, 10 features, {WORKERS} threads\n")
        rows = []
        base = {"endpoint": endpoint, "entities": opts.entities, "repeat": opts.repeat}
        written = run_child(__file__, "case_write", base)
        ours = median(written.extra["quiver"])
        for kind, label in (
            ("quiver", "write: Quiver (conditional PutItem)"),
            ("put", "write: boto3 conditional PutItem"),
            ("batch", "write: boto3 BatchWriteItem (unconditional)"),
        ):
            t = median(written.extra[kind])
            ratio = "" if kind == "quiver" else f"{ours / t:.2f}x"
            rows.append([label, fmt_seconds(t), f"{opts.entities / t:,.0f}", ratio])
        prefix = f"r{uuid.uuid4().hex[:8]}."
        repo = DATA / "repo"
        build_repo(repo, settings(endpoint, prefix), build_data(opts.entities))
        peaks = [f"writes: {fmt_bytes(written.peak_rss)}"]
        for size in (1, 100):
            args = {**base, "calls": opts.calls, "size": size, "repo": str(repo), "prefix": prefix}
            read = run_child(__file__, "case_read", args)
            peaks.append(f"reads of {size}: {fmt_bytes(read.peak_rss)}")
            ref = median(read.extra["boto3"])
            for kind, label in (
                ("sdk", "get_online_features"),
                ("store", "DynamoDBOnlineStore.read"),
                ("boto3", "boto3 BatchGetItem"),
            ):
                t = median(read.extra[kind])
                ratio = "" if kind == "boto3" else f"{t / ref:.2f}x"
                case = f"read {size} key(s): {label}"
                rows.append([case, fmt_seconds(t), f"{size / t:,.0f}", ratio])
        print_table(["case", "median", "rows/s", "Quiver / reference"], rows)
        print("\npeak RSS of the child processes: " + ", ".join(peaks))
        print(
            "\nwrite ratios: Quiver's time over each reference's; read ratios: each Quiver call's "
            "time over the plain BatchGetItem's."
        )
    finally:
        server.stop()
        shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    if child_main(globals()):
        raise SystemExit
    main()
