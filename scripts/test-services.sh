#!/usr/bin/env bash
# What `make test` needs besides Python packages: PostgreSQL binaries (the suite starts its own throw-away
# server) and a running one-node SLURM (scripts/slurm-local.sh). Idempotent; says what it did.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pg_bin="${HPCTUNE_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ ! -x "$pg_bin/initdb" ]; then
    echo "test-services: installing PostgreSQL (initdb not found in $pg_bin)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    pg_bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    echo "test-services: PostgreSQL binaries in $pg_bin (set HPCTUNE_PG_BIN=$pg_bin if not 15)"
else
    echo "test-services: PostgreSQL binaries found in $pg_bin"
fi
bash "$here/slurm-local.sh"
