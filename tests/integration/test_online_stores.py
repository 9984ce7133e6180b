"""The online stores themselves (real SQLite file, real redis-server, DynamoDB on moto's server):
one behaviour suite."""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.errors import BackendError, InvalidError
from quiver.online import ReadRequest, ViewRead
from quiver.online.dynamodb import DynamoDBOnlineStore
from quiver.online.encoding import NO_CREATED, ViewLayout, datetime_to_us
from quiver.online.redis import RedisOnlineStore
from quiver.online.sqlite import SqliteOnlineStore
from quiver.types import arrow_type

TS = arrow_type("timestamp")
BASE = datetime(2024, 6, 1, tzinfo=UTC)

ALL_TYPES = {
    "i32": "int32",
    "i64": "int64",
    "f32": "float32",
    "f64": "float64",
    "s": "string",
    "b": "bool",
    "t": "timestamp",
    "li": "list<int64>",
    "ls": "list<string>",
    "lt": "list<timestamp>",
}


def layout(
    features: dict[str, str] | None = None,
    keys: dict[str, str] | None = None,
    ttl: timedelta | None = None,
    view: str | None = None,
) -> ViewLayout:
    features = features or {"x": "int64"}
    keys = keys or {"customer_id": "int64"}
    return ViewLayout(
        project="p",
        view=view or f"v_{uuid.uuid4().hex[:8]}",
        join_keys=tuple(keys),
        key_dtypes=tuple(keys.values()),
        feature_names=tuple(features),
        feature_dtypes=tuple(features.values()),
        ttl_us=None if ttl is None else ttl // timedelta(microseconds=1),
    )


def rows(lay: ViewLayout, records: list[dict[str, Any]]) -> pa.Table:
    """An Arrow batch for ``lay`` from dicts (keys, features, event_timestamp, created)."""
    columns: dict[str, pa.Array] = {}
    for name, dtype in zip(lay.join_keys, lay.key_dtypes, strict=True):
        columns[name] = pa.array([r[name] for r in records], type=arrow_type(dtype))
    for name, dtype in zip(lay.feature_names, lay.feature_dtypes, strict=True):
        columns[name] = pa.array([r.get(name) for r in records], type=arrow_type(dtype))
    columns["event_timestamp"] = pa.array([r["event_timestamp"] for r in records], type=TS)
    if any("created_timestamp" in r for r in records):
        columns["created_timestamp"] = pa.array(
            [r.get("created_timestamp") for r in records], type=TS
        )
    return pa.table(columns)


def read(store: Any, lay: ViewLayout, keys: list[tuple], features: list[str] | None = None):
    """Stored rows as ``(event_us, created_us, *values)`` (a store may append items: cut)."""
    names = features or list(lay.feature_names)
    columns = [[k[i] for k in keys] for i in range(len(lay.join_keys))]
    (result,) = store.read([ReadRequest(lay, lay.indices(names), columns)])
    return [None if r is None else tuple(r[: 2 + len(names)]) for r in result]


def dynamodb_store(settings: dict[str, Any], **overrides: Any) -> DynamoDBOnlineStore:
    """A DynamoDB store from ``online_store`` settings (the ``dynamodb_settings`` fixture)."""
    options = {k: v for k, v in settings.items() if k != "type"}
    return DynamoDBOnlineStore(**{**options, **overrides})


