#!/usr/bin/env bash
# The end-to-end demo on the embedded defaults (DuckDB, SQLite registry and online store, local
# Parquet): bash scripts/demo.sh [DIR]   (default DIR: ./demo_repo, recreated on every run)
set -euo pipefail

DIR="${1:-demo_repo}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

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
