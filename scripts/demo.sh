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

printf '\nDone. Serve the REST API with: cd %s && quiver serve   (docs at http://127.0.0.1:8000/docs)\n' "$DIR"