@pytest.fixture(params=["sqlite", "redis", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        s: Any = SqliteOnlineStore(tmp_path / "online.db")
    elif request.param == "dynamodb":
        s = dynamodb_store(request.getfixturevalue("dynamodb_settings"))
    else:
        url = request.getfixturevalue("redis_url")
        s = RedisOnlineStore(url, key_prefix=f"t{uuid.uuid4().hex[:6]}")
    yield s
    s.close()


def test_every_dtype_round_trips_with_nulls(store: Any) -> None:
    lay = layout(ALL_TYPES)
    when = BASE + timedelta(microseconds=123)
    full = {
        "customer_id": 1,
        "i32": -(2**31),
        "i64": 2**63 - 1,
        "f32": 0.1,
        "f64": -1.5e300,
        "s": "héllo \x00 wörld",
        "b": False,
        "t": when,
        "li": [1, None, -3],
        "ls": ["a", "", None],
        "lt": [when, None],
        "event_timestamp": BASE,
        "created_timestamp": BASE,
    }
    empty = {"customer_id": 2, "event_timestamp": BASE}
    assert store.write(lay, rows(lay, [full, empty])) == 2
    got = read(store, lay, [(1,), (2,), (3,)])
    expected_full = pa.table({"f32": pa.array([0.1], pa.float32())}).column(0)[0].as_py()
    assert got[0] == (
        datetime_to_us(BASE),
        datetime_to_us(BASE),
        -(2**31),
        2**63 - 1,
        expected_full,
        -1.5e300,
        "héllo \x00 wörld",
        False,
        when,
        [1, None, -3],
        ["a", "", None],
        [when, None],
    )
    assert got[1] == (datetime_to_us(BASE), NO_CREATED, *[None] * len(ALL_TYPES))
    assert got[2] is None
    # A subset of features, in the order asked.
    assert read(store, lay, [(1,)], ["s", "i32"]) == [
        (datetime_to_us(BASE), datetime_to_us(BASE), "héllo \x00 wörld", -(2**31))
    ]


def test_nan_reads_back_as_null_on_every_store(store: Any) -> None:
    lay = layout({"f": "float64"})
    store.write(lay, rows(lay, [{"customer_id": 1, "f": float("nan"), "event_timestamp": BASE}]))
    assert read(store, lay, [(1,)])[0][2] is None


def test_newer_wins_and_rewrites_are_idempotent(store: Any) -> None:
    lay = layout()
    t0, t1 = BASE, BASE + timedelta(hours=1)
    store.write(lay, rows(lay, [{"customer_id": 1, "x": 10, "event_timestamp": t1}]))
    # An older row does not overwrite a newer one, whatever its created timestamp.
    store.write(
        lay,
        rows(lay, [{"customer_id": 1, "x": 0, "event_timestamp": t0, "created_timestamp": t1}]),
    )
    assert read(store, lay, [(1,)])[0][2] == 10
    # Same event time: the greater created timestamp wins; a missing one loses.
    store.write(
        lay,
        rows(lay, [{"customer_id": 1, "x": 11, "event_timestamp": t1, "created_timestamp": t0}]),
    )
    assert read(store, lay, [(1,)])[0][2] == 11
    store.write(lay, rows(lay, [{"customer_id": 1, "x": 12, "event_timestamp": t1}]))
    assert read(store, lay, [(1,)])[0][2] == 11
    # Writing the same row again leaves the same state.
    again = rows(lay, [{"customer_id": 1, "x": 11, "event_timestamp": t1, "created_timestamp": t0}])
    store.write(lay, again)
    store.write(lay, again)
    assert read(store, lay, [(1,)]) == [(datetime_to_us(t1), datetime_to_us(t0), 11)]


@st.composite
def _write_sequences(draw: st.DrawFn) -> list[list[tuple[int, int, int | None, int]]]:
    """Batches of (key, event offset, created offset or None, value)."""
    n = draw(st.integers(1, 40))
    writes = [
        (
            draw(st.integers(0, 4)),
            draw(st.integers(0, 5)),
            draw(st.none() | st.integers(0, 3)),
            i,
        )
        for i in range(n)
    ]
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    bounds = [0, *cuts, n]
    return [writes[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=_write_sequences())
def test_newer_wins_against_a_brute_force_oracle(store: Any, batches: list) -> None:
    lay = layout()  # a fresh view per example: no state leaks between examples
    for batch in batches:
        store.write(
            lay,
            rows(
                lay,
                [
                    {
                        "customer_id": k,
                        "x": v,
                        "event_timestamp": BASE + timedelta(seconds=e),
                        **(
                            {"created_timestamp": BASE + timedelta(seconds=c)}
                            if c is not None
                            else {}
                        ),
                    }
                    for k, e, c, v in batch
                ],
            ),
        )
    # Oracle: per key the greatest (event, created); among exact ties the last write.
    best: dict[int, tuple[int, int, int]] = {}
    for batch in batches:
        for k, e, c, v in batch:
            rank = (e, -(10**9) if c is None else c)
            if k not in best or rank >= best[k][:2]:
                best[k] = (*rank, v)
    got = read(store, lay, [(k,) for k in range(5)])
    for k in range(5):
        if k in best:
            assert got[k] is not None and got[k][2] == best[k][2], (k, best[k], got[k])
        else:
            assert got[k] is None


def test_compound_keys_are_distinct(store: Any) -> None:
    lay = layout({"x": "int64"}, keys={"customer_id": "int64", "merchant_id": "string"})
    records = [
        {"customer_id": c, "merchant_id": m, "x": c * 100 + len(m), "event_timestamp": BASE}
        for c in (1, 2)
        for m in ("a", "ab", "")
    ]
    store.write(lay, rows(lay, records))
    keys = [(r["customer_id"], r["merchant_id"]) for r in records] + [(3, "a"), (1, "b")]
    got = read(store, lay, keys)
    assert [g[2] if g else None for g in got] == [r["x"] for r in records] + [None, None]


def test_schema_versions_and_views_do_not_mix(store: Any) -> None:
    old = layout({"x": "int64"}, view="same")
    new = layout({"x": "int64", "y": "string"}, view="same")
    other = layout({"x": "int64"}, view="other")
    store.write(old, rows(old, [{"customer_id": 1, "x": 1, "event_timestamp": BASE}]))
    store.write(other, rows(other, [{"customer_id": 1, "x": 2, "event_timestamp": BASE}]))
    assert read(store, new, [(1,)]) == [None]  # a changed schema never reads old columns
    assert read(store, other, [(1,)])[0][2] == 2
    store.delete_view(old)
    assert read(store, old, [(1,)]) == [None]
    assert read(store, other, [(1,)])[0][2] == 2


def test_many_keys_and_duplicates_in_one_read(store: Any) -> None:
    lay = layout()
    store.write(
        lay,
        rows(lay, [{"customer_id": i, "x": i, "event_timestamp": BASE} for i in range(0, 3000, 2)]),
    )
    keys = [(i,) for i in range(3000)] + [(4,), (4,)]
    got = read(store, lay, keys)
    assert [g[2] if g else None for g in got] == [
        i if i % 2 == 0 else None for i in range(3000)
    ] + [4, 4]
    assert store.read([]) == []
    assert read(store, lay, []) == []


def test_several_views_in_one_read(store: Any) -> None:
    a, b = layout({"x": "int64"}), layout({"y": "string"})
    store.write(a, rows(a, [{"customer_id": 1, "x": 5, "event_timestamp": BASE}]))
    store.write(b, rows(b, [{"customer_id": 2, "y": "z", "event_timestamp": BASE}]))
    keys = [[1, 2]]
    got = store.read([ReadRequest(a, (0,), keys), ReadRequest(b, (0,), keys)])
    assert [[r[2] if r else None for r in part] for part in got] == [[5, None], [None, "z"]]


KEY_KINDS: dict[str, dict[str, str]] = {
    "int": {"customer_id": "int64"},
    "string": {"merchant_id": "string"},
    "compound": {"customer_id": "int64", "merchant_id": "string"},
    "timestamp": {"day": "timestamp"},
}


def _key_values(kind: str, i: int) -> dict[str, Any]:
    values = {"customer_id": i, "merchant_id": f"m{i}", "day": BASE + timedelta(days=i)}
    return {k: values[k] for k in KEY_KINDS[kind]}


def _physical(kind: str, i: int) -> list[Any]:
    return [
        datetime_to_us(v) if isinstance(v, datetime) else v for v in _key_values(kind, i).values()
    ]


@st.composite
def _multi_view_reads(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int]]:
    """2-4 views (key kind, a feature subset in any order, the keys stored), and the entity
    numbers read (none, one or many; missing and repeated ones)."""
    views = []
    for _ in range(draw(st.integers(2, 4))):
        names = draw(st.lists(st.sampled_from(sorted(ALL_TYPES)), min_size=1, unique=True))
        views.append(
            {
                "kind": draw(st.sampled_from(sorted(KEY_KINDS))),
                "features": {n: ALL_TYPES[n] for n in sorted(names)},
                "read": draw(st.permutations(names)),
                "stored": draw(st.none() | st.sets(st.integers(0, 4), max_size=5)),
            }
        )
    return views, draw(st.lists(st.integers(0, 5), max_size=7))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_multi_view_reads())
def test_several_views_read_together_as_each_view_alone(store: Any, case: tuple) -> None:
    """The SQLite store reads several views with one joined statement: it answers as reading
    every view alone does (missing tables and keys, every dtype, every key kind)."""
    views, entities = case
    requests = []
    for spec in views:
        lay = layout(spec["features"], keys=KEY_KINDS[spec["kind"]])
        if spec["stored"]:  # None: the view was never written (no table)
            records = [
                {
                    **_key_values(spec["kind"], i),
                    **{n: _sample(d, i) for n, d in spec["features"].items()},
                    "event_timestamp": BASE + timedelta(seconds=i),
                }
                for i in sorted(spec["stored"])
            ]
            store.write(lay, rows(lay, records))
        keys = [_physical(spec["kind"], i) for i in entities]
        columns = [[k[j] for k in keys] for j in range(len(lay.join_keys))]
        requests.append(ReadRequest(lay, lay.indices(spec["read"]), columns))

    def cut(parts: list[list[Any]]) -> list[list[Any]]:
        return [
            [None if r is None else tuple(r[: 2 + len(req.features)]) for r in part]
            for part, req in zip(parts, requests, strict=True)
        ]

    together = cut(store.read(requests))
    assert together == cut([store.read([req])[0] for req in requests])
    for part, spec in zip(together, views, strict=True):
        stored = spec["stored"] or set()
        assert [r is not None for r in part] == [i in stored for i in entities]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_multi_view_reads(), one=st.booleans())
