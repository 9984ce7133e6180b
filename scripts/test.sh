#!/usr/bin/env bash
# Run the test suite on a fresh Debian machine: bash scripts/test.sh [pytest args...]
#
# 1. As root, installs the backend servers the tests start (redis-server, PostgreSQL) and the
#    Java runtime of the local Spark the Spark engine's tests start (openjdk-17-jre-headless)
#    with apt-get if their binaries are missing. Not as root, it only says what to install.
# 2. Makes a new virtual environment and installs quiver with the dev extra into it from the
#    lock (uv.lock, with uv sync --frozen), so the tests see only what the lock pins.
# 3. Runs pytest there; the exit code is pytest's.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*" >&2; }

have_postgres() {
    local bindir
    for bindir in /usr/lib/postgresql/*/bin; do
        if [[ -x "$bindir/initdb" && -x "$bindir/pg_ctl" ]]; then
            return 0
        fi
    done
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}

# --- 1. system packages ---------------------------------------------------------------------
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
have_postgres || missing+=(postgresql)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)

if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing ${missing[*]} with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
    else
        log "WARNING: missing ${missing[*]}; tests that need them will fail." \
            "Install with: sudo apt-get install ${missing[*]}"
    fi
fi

# --- 2. a new virtual environment from the lock ------------------------------------------
# Made anew on every run and removed afterwards: nothing installed on this machine beforehand
# can make the tests pass. uv's download cache makes it take seconds after the first run.
# shellcheck source=scripts/_uv.sh
source scripts/_uv.sh
find_uv
venv=$(mktemp -d "${TMPDIR:-/tmp}/quiver-test-venv.XXXXXX")
trap 'rm -rf "$venv"' EXIT
log "installing quiver with the dev extra from uv.lock into $venv"
UV_PROJECT_ENVIRONMENT="$venv" "$UV" sync --frozen --python python3 --extra dev --quiet

# --- 3. tests -------------------------------------------------------------------------------
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV
export PATH="$venv/bin:$PATH"
# Two workers by default (pytest-xdist; the suite is built for it: free ports, temp dirs);
# QUIVER_TEST_WORKERS=0 runs it in one process.
workers="${QUIVER_TEST_WORKERS:-2}"
parallel=()
if [ "$workers" != "0" ]; then
    parallel=(-n "$workers")
fi
log "running pytest ${parallel[*]} $*"
status=0
"$venv/bin/python" -m pytest -q "${parallel[@]}" "$@" || status=$?
exit "$status"
