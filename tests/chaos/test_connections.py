"""More workers than the database lets in: 32 local workers on a PostgreSQL server started with
``max_connections=20``. Nothing may fail and no "too many clients" may reach the user; the peak number of
connections (pg_stat_activity) is printed for docs/reliability.md."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from optuna.trial import TrialState

from hpc_tune.attrs import worker_of
from tests.chaos.helpers import PLAIN_SPACE, write_plain_objective
from tests.conftest import PG_BIN, PostgresServer, _free_port, unavailable, worker_env, write_config
from tests.worker.test_loop import load

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
MAX_CONNECTIONS = 20


@pytest.fixture
def small_postgres() -> Iterator[PostgresServer]:
    """A second server whose connection table is smaller than the array."""
    if not (PG_BIN / "initdb").exists():
        unavailable(f"PostgreSQL binaries not found in {PG_BIN}")
    root = Path(tempfile.mkdtemp(prefix="hpctune-pg-small-"))
    run_as = ["runuser", "-u", "postgres", "--"]  # initdb refuses root
    shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    subprocess.run([*run_as, "mkdir", "-p", str(root / "sock")], check=True)
    subprocess.run(
        [*run_as, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"],
        check=True,
        capture_output=True,
    )
    server = PostgresServer(data, root / "sock", _free_port(), run_as)
    server.pg_ctl(
        "-o",
        f"-p {server.port} -k {server.socket_dir} -c listen_addresses=127.0.0.1 "
        f"-c max_connections={MAX_CONNECTIONS} -c fsync=off -c synchronous_commit=off",
        "-l",
        str(root / "server.log"),
        "-w",
        "start",
    )
    try:
        server.sql("CREATE DATABASE crowd")
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


def test_32_workers_on_a_server_with_20_connections(tmp_path: Path, small_postgres: PostgresServer) -> None:
    task = write_plain_objective(tmp_path, epochs=2, sleep=0.05)
    cfg = write_config(
        tmp_path,
        storage=small_postgres.admin_url("crowd"),
        task=task,
        space=PLAIN_SPACE,
        trials=64,
        pruner={"type": "none"},
        worker={"heartbeat_interval": 2, "grace_period": 20, "max_retry": 1},
    )
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        conn = psycopg2.connect(
            host="127.0.0.1", port=small_postgres.port, user="postgres", dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            while not done.wait(0.1):
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
                peak[0] = max(peak[0], int(cur.fetchone()[0]))
        conn.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        cmd = [sys.executable, "-m", "hpc_tune", "run", "--local", "--workers", "32", "-c", str(cfg)]
        result = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=900)
    finally:
        done.set()
        watcher.join()
    print(f"32 workers, max_connections={MAX_CONNECTIONS}: peak {peak[0]} client connections")
    shown = result.stdout + result.stderr
    assert result.returncode == 0, shown
    assert "too many clients" not in shown and "Error:" not in shown
    study, _ = load(cfg)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 64 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({worker_of(t)["pid"] for t in trials}) > 16  # really many workers, not a few fast ones
    assert peak[0] <= MAX_CONNECTIONS


def test_24_workers_on_a_role_limited_to_12_connections(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """A site's usual way to share one server is a role with CONNECTION LIMIT; it says "too many connections
    for role", which used to be taken for a refused login: 23 of 24 workers died, 10 with a traceback while
    Optuna created its tables. Now it is waited out like a full server."""
    role, database = f"lim_{uuid.uuid4().hex[:8]}", f"d_{uuid.uuid4().hex[:8]}"
    postgres_server.sql(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 12")
    postgres_server.sql(f"CREATE DATABASE {database} OWNER {role}")
    task = write_plain_objective(tmp_path, epochs=2, sleep=0.05)
    cfg = write_config(
        tmp_path,
        storage=f"postgresql+psycopg2://{role}@127.0.0.1:{postgres_server.port}/{database}",
        task=task,
        space=PLAIN_SPACE,
        trials=48,
        pruner={"type": "none"},
        worker={"heartbeat_interval": 2, "grace_period": 20, "max_retry": 1},
    )
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        conn = psycopg2.connect(
            host="127.0.0.1", port=postgres_server.port, user="postgres", dbname="postgres"
        )
        conn.autocommit = True
        with conn.cursor() as cur:
            while not done.wait(0.1):
                cur.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,))
                peak[0] = max(peak[0], int(cur.fetchone()[0]))
        conn.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        cmd = [sys.executable, "-m", "hpc_tune", "run", "--local", "--workers", "24", "-c", str(cfg)]
        result = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=900)
    finally:
        done.set()
        watcher.join()
    print(f"24 workers, role CONNECTION LIMIT 12: peak {peak[0]} connections of the role")
    shown = result.stdout + result.stderr
    assert result.returncode == 0, shown
    assert "Error:" not in shown and "Traceback" not in shown
    logs = sorted((tmp_path / "runs" / "t-digits" / "logs").glob("local-worker-*.log"))
    assert len(logs) >= 24
    assert not [log.name for log in logs if "Traceback" in log.read_text() or "Error:" in log.read_text()]
    study, _ = load(cfg)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 48 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({worker_of(t)["pid"] for t in trials}) > 12  # more workers at work than the role's limit
    assert peak[0] <= 12
