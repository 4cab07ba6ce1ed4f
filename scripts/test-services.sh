#!/usr/bin/env bash
# What `make test` needs besides Python packages: PostgreSQL binaries (the suite starts its own throw-away
# server), a headless Chromium (the report's browser test) and a running one-node SLURM
# (scripts/slurm-local.sh). Idempotent; says what it did.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
newest_pg_bin() { { ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -V | tail -n 1; }
pg_bin="${HPCTUNE_PG_BIN:-$(newest_pg_bin)}"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "test-services: installing PostgreSQL (initdb not found in $pg_bin)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    pg_bin="$(newest_pg_bin)"
    echo "test-services: PostgreSQL binaries in $pg_bin (the suite finds the newest version itself)"
else
    echo "test-services: PostgreSQL binaries found in $pg_bin"
fi
if ! command -v chromium >/dev/null 2>&1; then
    echo "test-services: installing Chromium (Debian's chromium package, for the report's browser test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
else
    echo "test-services: Chromium found at $(command -v chromium)"
fi
bash "$here/slurm-local.sh"
