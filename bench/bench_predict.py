"""Batch prediction of 1M rows with a LightGBM model: Quiver against a hand-written reference.

Both sides score the same input (entity keys + timestamps, Parquet) with the same model file and
write Parquet:

- **quiver**: ``FeatureStore.predict_batch(model, input.parquet, output.parquet)``: the input is
  streamed in chunks, each chunk gets its features with the point-in-time join, is encoded with
  the model's stored encoding and scored; the job is recorded in the registry.
- **reference**: the same point-in-time join written by hand in DuckDB (one ``ASOF LEFT JOIN`` per
  feature view, TTL applied), the whole result as one pandas frame, categorical columns coded
  with the model's categories, ``Booster.predict`` on the frame, then ``pyarrow.parquet``.

Each case runs in its own child process (peak RSS measured by the kernel) with a warm-up run
first; the reference's predictions are checked against Quiver's. Run::

    python bench/bench_predict.py                # 1M rows (the target: within 1.3x)
    python bench/bench_predict.py --rows 200000 --repeat 1
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import child_main, fmt_bytes, fmt_seconds, median, print_table, run_child, timings

TARGET_RATIO = 1.3
DEMO_END = datetime(2026, 1, 1, tzinfo=UTC)


# -- set-up (parent process) ----------------------------------------------------------------


def build_repo(root: Path, customers: int, rows: int, seed: int) -> dict[str, Any]:
    """A demo repo, a LightGBM model trained on it, and an input table of ``rows`` rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from quiver.demo import FEATURES_TEMPLATE, generate_demo_data
    from quiver.store import FeatureStore

    generate_demo_data(root / "data", customers=customers, seed=seed, end=DEMO_END)
    (root / "features.py").write_text(FEATURES_TEMPLATE)
    (root / "quiver.yaml").write_text("project: bench\ndefinitions: [features.py]\n")
    with FeatureStore(repo_path=root) as store:
        store.apply(store.load_definitions(), prune=True)
        version = store.train(
            {
                "name": "churn_bench",
                "framework": "lightgbm",
                "model_type": "classification",
                "training_data": {"entity_df_source": "churn_labels", "label_column": "churned"},
                "features": "churn_prediction_v1",
                "hyperparameters": {"params": {"n_estimators": 100, "num_leaves": 31}},
            }
        )
        model_dir = str(store.config.model_path / version.artifact_dir)
    rng = np.random.default_rng(seed)
    start_us = int((DEMO_END - timedelta(days=330)).timestamp() * 1e6)
    end_us = int(DEMO_END.timestamp() * 1e6)
    table = pa.table(
        {
            "customer_id": pa.array(rng.integers(1, customers + 1, size=rows), pa.int64()),
            "event_timestamp": pa.array(
                rng.integers(start_us, end_us, size=rows), pa.timestamp("us", tz="UTC")
            ),
        }
    )
    pq.write_table(table, root / "input.parquet", compression="zstd")
    return {"repo": str(root), "model": version.model_id, "model_dir": model_dir}


# -- cases (child processes) ----------------------------------------------------------------


def case_quiver(args: dict[str, Any]) -> dict[str, Any]:
    from quiver.store import FeatureStore

    repo = Path(args["repo"])
    out = repo / "out_quiver.parquet"
    store = FeatureStore(repo_path=repo)
    jobs: list[Any] = []

    def run() -> None:
        jobs.append(
            store.predict_batch(
                args["model"], str(repo / "input.parquet"), str(out), chunk_rows=args["chunk"]
            )
        )

    times = timings(run, repeat=args["repeat"])
    store.close()
    return {"times": times, "rows": jobs[-1].rows}