def test_a_prepared_reader_answers_as_read(store: Any, case: tuple, one: bool) -> None:
    """``store.reader(views)`` (serving keeps one per resolved request) answers every call as
    ``store.read`` does: views of every key kind taking their keys from the call's columns, one
    entity or any number, tables missing until a write creates them."""
    views, entities = case
    if one:  # the serving hot path: one entity
        entities = entities[:1] or [0]
    if len(views) > 1 and one:  # views sharing one integer key: the prepared statement
        for spec in views:
            spec["kind"] = "int"
    names = list(dict.fromkeys(k for spec in views for k in KEY_KINDS[spec["kind"]]))
    columns = [
        [_physical_of(name, i) for i in entities] for name in names
    ]  # every join key of the call, in first-use order
    prepared, layouts = [], []
    for spec in views:
        lay = layout(spec["features"], keys=KEY_KINDS[spec["kind"]])
        pos = tuple(names.index(k) for k in lay.join_keys)
        layouts.append(lay)
        prepared.append(
            ViewRead(
                lay, lay.indices(spec["read"]), None if pos == tuple(range(len(names))) else pos
            )
        )
    reader = store.reader(prepared)

    def expected() -> list[list[Any]]:
        return store.read(
            [
                ReadRequest(
                    v.layout, v.features, [columns[i] for i in v.key_pos or range(len(names))]
                )
                for v in prepared
            ]
        )

    assert reader(columns) == expected()  # every table missing
    for spec, lay in zip(views, layouts, strict=True):
        if spec["stored"]:
            records = [
                {
                    **_key_values(spec["kind"], i),
                    **{n: _sample(d, i) for n, d in spec["features"].items()},
                    "event_timestamp": BASE + timedelta(seconds=i),
                }
                for i in sorted(spec["stored"])
            ]
            store.write(lay, rows(lay, records))
    if isinstance(store, SqliteOnlineStore):
        for plan in store._read_plans.values():
            plan.retry_at = 0.0  # as if the second of reading view by view had passed
    got = reader(columns)
    assert got == expected()
    for part, spec in zip(got, views, strict=True):
        stored = spec["stored"] or set()
        assert [r is not None for r in part] == [i in stored for i in entities]


