"""Benchmark: ``get_historical_features(...).to_arrow()`` against hand-written DuckDB ASOF joins.

Synthetic, seeded data under ``bench/_data/`` (generated once, reused):

* ``features_1m``: 100k entities x 10 daily timestamps (jittered), 10 float64 features, Parquet;
* ``features_10m``: 1M entities x 10 timestamps, same columns (``--quick``: 100k x 10);
* entity frames of 100k and 1M rows (random keys, timestamps uniform over the 10 days, a label);
  the 100k frame for the 10M table draws keys from its 1M entities.

Timing: per case, one child process sets up Quiver and the reference(s), warms each up once, then
alternates them for ``--repeat`` rounds (so a busy machine slows both alike). Printed: the medians,
``ratio`` = median(Quiver) / median(reference), and ``paired`` = the median of the per-round
ratios. Peak memory: each implementation runs once more in its own child process, whose peak RSS
comes from ``os.wait4`` (see ``_common.py``); it includes the interpreter, the libraries and the
entity frame.
The reference is the same join written by hand in DuckDB on the same files: an ``ASOF LEFT
JOIN`` per view with the same TTL rule, output in entity-row order (``ORDER BY`` a row number,
as Quiver guarantees). For the 10M table a second reference first filters the feature side to
the entity keys and the time window (a semi-join), the better plan there. Both sides are
checked to return the same values (sum and null count of every feature column).

``--fresh`` (the Spark issue's part 5): the two created-timestamp cases (1M feature rows with a
``created`` column, no ties; 100k and 1M entity rows), each contender alone in a **new
process** per run, timed from before its first import to a pandas DataFrame: Quiver through its
SDK (``FeatureStore(repo_path=...).get_historical_features(table, ["created:*"]).to_df()``), the
hand-written ASOF join without a tie-break, and the same join with the hand-written ``QUALIFY
row_number()`` tie-break, each ending in ``to_arrow_table().to_pandas()``. Every contender reads
the entity frame with the same ``pq.read_table``. One untimed warm-up process per contender
first (bytecode caches written, files in the page cache; the children run without
``PYTHONDONTWRITEBYTECODE``), then ``--repeat`` rounds with the order rotated. Printed per
contender: the wall times, the process CPU seconds (user + system, all threads; steadier than
wall time on a busy machine), the median of each step (imports, setup, join + pandas) and the
peak RSS (``VmHWM``) of each process; then the ratios of the medians.

Run: ``python bench/bench_historical.py`` (or ``--quick`` for small sizes);
``python bench/bench_historical.py --fresh --repeat 9``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import child_main, fmt_bytes, fmt_seconds, median, print_table, run_child, timings

DATA = Path(__file__).resolve().parent / "_data" / "historical"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
DAY_US = 86_400_000_000
N_TS = 10
N_FEATURES = 10
TTL_DAYS = 3


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def _t0_us() -> int:
    return int(T0.timestamp()) * 1_000_000


def make_features(path: Path, entities: int, seed: int, created: bool = False) -> None:
    """``entities`` x 10 rows: key, jittered daily timestamp, 10 float64 features (and with
    ``created``, a created timestamp up to an hour after the event; no two rows of a key share
    an event timestamp, so there are no ties to break)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n = entities * N_TS
    writer = None
    chunk = 100_000  # entities per row group keeps memory low for the 10M table
    try:
        for start in range(0, entities, chunk):
            m = min(chunk, entities - start)
            ids = np.repeat(np.arange(start, start + m, dtype=np.int64), N_TS)
            ts = (
                _t0_us()
                + np.tile(np.arange(N_TS, dtype=np.int64) * DAY_US, m)
                + rng.integers(0, DAY_US // 2, m * N_TS)
            )
            cols: dict[str, Any] = {
                "entity_id": ids,
                "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            }
            for i in range(N_FEATURES):
                cols[f"f{i}"] = rng.standard_normal(m * N_TS)
            if created:
                cols["created"] = pa.array(
                    ts + rng.integers(0, DAY_US // 24, m * N_TS), pa.timestamp("us", tz="UTC")
                )
            table = pa.table(cols)
            if writer is None:
                writer = pq.ParquetWriter(path.with_suffix(".tmp"), table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    os.replace(path.with_suffix(".tmp"), path)
    assert n == pq.read_metadata(path).num_rows


def make_entities(path: Path, rows: int, entities: int, seed: int) -> None:
    """``rows`` entity rows: random keys, timestamps uniform over the 10 days, a label."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "entity_id": rng.integers(0, entities, rows, dtype=np.int64),
            "event_timestamp": pa.array(
                _t0_us() + rng.integers(0, N_TS * DAY_US, rows), pa.timestamp("us", tz="UTC")
            ),
            "label": rng.integers(0, 2, rows, dtype=np.int64),
        }
    )
    pq.write_table(table, path)


def prepare(quick: bool, only: set[str] | None = None) -> dict[str, Any]:
    """Generate (once) the data and a Quiver repo over it; return the case layout.

    ``only``: generate just these feature tables (the others may then be missing)."""
    scale = 10 if quick else 1
    small_entities = 100_000 // scale
    big_entities = 1_000_000 // scale
    folder = DATA / ("quick" if quick else "full")
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "features_1m": (folder / "features_small.parquet", small_entities, 1),
        "features_10m": (folder / "features_big.parquet", big_entities, 2),
        "features_1m_created": (folder / "features_created.parquet", small_entities, 6),
    }
    for name, (path, entities, seed) in files.items():
        if not path.exists() and (only is None or name in only):
            print(f"generating {path.name} ({entities * N_TS:,} rows) ...", flush=True)
            make_features(path, entities, seed, created=name.endswith("_created"))
    frames = {
        "entities_100k": (folder / "entities_small.parquet", 100_000 // scale, small_entities, 3),
        "entities_1m": (folder / "entities_big.parquet", 1_000_000 // scale, small_entities, 4),
        "entities_100k_big": (
            folder / "entities_for_big.parquet",
            100_000 // scale,
            big_entities,
            5,
        ),
    }
    for path, rows, entities, seed in frames.values():
        if not path.exists():
            make_entities(path, rows, entities, seed)
    repo = folder / "repo"
    make_repo(
        repo, files["features_1m"][0], files["features_10m"][0], files["features_1m_created"][0]
    )
    return {
        "repo": str(repo),
        "files": {k: str(v[0]) for k, v in files.items()},
        "frames": {k: str(v[0]) for k, v in frames.items()},
        "rows": {k: v[1] for k, v in frames.items()},
        "feature_rows": {k: v[1] * N_TS for k, v in files.items()},
    }


def make_repo(repo: Path, small: Path, big: Path, created: Path) -> None:
    """A repo with views over the feature tables (10 features; 5 views of 2; and one over the
    table with a created timestamp, which the join breaks ties by)."""
    from datetime import timedelta

    from quiver import Entity, FeatureStore, FeatureView, Field, FileSource
    from quiver.config import load_config

    (repo / "data").mkdir(parents=True, exist_ok=True)
    store = FeatureStore(config=load_config(repo))
    entity = Entity(name="entity", join_keys=["entity_id"])
    src_small = FileSource(name="small", path=str(small))
    src_big = FileSource(name="big", path=str(big))
    src_created = FileSource(name="created", path=str(created), created_timestamp_field="created")
    ttl = timedelta(days=TTL_DAYS)
    fields = [Field(name=f"f{i}", dtype="float64") for i in range(N_FEATURES)]
    objects: list[Any] = [entity, src_small, src_big, src_created]
    objects.append(
        FeatureView(
            name="created", entities=["entity"], features=fields, source=src_created, ttl=ttl
        )
    )
    objects.append(
        FeatureView(name="small", entities=["entity"], features=fields, source=src_small, ttl=ttl)
    )
    objects.append(
        FeatureView(name="big", entities=["entity"], features=fields, source=src_big, ttl=ttl)
    )
    for v in range(5):
        part = fields[2 * v : 2 * v + 2]
        objects.append(
            FeatureView(
                name=f"part{v}", entities=["entity"], features=part, source=src_small, ttl=ttl
            )
        )
    store.apply(objects)
    store.close()


# --------------------------------------------------------------------------------------------
# cases (run in child processes)
# --------------------------------------------------------------------------------------------


def _checksum(table: Any, columns: list[str]) -> dict[str, list[float]]:
    import pyarrow.compute as pc

    out = {}
    for c in columns:
        col = table.column(c)
        total = pc.sum(col).as_py()
        out[c] = [round(total or 0.0, 6), col.null_count]
    return out


def _quiver_runner(args: dict[str, Any], entity: Any) -> Any:
    from quiver import FeatureStore
    from quiver.config import load_config

    store = FeatureStore(config=load_config(args["repo"]))
    refs = args["refs"]
    return lambda: store.get_historical_features(entity, refs).to_arrow()


def _raw_runner(args: dict[str, Any], entity: Any, filtered: bool, tiebreak: bool = False) -> Any:
    import duckdb
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    entity = entity.append_column("rn", pa.array(np.arange(entity.num_rows, dtype=np.int64)))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("e", entity)
    views = [(p, f) for p, f in args["views"]]
    if not filtered:
        sql = raw_sql(views, None, tiebreak)
        return lambda: con.sql(sql).to_arrow_table()

    def run() -> Any:  # the bounds are part of the work, as they would be for a user
        bounds = pc.min_max(entity.column("event_timestamp"))
        lo, hi = (bounds[k].as_py().isoformat() for k in ("min", "max"))
        return con.sql(raw_sql(views, (lo, hi))).to_arrow_table()

    return run


def case_compare(args: dict[str, Any]) -> dict[str, Any]:
    """Time Quiver and the reference(s) in one process, alternating runs (fair under load)."""
    import pyarrow.parquet as pq

    entity = pq.read_table(args["frame"])
    runners = {"quiver": _quiver_runner(args, entity), "raw": _raw_runner(args, entity, False)}
    if args["filtered"]:
        runners["raw_filtered"] = _raw_runner(args, entity, True)
    if args.get("tiebreak"):
        runners["raw_tiebreak"] = _raw_runner(args, entity, False, tiebreak=True)
    results = {name: fn() for name, fn in runners.items()}  # warm-up, and the checks
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for i in range(args["repeat"]):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            times[name] += timings(runners[name], 1, warmup=0)
    checks = {}
    for name, table in results.items():
        feats = [
            c for c in table.column_names if c not in ("entity_id", "event_timestamp", "label")
        ]
        checks[name] = {"rows": table.num_rows, "sums": _checksum(table, feats)}
    return {"times": times["quiver"], "all_times": times, "checks": checks}


def case_memory(args: dict[str, Any]) -> list[float]:
    """One run of one implementation, for its peak RSS."""
    import pyarrow.parquet as pq

    entity = pq.read_table(args["frame"])
    if args["impl"] == "quiver":
        fn = _quiver_runner(args, entity)
    else:
        fn = _raw_runner(
            args, entity, args["impl"] == "raw_filtered", tiebreak=args["impl"] == "raw_tiebreak"
        )
    return timings(fn, 1, warmup=0)


# --------------------------------------------------------------------------------------------
# fresh-process mode: each contender alone in a new interpreter, from imports to pandas
# --------------------------------------------------------------------------------------------

FRESH_IMPLS = ("quiver", "raw", "raw_tiebreak")
"""The contenders of ``--fresh``: Quiver through its SDK, the hand-written ASOF join without a
tie-break, and the same join with the hand-written ``QUALIFY row_number()`` tie-break."""


def case_fresh(args: dict[str, Any]) -> dict[str, Any]:
    """One contender, once, in this fresh process: imports, setup, join, ``to_pandas``.

    The clock starts before the first import of anything the contender needs (pandas, pyarrow,
    duckdb, quiver: this process has loaded only the standard library), so the imports, the
    setup (Quiver's config and registry, DuckDB's connection) and the first query's costs are
    all in the total, as for a user's script. The entity frame is read from Parquet into a
    pyarrow Table by the same call in every contender; the result is a pandas DataFrame.
    """
    import time

    heavy = [m for m in ("pandas", "pyarrow", "duckdb", "numpy", "quiver") if m in sys.modules]
    assert not heavy, f"the child already imported {heavy}"
    t0 = time.perf_counter()
    marks: dict[str, float] = {}
    if args["impl"] == "quiver":
        import pyarrow.parquet as pq

        from quiver import FeatureStore

        marks["import"] = time.perf_counter()
        entity = pq.read_table(args["frame"])
        store = FeatureStore(repo_path=args["repo"])
        marks["setup"] = time.perf_counter()
        df = store.get_historical_features(entity, args["refs"]).to_df()
    else:
        import duckdb
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        marks["import"] = time.perf_counter()
        entity = pq.read_table(args["frame"])
        entity = entity.append_column("rn", pa.array(np.arange(entity.num_rows, dtype=np.int64)))
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("e", entity)
        marks["setup"] = time.perf_counter()
        sql = raw_sql(args["views"], None, tiebreak=args["impl"] == "raw_tiebreak")
        df = con.sql(sql).to_arrow_table().to_pandas()
    end = time.perf_counter()
    marks["query"] = end
    feats = [c for c in df.columns if c not in ("entity_id", "event_timestamp", "label")]
    sums = {c: [round(float(df[c].sum()), 6), int(df[c].isna().sum())] for c in feats}
    steps, last = {}, t0
    for name, t in marks.items():
        steps[name], last = t - last, t
    return {
        "times": [end - t0],
        "steps": steps,
        "check": {"rows": len(df), "sums": sums, "tz": str(df["event_timestamp"].dtype)},
    }


def run_fresh(layout: dict[str, Any], opts: argparse.Namespace) -> None:
    """``--fresh``: each contender in its own new process, ``--repeat`` rounds, interleaved."""
    files, frames, rows = layout["files"], layout["frames"], layout["rows"]
    feats = [f"f{i}" for i in range(N_FEATURES)]
    impls = [i for i in FRESH_IMPLS if not opts.impls or i in opts.impls]
    print(
        f"bench_historical --fresh: {opts.repeat} rounds, each contender in a fresh process per "
        f"round (order rotated) after one warm-up each, from imports to a pandas DataFrame; "
        f"{os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    # A fresh process, as a user's script starts: with the bytecode caches an install writes
    # (with PYTHONDONTWRITEBYTECODE every process would compile every module from source).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    table_rows = []
    for frame in ("entities_100k", "entities_1m"):
        args = {
            "frame": frames[frame],
            "repo": layout["repo"],
            "refs": ["created:*"],
            "views": [(files["features_1m_created"], feats)],
        }
        label = f"{rows[frame] // 1000}k entity rows"
        if rows[frame] >= 1_000_000:
            label = f"{rows[frame] / 1e6:g}M entity rows"
        for impl in impls:  # warm-up: bytecode caches written, files in the page cache
            run_child(__file__, "case_fresh", {**args, "impl": impl}, env=env)
        times: dict[str, list[float]] = {i: [] for i in impls}
        peaks: dict[str, list[int]] = {i: [] for i in impls}
        cpus: dict[str, list[float]] = {i: [] for i in impls}
        steps: dict[str, list[dict[str, float]]] = {i: [] for i in impls}
        checks: dict[str, Any] = {}
        for r in range(opts.repeat):
            order = impls[r % len(impls) :] + impls[: r % len(impls)]
            for impl in order:
                res = run_child(__file__, "case_fresh", {**args, "impl": impl}, env=env)
                times[impl] += res.times
                peaks[impl].append(res.peak_rss)
                cpus[impl].append(res.cpu)
                steps[impl].append(res.extra["steps"])
                checks[impl] = res.extra["check"]
        for impl in impls:
            step = {k: median([s[k] for s in steps[impl]]) for k in steps[impl][0]}
            print(
                f"  {label} {impl}: total {[round(t, 3) for t in times[impl]]}; "
                f"process CPU {[round(t, 2) for t in cpus[impl]]}; median steps "
                + ", ".join(f"{k} {fmt_seconds(v)}" for k, v in step.items())
                + f"; peak {[round(p / 2**20) for p in peaks[impl]]} MiB",
                flush=True,
            )
        if "quiver" not in impls:
            continue
        q = checks["quiver"]
        for ref in [i for i in impls if i != "quiver"]:
            c = checks[ref]
            same = c["rows"] == q["rows"] and c["tz"] == q["tz"] and _same(c["sums"], q["sums"])
            table_rows.append(
                [
                    label,
                    ref,
                    fmt_seconds(median(times["quiver"])),
                    fmt_seconds(median(times[ref])),
                    f"{median(times['quiver']) / median(times[ref]):.2f}x",
                    fmt_bytes(median(peaks["quiver"])),
                    fmt_bytes(median(peaks[ref])),
                    f"{median(peaks['quiver']) / median(peaks[ref]):.2f}x",
                    f"{median(cpus['quiver']) / median(cpus[ref]):.2f}x",
                    "yes" if same else "NO",
                ]
            )
    print()
    print_table(
        [
            "case",
            "reference",
            "quiver",
            "reference",
            "ratio",
            "quiver peak",
            "ref peak",
            "peak ratio",
            "CPU ratio",
            "same",
        ],
        table_rows,
    )


def raw_sql(
    views: list[tuple[str, list[str]]], bounds: tuple[str, str] | None, tiebreak: bool = False
) -> str:
    """The hand-written reference: one ASOF LEFT JOIN per view, TTL rule, entity-row order.

    With ``tiebreak``, the feature rows first keep the greatest ``created`` per key and event
    timestamp (``QUALIFY row_number()``), as one writes the tie-break by hand.

    With ``bounds`` (the entity table's min and max timestamp), the feature side is first cut to
    the time window ``(min - ttl, max]`` (literals, so DuckDB prunes row groups) and semi-joined
    to the entity keys.
    """
    ctes = []
    joins = []
    outs = []
    for v, (path, feats) in enumerate(views):
        cols = ", ".join(["entity_id", "event_timestamp", *feats])
        src = f"SELECT {cols} FROM read_parquet('{path}')"
        if tiebreak:
            src = (
                f"SELECT {cols}, created FROM read_parquet('{path}') QUALIFY row_number() OVER "
                "(PARTITION BY entity_id, event_timestamp ORDER BY created DESC) = 1"
            )
        if bounds is not None:
            lo, hi = bounds
            src += (
                f" WHERE event_timestamp <= TIMESTAMPTZ '{hi}'"
                f" AND event_timestamp > TIMESTAMPTZ '{lo}' - INTERVAL {TTL_DAYS} DAY"
            )
            src = (
                f"SELECT s.* FROM ({src}) s SEMI JOIN (SELECT DISTINCT entity_id FROM e) k"
                " ON s.entity_id = k.entity_id"
            )
        ctes.append(f"f{v} AS ({src})")
        joins.append(
            f"ASOF LEFT JOIN f{v} ON e.entity_id = f{v}.entity_id"
            f" AND e.event_timestamp >= f{v}.event_timestamp"
        )
        for f in feats:
            outs.append(
                f"CASE WHEN f{v}.event_timestamp > e.event_timestamp - INTERVAL {TTL_DAYS} DAY"
                f" THEN f{v}.{f} END AS {f}"
            )
    return (
        "WITH "
        + ", ".join(ctes)
        + " SELECT e.entity_id, e.event_timestamp, e.label, "
        + ", ".join(outs)
        + " FROM e "
        + " ".join(joins)
        + " ORDER BY e.rn"
    )


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (10x smaller)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case (default 5)")
    parser.add_argument("--only", nargs="*", help="run only these cases (by label prefix)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="the created-timestamp cases with each contender in a fresh process, to pandas",
    )
    parser.add_argument(
        "--impls", nargs="*", choices=FRESH_IMPLS, help="with --fresh: only these contenders"
    )
    opts = parser.parse_args()
    if opts.fresh:
        run_fresh(prepare(opts.quick, only={"features_1m_created"}), opts)
        return
    layout = prepare(opts.quick)
    files, frames, rows = layout["files"], layout["frames"], layout["rows"]
    feats = [f"f{i}" for i in range(N_FEATURES)]
    suffix = " (quick: /10)" if opts.quick else ""

    def rows_label(n: int) -> str:
        return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n // 1000}k"

    small_rows = rows_label(layout["feature_rows"]["features_1m"])
    big_rows = rows_label(layout["feature_rows"]["features_10m"])
    cases: list[dict[str, Any]] = []
    for frame in ("entities_100k", "entities_1m"):
        cases.append(
            {
                "label": f"{small_rows} features x {rows_label(rows[frame])} entity rows",
                "frame": frames[frame],
                "refs": ["small:*"],
                "views": [(files["features_1m"], feats)],
                "refs_filtered": False,
            }
        )
    cases.append(
        {
            "label": f"{big_rows} features x {rows_label(rows['entities_100k_big'])} entity rows",
            "frame": frames["entities_100k_big"],
            "refs": ["big:*"],
            "views": [(files["features_10m"], feats)],
            "refs_filtered": True,
        }
    )
    for frame in ("entities_100k", "entities_1m"):
        cases.append(
            {
                "label": f"{small_rows} features with created x {rows_label(rows[frame])} "
                "entity rows",
                "frame": frames[frame],
                "refs": ["created:*"],
                "views": [(files["features_1m_created"], feats)],
                "refs_filtered": False,
                "tiebreak": True,
            }
        )
    for n_views in (2, 5):
        cases.append(
            {
                "label": f"{n_views} views ({small_rows} each) x "
                f"{rows_label(rows['entities_100k'])} entity rows",
                "frame": frames["entities_100k"],
                "refs": [f"part{v}:*" for v in range(n_views)],
                "views": [(files["features_1m"], feats[2 * v : 2 * v + 2]) for v in range(n_views)],
                "refs_filtered": False,
            }
        )
    if opts.only:
        cases = [c for c in cases if any(c["label"].startswith(o) for o in opts.only)]

    print(
        f"bench_historical{suffix}: {opts.repeat} timed runs per implementation after 1 warm-up, "
        f"alternating; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    table_rows = []
    for case in cases:
        common = {
            "frame": case["frame"],
            "repeat": opts.repeat,
            "repo": layout["repo"],
            "refs": case["refs"],
            "views": case["views"],
            "filtered": case["refs_filtered"],
            "tiebreak": case.get("tiebreak", False),
        }
        res = run_child(__file__, "case_compare", common)
        all_times, checks = res.extra["all_times"], res.extra["checks"]
        peaks = {
            impl: run_child(__file__, "case_memory", {**common, "impl": impl}).peak_rss
            for impl in all_times
        }
        q = all_times["quiver"]
        for ref in [n for n in all_times if n != "quiver"]:
            r = all_times[ref]
            same = checks[ref]["rows"] == checks["quiver"]["rows"] and _same(
                checks[ref]["sums"], checks["quiver"]["sums"]
            )
            ratio = median(q) / median(r)
            paired = median([a / b for a, b in zip(q, r, strict=True)])
            name = {
                "raw": "raw ASOF",
                "raw_filtered": "raw filtered ASOF",
                "raw_tiebreak": "raw ASOF + tie-break",
            }[ref]
            table_rows.append(
                [
                    case["label"],
                    name,
                    fmt_seconds(median(q)),
                    fmt_seconds(median(r)),
                    f"{ratio:.2f}x",
                    f"{paired:.2f}x",
                    fmt_bytes(peaks["quiver"]),
                    fmt_bytes(peaks[ref]),
                    "yes" if same else "NO",
                ]
            )
            print(
                f"  {case['label']} vs {name}: quiver {[round(t, 3) for t in q]}, "
                f"reference {[round(t, 3) for t in r]}",
                flush=True,
            )
    print()
    print_table(
        [
            "case",
            "reference",
            "quiver",
            "reference",
            "ratio",
            "paired",
            "quiver peak",
            "ref peak",
            "same",
        ],
        table_rows,
    )


def _same(a: dict[str, list[float]], b: dict[str, list[float]]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(
        a[k][1] == b[k][1] and math.isclose(a[k][0], b[k][0], rel_tol=1e-9, abs_tol=1e-6) for k in a
    )


if __name__ == "__main__":
    if not child_main(globals()):
        main()
