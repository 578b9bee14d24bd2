#!/usr/bin/env bash
# Installs what the sandbox and the tests need, and nothing when it is already there: the
# Debian packages below and the Python environment in .venv. Sourced by scripts/quickstart and
# scripts/test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# The servers the sandbox runs; cloud-init for its schema check of rendered user data; procps
# (ps) and iproute2 (ss), which the testinfra host checks read processes and sockets with; and
# systemd for `systemd-analyze verify` of the edge's units (nothing is started by it here);
# hey, the external load generator the benchmarks measure with besides their own client.
DEBIAN_PACKAGES=(
    nginx redis-server prometheus prometheus-alertmanager prometheus-node-exporter
    cloud-init procps iproute2 systemd hey
)

say() { printf '[llmfleet] %s\n' "$*" >&2; }

pick_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3 python3.13 python3.12 python3.11; do
        [[ -n "$candidate" ]] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    say "Python 3.11 or newer is required (set PYTHON=/path/to/python3.11 to choose one)."
    return 1
}

missing_debian_packages() {
    local pkg
    for pkg in "${DEBIAN_PACKAGES[@]}" "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            printf '%s\n' "$pkg"
        fi
    done
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        return 1
    fi
}

install_debian_packages() {
    local missing=("$@")
    if ! command -v apt-get >/dev/null 2>&1; then
        say "Missing packages: ${missing[*]}. This machine has no apt-get; install them with its own package manager and run again."
        return 1
    fi
    if ! as_root true; then
        say "Missing Debian packages: ${missing[*]}."
        say "Installing them needs root: run 'sudo apt-get install -y ${missing[*]}' (or run this command as root), then run it again."
        return 1
    fi
    say "Installing Debian packages: ${missing[*]}"
    # Keep the packages' own services from starting on install: the sandbox runs its own
    # copies on loopback ports, and a distribution nginx on :80 would listen on every interface.
    local added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
        added_policy=1
    fi
    local rc=0
    as_root apt-get update -qq || rc=$?
    if [[ $rc -eq 0 ]]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" || rc=$?
    fi
    if [[ $added_policy -eq 1 ]]; then
        as_root rm -f /usr/sbin/policy-rc.d
    fi
    return $rc
}

ensure_debian_packages() {
    local extra=()
    # Debian's own python3 needs python3-venv before `python3 -m venv` works.
    if ! "$PYTHON_BIN" -c 'import ensurepip' 2>/dev/null; then
        local version
        version="$("$PYTHON_BIN" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        extra+=("python${version}-venv")
    fi
    local missing
    mapfile -t missing < <(missing_debian_packages "${extra[@]}")
    if [[ ${#missing[@]} -gt 0 ]]; then
        install_debian_packages "${missing[@]}"
    fi
}

ensure_venv() {
    local stamp="$VENV/.llmfleet-installed"
    if [[ -x "$VENV/bin/python" && -f "$stamp" && "$stamp" -nt "$ROOT/pyproject.toml" ]]; then
        return 0
    fi
    say "Preparing the Python environment in .venv (first run takes a minute or two)"
    [[ -x "$VENV/bin/python" ]] || "$PYTHON_BIN" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT[infra,dev,plot]"
    touch "$stamp"
}

PYTHON_BIN="$(pick_python)"
ensure_debian_packages
ensure_venv
# Debian installs nginx and the Prometheus tools under /usr/sbin, which a non-root PATH may lack.
export PATH="$VENV/bin:$PATH:/usr/sbin:/sbin"