def _physical_of(key: str, i: int) -> Any:
    value = {"customer_id": i, "merchant_id": f"m{i}", "day": BASE + timedelta(days=i)}[key]
    return datetime_to_us(value) if isinstance(value, datetime) else value


def test_sqlite_prepared_reader_runs_one_statement_per_entity(tmp_path: Path) -> None:
    store = SqliteOnlineStore(tmp_path / "online.db")
    a, b = layout({"x": "int64", "t": "timestamp"}), layout({"y": "string"})
    store.write(a, rows(a, [{"customer_id": 1, "x": 5, "t": BASE, "event_timestamp": BASE}]))
    store.write(b, rows(b, [{"customer_id": 2, "y": "z", "event_timestamp": BASE}]))
    reader = store.reader([ViewRead(a, (1, 0), None), ViewRead(b, (0,), None)])
    conn = store._conn()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        first, second = reader([[1]]), reader([[2]])
    finally:
        conn.set_trace_callback(None)
    assert sum("SELECT" in sql for sql in statements) == 2
    assert [[r[2:] if r else None for r in part] for part in first] == [[(BASE, 5)], [None]]
    assert [[r[2:] if r else None for r in part] for part in second] == [[None], [("z",)]]
    store.close()
    with pytest.raises(BackendError, match="closed"):
        reader([[1]])


