#!/usr/bin/env bash
# The end-to-end demo on the embedded defaults (DuckDB, SQLite registry and online store, local
# Parquet): bash scripts/demo.sh [DIR]   (default DIR: ./demo_repo, recreated on every run)
set -euo pipefail

DIR="${1:-demo_repo}"
# A heading per step: bold on a terminal, plain in a pipe or a file and with NO_COLOR set.
step() {
    if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
        printf '\n\033[1m== %s\033[0m\n' "$*"
    else
        printf '\n== %s\n' "$*"
    fi
}

step "quiver init $DIR --demo   (synthetic churn dataset + definitions)"
rm -rf "$DIR"
quiver init "$DIR" --demo
cd "$DIR"

step "quiver apply   (register entity, sources, views and the feature service)"
quiver apply

step "quiver entities / feature-views / feature-services list"
quiver entities list
quiver feature-views list
quiver feature-services list

step "quiver training-set   (point-in-time correct: the label table + churn_prediction_v1)"
quiver training-set --entities churn_labels --service churn_prediction_v1 \
    --out data/churn_training.parquet
python3 -c "import pyarrow.parquet as pq; t = pq.read_table('data/churn_training.parquet'); \
print(f'training set shape: {t.num_rows} rows x {t.num_columns} columns')"

step "quiver materialize-incremental now   (latest values into the SQLite online store)"
quiver materialize-incremental now
quiver validate-consistency customer_behavior --sample 200

step "quiver get-online   (online features of a few customers; 999999 does not exist)"
quiver get-online --service churn_prediction_v1 -e customer_id=1 -e customer_id=2 \
    -e customer_id=3 -e customer_id=999999

step "quiver train churn_model.yaml   (LightGBM on churn_prediction_v1, time split)"
quiver train churn_model.yaml
quiver models promote churn_model 1 production
quiver models list

step "quiver predict batch   (score the label table's customers as of each row's time)"
quiver predict batch churn_model --input churn_labels --output data/churn_predictions.parquet
python3 -c "import pyarrow.parquet as pq; \
print(pq.read_table('data/churn_predictions.parquet').slice(0, 5).to_pandas().to_string())"

step "quiver predict online   (features read from the online store)"
quiver predict online churn_model -e customer_id=1 -e customer_id=2

step "monitoring   (statistics, drift against training, validate, catalogue, lineage)"
quiver stats customer_behavior --days 7
# the online store was filled before the model was trained: compare with that run
quiver monitor drift churn_model --since 2000-01-01
quiver validate
quiver docs --output-file FEATURES.md
quiver lineage customer_behavior:orders

step "computed features: the same values offline and online   (customers 1, 10, 18 now)"
# One process, the calls behind quiver training-set and predict batch (point-in-time, at now)
# and quiver get-online and predict online (the online store, read at the wall clock). The data
# ends at midnight and the aggregations use 1-hour tiles: offline at now equals online now.
python3 - <<'EOF'
import math
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from quiver import FeatureStore

names = ["order_spend_30d", "count_7d", "count_30d", "amount_sum_7d", "amount_sum_30d",
         "amount_mean_7d", "amount_mean_30d", "charges_per_month_of_tenure", "order_amount_7d_share"]
customers = [1, 10, 18]
now = datetime.now(timezone.utc)
entities = pa.table({"customer_id": customers,
                     "event_timestamp": pa.array([now] * 3, pa.timestamp("us", tz="UTC"))})
pq.write_table(entities, "data/now.parquet")
with FeatureStore(repo_path=".") as store:
    training = store.get_historical_features(
        entity_df=entities, feature_service="churn_prediction_v1").to_arrow().to_pylist()
    store.predict_batch("churn_model", "data/now.parquet", "data/now_predictions.parquet")
    rows = [{"customer_id": c} for c in customers]
    on = store.get_online_features(feature_service="churn_prediction_v1", entity_rows=rows)
    served = store.predict_online("churn_model", entity_rows=rows)["predictions"]
offline = {r["customer_id"]: r for r in training}
online = {c: {n: on.to_dict()[n][i] for n in names} for i, c in enumerate(customers)}
for r in pq.read_table("data/now_predictions.parquet").to_pylist():
    offline[r["customer_id"]]["prediction"] = r["prediction"]
for c, p in zip(customers, served):
    online[c]["prediction"] = p["prediction"]
print(f"{'':<28}" + "".join(f"{'customer ' + str(c):>24}" for c in customers))
print(f"{'':<28}" + f"{'offline':>12}{'online':>12}" * len(customers))
different = []
for n in [*names, "prediction"]:
    cells = ""
    for c in customers:
        a, b = offline[c][n], online[c][n]
        if not (a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9))):
            different.append((c, n))
        cells += "".join(f"{'null' if v is None else f'{v:.6g}':>12}" for v in (a, b))
    print(f"{n:<28}{cells}")
print("offline: training set (features), batch prediction; online: online features, prediction")
print(f"DIFFERENT: {different}" if different else "offline = online for every value")
raise SystemExit(1 if different else 0)
EOF

printf '\nDone. Serve the REST API with: cd %s && quiver serve   (docs at http://127.0.0.1:8000/docs)\n' "$DIR"
