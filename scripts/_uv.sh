# Sourced by install.sh and test.sh: sets UV to a uv binary of the version the project pins.
# A uv of that version on PATH is used as it is; otherwise it is installed once with pip into
# its own virtual environment under ~/.cache/quiver (no system Python is changed).
QUIVER_UV_VERSION=0.13.8 # the same as the dev extra's pin in pyproject.toml

find_uv() {
    if command -v uv >/dev/null 2>&1 && [[ "$(uv --version 2>/dev/null)" == "uv $QUIVER_UV_VERSION"* ]]; then
        UV=$(command -v uv)
        return
    fi
    local home="${XDG_CACHE_HOME:-$HOME/.cache}/quiver/uv-$QUIVER_UV_VERSION"
    if [[ ! -x "$home/bin/uv" ]]; then
        printf '==> installing uv %s into %s\n' "$QUIVER_UV_VERSION" "$home" >&2
        rm -rf "$home"
        if ! python3 -m venv "$home"; then
            printf 'python3 cannot make a virtual environment; install python3-venv (Debian) first\n' >&2
            return 1
        fi
        PIP_DISABLE_PIP_VERSION_CHECK=1 "$home/bin/python" -m pip install -q "uv==$QUIVER_UV_VERSION"
    fi
    UV="$home/bin/uv"
}

# uv uses this machine's python3 and never downloads an interpreter of its own; it trusts the
# system's certificate store (as pip does), so a TLS-inspecting proxy's CA works as configured.
export UV_PYTHON_DOWNLOADS=never UV_NO_PROGRESS=1 UV_SYSTEM_CERTS="${UV_SYSTEM_CERTS:-1}"