def _sample(dtype: str, i: int) -> Any:
    if i == 3:
        return None  # one stored row with nulls in every feature
    return {
        "int32": i,
        "int64": -i,
        "float32": i + 0.5,
        "float64": i / 3,
        "string": f"s{i}",
        "bool": i % 2 == 0,
        "timestamp": BASE + timedelta(microseconds=i),
        "list<int64>": [i, None],
        "list<string>": ["a", str(i)],
        "list<timestamp>": [BASE, None],
    }[dtype]


def _selects(store: SqliteOnlineStore, requests: list[ReadRequest]) -> tuple[list, int]:
    """``store.read(requests)`` and how many SELECT statements it ran."""
    conn = store._conn()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        got = store.read(requests)
    finally:
        conn.set_trace_callback(None)
    return got, sum(1 for sql in statements if "SELECT" in sql)


def test_sqlite_reads_several_views_with_one_statement(tmp_path: Path) -> None:
    store = SqliteOnlineStore(tmp_path / "online.db")
    a, b, never = layout({"x": "int64"}), layout({"y": "string"}), layout({"z": "int64"})
    store.write(a, rows(a, [{"customer_id": 1, "x": 5, "event_timestamp": BASE}]))
    store.write(b, rows(b, [{"customer_id": 2, "y": "z", "event_timestamp": BASE}]))

    def values(parts: list[list[Any]]) -> list[list[Any]]:
        return [[r[2] if r else None for r in part] for part in parts]

    for keys in ([1], [2, 1, 3, 2]):
        got, selects = _selects(store, [ReadRequest(a, (0,), [keys]), ReadRequest(b, (0,), [keys])])
        assert selects == 1
        assert values(got) == [
            [5 if k == 1 else None for k in keys],
            ["z" if k == 2 else None for k in keys],
        ]
    # More keys than one statement takes: one statement per chunk, the same answer.
    many = list(range(1, 1201))
    got, selects = _selects(store, [ReadRequest(a, (0,), [many]), ReadRequest(b, (0,), [many])])
    assert selects == 3 and values(got) == [[5] + [None] * 1199, [None, "z"] + [None] * 1198]
    # A view never written has no table: views are then read one by one (for a second).
    pair = [ReadRequest(a, (0,), [[1]]), ReadRequest(never, (0,), [[1]])]
    assert values(store.read(pair)) == [[5], [None]]
    store.write(never, rows(never, [{"customer_id": 1, "z": 7, "event_timestamp": BASE}]))
    assert values(store.read(pair)) == [[5], [7]]
    for plan in store._read_plans.values():
        plan.retry_at = 0.0  # as if the second had passed: joined again
    got, selects = _selects(store, pair)
    assert selects == 1 and values(got) == [[5], [7]]
    # Too many columns for one statement: one statement per view.
    wide = [layout({f"f{i}": "int64" for i in range(600)}) for _ in range(2)]
    for lay in wide:
        record = {"customer_id": 1, **{f"f{i}": i for i in range(600)}, "event_timestamp": BASE}
        store.write(lay, rows(lay, [record]))
    got, selects = _selects(store, [ReadRequest(lay, tuple(range(600)), [[1]]) for lay in wide])
    assert selects == 2 and [part[0][2:602] for part in got] == [tuple(range(600))] * 2
    store.close()


