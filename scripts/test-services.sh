#!/usr/bin/env bash
# What `make test` needs besides Python packages: PostgreSQL binaries (the suite starts its own throw-away
# server), PgBouncer (tested in front of it), a headless Chromium (the report's browser test), an
# unprivileged user for the study server's tests (PostgreSQL refuses root) and a running one-node SLURM
# (scripts/slurm-local.sh). Idempotent; says what it did.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
newest_pg_bin() { { ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -V | tail -n 1; }
apt_install() {  # Debian packages, quietly
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "$@" >/dev/null
}
pg_bin="${HPCTUNE_PG_BIN:-$(newest_pg_bin)}"
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "test-services: installing PostgreSQL (initdb not found in $pg_bin)"
    apt_install postgresql
    pg_bin="$(newest_pg_bin)"
    echo "test-services: PostgreSQL binaries in $pg_bin (the suite finds the newest version itself)"
else
    echo "test-services: PostgreSQL binaries found in $pg_bin"
fi
if ! command -v chromium >/dev/null 2>&1; then
    echo "test-services: installing Chromium (Debian's chromium package, for the report's browser test)"
    apt_install chromium
else
    echo "test-services: Chromium found at $(command -v chromium)"
fi
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
    echo "test-services: installing PgBouncer (the connection pooler hpctune supports past a role's limit)"
    apt_install pgbouncer
else
    echo "test-services: PgBouncer found"
fi
# The study server's tests run hpctune as an ordinary user, as on a cluster: that user must exist on the node
# (SLURM runs its jobs) and reach the repository and the venv's interpreter (each folder above them
# traversable; nothing made readable that was not).
tester="${HPCTUNE_TEST_USER:-hpctune-tester}"
if [ "$(id -u)" = 0 ]; then
    if ! id "$tester" >/dev/null 2>&1; then
        useradd --system --create-home --shell /bin/bash "$tester"
        echo "test-services: created the unprivileged user $tester"
    else
        echo "test-services: unprivileged user $tester found"
    fi
    repo="$(cd "$here/.." && pwd)"
    for target in "$repo" "$(readlink -f "$repo/.venv/bin/python" 2>/dev/null || true)"; do
        dir="$target"
        while [ -n "$dir" ] && [ "$dir" != "/" ]; do
            [ -d "$dir" ] && chmod o+x "$dir"
            dir="$(dirname "$dir")"
        done
    done
fi
bash "$here/slurm-local.sh"