def reference_predict(repo: Path, model_dir: Path, out: Path) -> int:
    """The hand-written pipeline: DuckDB ASOF joins -> pandas -> Booster.predict -> Parquet."""
    import json

    import duckdb
    import lightgbm as lgb
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = repo / "data"
    encoding = json.loads((model_dir / "encoding.json").read_text())
    features = encoding["features"]
    booster = lgb.Booster(model_file=str(model_dir / "model.txt"))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    sql = f"""
    SELECT e.customer_id, e.event_timestamp,
      CASE WHEN b.event_timestamp > e.event_timestamp - INTERVAL 30 DAY THEN b.tenure_months END
        AS tenure_months,
      CASE WHEN b.event_timestamp > e.event_timestamp - INTERVAL 30 DAY THEN b.monthly_charges END
        AS monthly_charges,
      CASE WHEN b.event_timestamp > e.event_timestamp - INTERVAL 30 DAY THEN b.total_charges END
        AS total_charges,
      CASE WHEN b.event_timestamp > e.event_timestamp - INTERVAL 30 DAY THEN b.support_tickets END
        AS support_tickets,
      CASE WHEN b.event_timestamp > e.event_timestamp - INTERVAL 30 DAY THEN b.orders END
        AS orders,
      CASE WHEN b.event_timestamp > e.event_timestamp - INTERVAL 30 DAY THEN b.avg_order_value END
        AS avg_order_value,
      CASE WHEN b.event_timestamp > e.event_timestamp - INTERVAL 30 DAY
        THEN b.days_since_last_order END AS days_since_last_order,
      d.age, d.gender, d.region,
      CASE WHEN c.event_timestamp > e.event_timestamp - INTERVAL 365 DAY THEN c.contract_type END
        AS contract_type,
      CASE WHEN c.event_timestamp > e.event_timestamp - INTERVAL 365 DAY THEN c.payment_method END
        AS payment_method,
      CASE WHEN c.event_timestamp > e.event_timestamp - INTERVAL 365 DAY
        THEN c.paperless_billing END AS paperless_billing
    FROM (SELECT *, row_number() OVER () AS rn FROM read_parquet('{repo / "input.parquet"}')) e
    ASOF LEFT JOIN read_parquet('{data / "customer_behavior.parquet"}') b
      ON e.customer_id = b.customer_id AND e.event_timestamp >= b.event_timestamp
    ASOF LEFT JOIN read_parquet('{data / "customer_demographics.parquet"}') d
      ON e.customer_id = d.customer_id AND e.event_timestamp >= d.event_timestamp
    ASOF LEFT JOIN read_parquet('{data / "customer_contract.parquet"}') c
      ON e.customer_id = c.customer_id AND e.event_timestamp >= c.event_timestamp
    ORDER BY e.rn
    """
    frame = con.sql(sql).df()
    con.close()
    columns = {}
    for f in features:
        col = frame[f["name"]]
        if f["kind"] == "categorical":
            codes = pd.Categorical(col, categories=f["categories"]).codes.astype("float64")
            codes[codes < 0] = np.nan
            columns[f["name"]] = codes
        else:
            columns[f["name"]] = pd.to_numeric(col, errors="coerce").astype("float64")
    x = pd.DataFrame(columns)
    proba = booster.predict(x)
    out_table = pa.table(
        {
            "customer_id": pa.array(frame["customer_id"].to_numpy(), pa.int64()),
            "event_timestamp": pa.Array.from_pandas(frame["event_timestamp"]).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "prediction": pa.array(proba, pa.float64()),
            "prediction_class": pa.array((proba > 0.5).astype("int64")),
        }
    )
    pq.write_table(out_table, out, compression="zstd")
    return len(frame)


def case_reference(args: dict[str, Any]) -> dict[str, Any]:
    repo = Path(args["repo"])
    rows: list[int] = []

    def run() -> None:
        rows.append(
            reference_predict(repo, Path(args["model_dir"]), repo / "out_reference.parquet")
        )

    return {"times": timings(run, repeat=args["repeat"]), "rows": rows[-1]}


def compare_outputs(repo: Path) -> float:
    """The largest absolute difference between Quiver's and the reference's predictions."""
    import numpy as np
    import pyarrow.parquet as pq

    a = pq.read_table(repo / "out_quiver.parquet")
    b = pq.read_table(repo / "out_reference.parquet")
    assert a.num_rows == b.num_rows, (a.num_rows, b.num_rows)
    assert a["customer_id"].equals(b["customer_id"]), "row order differs"
    diff = np.abs(a["prediction"].to_numpy() - b["prediction"].to_numpy())
    return float(diff.max()) if len(diff) else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="input rows to score")
    parser.add_argument("--customers", type=int, default=20_000, help="demo customers")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case")
    parser.add_argument("--chunk", type=int, default=250_000, help="Quiver's chunk_rows")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep", action="store_true", help="keep the temporary repo")
    opts = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="quiver-bench-predict-"))
    try:
        print(
            f"building a demo repo ({opts.customers:,} customers), a LightGBM model and "
            f"{opts.rows:,} input rows in {root} ...",
            flush=True,
        )
        setup = build_repo(root / "repo", opts.customers, opts.rows, opts.seed)
        args = {**setup, "repeat": opts.repeat, "chunk": opts.chunk}
        results = {}
        for case in ("case_reference", "case_quiver"):
            print(f"running {case.removeprefix('case_')} ...", flush=True)
            results[case] = run_child(__file__, case, args)
        max_diff = compare_outputs(Path(setup["repo"]))
        ref, qv = results["case_reference"], results["case_quiver"]
        t_ref, t_qv = median(ref.times), median(qv.times)
        rows = []
        for label, res, t in (("reference (DuckDB + pandas)", ref, t_ref), ("quiver", qv, t_qv)):
            rows.append(
                [
                    label,
                    f"{res.extra['rows']:,}",
                    fmt_seconds(t),
                    f"{res.extra['rows'] / t:,.0f}",
                    fmt_bytes(res.peak_rss),
                ]
            )
        print()
        print_table(["case", "rows", "median time", "rows/s", "peak RSS"], rows)
        ratio = t_qv / t_ref
        print()
        print(
            f"ratio quiver / reference: {ratio:.2f}x (target <= {TARGET_RATIO}x): "
            + ("OK" if ratio <= TARGET_RATIO else "ABOVE TARGET")
        )
        print(f"max |prediction difference| vs reference: {max_diff:.3g}")
    finally:
        if opts.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if not child_main(globals()):
        main()