def test_bad_batches_change_nothing(store: Any) -> None:
    lay = layout()
    store.write(lay, rows(lay, [{"customer_id": 1, "x": 1, "event_timestamp": BASE}]))
    newer = BASE + timedelta(days=1)
    bad = rows(
        lay,
        [
            {"customer_id": 1, "x": 2, "event_timestamp": newer},
            {"customer_id": 2, "x": 3, "event_timestamp": newer},
        ],
    )
    with pytest.raises(InvalidError):
        store.write(lay, bad.set_column(0, "customer_id", pa.array([1, None])))
    with pytest.raises(InvalidError):
        store.write(lay, bad.drop_columns(["event_timestamp"]))
    assert [r[2] if r else None for r in read(store, lay, [(1,), (2,)])] == [1, None]
    assert store.write(lay, bad.slice(0, 0)) == 0


def test_ping(store: Any) -> None:
    store.ping()


def test_sqlite_reads_never_keep_an_old_snapshot(tmp_path: Path) -> None:
    """Reads reuse one cursor per thread: each read still sees every write committed before it
    (by this store or another process's connection)."""
    reader = SqliteOnlineStore(tmp_path / "online.db")
    writer = SqliteOnlineStore(tmp_path / "online.db")
    a, b = layout({"x": "int64"}), layout({"y": "int64"})
    for step in range(1, 4):
        when = BASE + timedelta(seconds=step)
        writer.write(a, rows(a, [{"customer_id": 1, "x": step, "event_timestamp": when}]))
        writer.write(b, rows(b, [{"customer_id": 1, "y": step, "event_timestamp": when}]))
        for keys in ([[1]], [[1, 1, 2]]):
            got = reader.read([ReadRequest(a, (0,), keys), ReadRequest(b, (0,), keys)])
            assert [part[0][2] for part in got] == [step, step]
            assert read(reader, a, [(1,)])[0][2] == step
    reader.close()
    writer.close()


