#!/usr/bin/env bash
# Install Quiver from the lock (uv.lock) into ./.venv: bash scripts/install.sh [EXTRA ...]
#
# Default extras: ml (scikit-learn, XGBoost CPU-only, LightGBM) and server (`quiver serve`),
# everything the demo and the README use. Run it again at any time: it only changes what
# differs from the lock. Then `. .venv/bin/activate` puts `quiver` on PATH.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_uv.sh
source scripts/_uv.sh
find_uv

extras=("${@:-ml server}")
read -r -a extras <<<"${extras[*]}"
args=()
for extra in "${extras[@]}"; do args+=(--extra "$extra"); done

printf '==> installing quiver (%s) from uv.lock into .venv\n' "${extras[*]}" >&2
"$UV" sync --frozen --python python3 "${args[@]}"
printf '==> done: activate with `. .venv/bin/activate`, then run `quiver --help`\n' >&2
