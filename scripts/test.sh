#!/usr/bin/env bash
# Run the test suite on a fresh Debian machine: bash scripts/test.sh [pytest args...]
#
# 1. As root, installs the backend servers the tests start (redis-server, PostgreSQL) with
#    apt-get if their binaries are missing. Not as root, it only says what to install.
# 2. Installs quiver in editable mode with the dev extras.
# 3. Runs pytest; the exit code is pytest's.
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

# --- 2. python packages ---------------------------------------------------------------------
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# Debian's own python3 is "externally managed" (PEP 668). Outside a virtualenv, allow pip to
# install into it only on CI or as root; a developer should use a virtualenv instead.
if python3 - <<'PY'
import os, sys, sysconfig
in_venv = sys.prefix != sys.base_prefix
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
sys.exit(0 if (not in_venv and os.path.exists(marker)) else 1)
PY
then
    if [[ "${CI:-}" == "true" || $(id -u) -eq 0 ]]; then
        export PIP_BREAK_SYSTEM_PACKAGES=1
    else
        log "python3 is externally managed; create and activate a virtualenv first:" \
            "python3 -m venv .venv && . .venv/bin/activate"
        exit 1
    fi
fi

log "installing quiver with the dev extras"
python3 -m pip install -q -e ".[dev]"

# --- 3. tests -------------------------------------------------------------------------------
log "running pytest $*"
exec python3 -m pytest -q "$@"