def test_sqlite_one_writer_many_readers(tmp_path: Path) -> None:
    """Readers in other threads see whole batches only, never errors, while a writer runs."""
    store = SqliteOnlineStore(tmp_path / "online.db")
    lay = layout({"x": "int64", "y": "int64"})
    keys = [(i,) for i in range(200)]
    store.write(
        lay,
        rows(
            lay, [{"customer_id": i, "x": 0, "y": 0, "event_timestamp": BASE} for i in range(200)]
        ),
    )
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        try:
            while not done.is_set():
                got = read(store, lay, keys)
                # Each row's two features come from the same write (x == y).
                assert all(g is not None and g[2] == g[3] for g in got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for step in range(1, 30):
            batch = [
                {
                    "customer_id": i,
                    "x": step,
                    "y": step,
                    "event_timestamp": BASE + timedelta(seconds=step),
                }
                for i in random.sample(range(200), 50)
            ]
            store.write(lay, rows(lay, batch))
    finally:
        done.set()
        for t in threads:
            t.join()
        store.close()
    assert not errors, errors[0]


def test_redis_keys_expire_after_twice_the_ttl(redis_url: str) -> None:
    import redis

    store = RedisOnlineStore(redis_url, key_prefix="exp")
    lay = layout(ttl=timedelta(hours=1))
    now = datetime.now(UTC)
    store.write(
        lay,
        rows(
            lay,
            [
                {"customer_id": 1, "x": 1, "event_timestamp": now},
                {"customer_id": 2, "x": 2, "event_timestamp": now - timedelta(hours=1, minutes=30)},
                {"customer_id": 3, "x": 3, "event_timestamp": now - timedelta(hours=3)},
            ],
        ),
    )
    client = redis.Redis.from_url(redis_url)
    prefix = store.key_prefix_for(lay)
    ttl_ms = [client.pttl(prefix + lay.key_encoder.encode((i,))) for i in (1, 2, 3)]
    assert 7_100_000 < ttl_ms[0] <= 7_200_000  # event time + 2 h
    assert 1_700_000 < ttl_ms[1] <= 1_800_000  # still readable (as expired) for 30 min
    assert ttl_ms[2] == -2  # already past: not written at all
    no_expiry = RedisOnlineStore(redis_url, key_prefix="noexp", expire_with_ttl=False)
    no_expiry.write(lay, rows(lay, [{"customer_id": 1, "x": 1, "event_timestamp": now}]))
    assert client.pttl(no_expiry.key_prefix_for(lay) + lay.key_encoder.encode((1,))) == -1
    store.close()
    no_expiry.close()


def test_redis_unreachable_is_a_backend_error() -> None:
    from _servers import free_port

    store = RedisOnlineStore(f"redis://127.0.0.1:{free_port()}/0")
    lay = layout()
    with pytest.raises(BackendError, match="Redis online store at redis://127"):
        read(store, lay, [(1,)])
    with pytest.raises(BackendError):
        store.ping()


def test_dynamodb_items_expire_after_twice_the_ttl(dynamodb_settings: dict[str, Any]) -> None:
    """As Redis keys do: readable (the caller says ``expired``) until event time + 2 TTL, then
    missing; rows already past that are not written; DynamoDB's TimeToLive reclaims them."""
    store = dynamodb_store(dynamodb_settings)
    lay = layout(ttl=timedelta(hours=1))
    now = datetime.now(UTC)
    store.write(
        lay,
        rows(
            lay,
            [
                {"customer_id": 1, "x": 1, "event_timestamp": now},
                {"customer_id": 2, "x": 2, "event_timestamp": now - timedelta(hours=1, minutes=30)},
                {"customer_id": 3, "x": 3, "event_timestamp": now - timedelta(hours=3)},
            ],
        ),
    )
    assert [r[2] if r else None for r in read(store, lay, [(1,), (2,), (3,)])] == [1, 2, None]
    client = store.client
    table = store.table_name(lay)
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "xp" and ttl["TimeToLiveStatus"] == "ENABLED"
    items = {bytes(i["k"]["B"]): int(i["xp"]["N"]) for i in client.scan(TableName=table)["Items"]}
    prefix = store.key_prefix_for(lay)
    assert set(items) == {prefix + lay.key_encoder.encode((i,)) for i in (1, 2)}
    expected = (now + timedelta(hours=2)).timestamp()
    assert expected <= items[prefix + lay.key_encoder.encode((1,))] <= expected + 1
    # An item still stored past its expiry (DynamoDB deletes late) reads as missing.
    import time as _time

    later = datetime.now(UTC) - timedelta(hours=2, seconds=-3)
    store.write(lay, rows(lay, [{"customer_id": 4, "x": 4, "event_timestamp": later}]))
    assert read(store, lay, [(4,)])[0] is not None
    # ``xp`` holds whole seconds, rounded up
    _time.sleep(max(0.0, (later + timedelta(hours=2) - datetime.now(UTC)).total_seconds()) + 1.1)
    assert read(store, lay, [(4,)]) == [None]
    no_expiry = dynamodb_store(dynamodb_settings, expire_with_ttl=False)
    old = now - timedelta(hours=3)
    no_expiry.write(lay, rows(lay, [{"customer_id": 3, "x": 3, "event_timestamp": old}]))
    assert read(no_expiry, lay, [(3,)])[0][2] == 3
    assert no_expiry.retention_us(lay) is None and store.retention_us(lay) == 2 * lay.ttl_us
    store.close()
    no_expiry.close()


def test_dynamodb_concurrent_writers_keep_the_newest_row(
    dynamodb_settings: dict[str, Any],
) -> None:
    """Writers racing on the same keys (each with its own client and threads): every key ends
    with the row of the greatest event time, whatever order the puts arrive in."""
    lay = layout()
    stores = [dynamodb_store(dynamodb_settings, max_workers=4) for _ in range(3)]
    stores[0].prepare_views([lay])
    errors: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            for step in range(w, 12, 3):
                when = BASE + timedelta(seconds=(step * 7) % 12)  # event times out of order
                batch = [{"customer_id": k, "x": step, "event_timestamp": when} for k in range(10)]
                stores[w].write(lay, rows(lay, batch))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    newest = max(range(12), key=lambda step: (step * 7) % 12)
    got = read(stores[0], lay, [(k,) for k in range(10)])
    assert {r[2] for r in got if r} == {newest} and all(got)
    for s in stores:
        s.close()


def test_dynamodb_tables_are_made_on_prepare_and_dropped_with_the_view(
    dynamodb_settings: dict[str, Any],
) -> None:
    store = dynamodb_store(dynamodb_settings)
    lay = layout()
    table = store.table_name(lay)
    assert table == f"{dynamodb_settings['table_prefix']}p.{lay.view}"
    assert read(store, lay, [(1,)]) == [None]  # no table yet: nothing stored
    store.prepare_views([lay])
    store.prepare_views([lay])  # again: nothing to do
    assert store.client.describe_table(TableName=table)["Table"]["TableStatus"] == "ACTIVE"
    store.write(lay, rows(lay, [{"customer_id": 1, "x": 1, "event_timestamp": BASE}]))
    store.delete_view(lay)
    pages = store.client.get_paginator("list_tables").paginate()
    assert table not in [name for page in pages for name in page["TableNames"]]
    assert read(store, lay, [(1,)]) == [None]
    store.delete_view(lay)  # a view without a table: nothing to drop
    store.write(lay, rows(lay, [{"customer_id": 1, "x": 2, "event_timestamp": BASE}]))
    assert read(store, lay, [(1,)])[0][2] == 2  # the first write made the table again
    store.close()


def test_dynamodb_failures_are_backend_and_config_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from _servers import free_port
    from quiver.errors import ConfigError

    store = DynamoDBOnlineStore(
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        access_key_id="x",
        secret_access_key="x",
    )
    store.client.meta.config.retries = {"max_attempts": 1}
    lay = layout()
    with pytest.raises(BackendError, match=r"DynamoDB online store \(region us-east-1, endpoint"):
        read(store, lay, [(1,)])
    with pytest.raises(BackendError):
        store.ping()
    store.close()
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(ConfigError, match="needs a region"):
        DynamoDBOnlineStore()
