"""More workers than the database lets in: 32 local workers on a PostgreSQL server started with
``max_connections=20``. Nothing may fail and no "too many clients" may reach the user; the peak number of
connections (pg_stat_activity) is printed for docs/reliability.md."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from optuna.trial import TrialState

from hpc_tune.attrs import worker_of
from tests.chaos.helpers import PLAIN_SPACE, write_plain_objective
from tests.conftest import (
    PG_BIN,
    PostgresServer,
    _free_port,
    unavailable,
    wait_until,
    worker_env,
    write_config,
)
from tests.worker.test_loop import load

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
MAX_CONNECTIONS = 20
ROLE_LIMIT = 12
POOL_SIZE = 10


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


@contextmanager
def peak_connections(port: int, count_query: str) -> Iterator[list[int]]:
    """The most connections ``count_query`` (on pg_stat_activity, as the superuser) saw while the block ran,
    polled every 0.1 s, in the yielded list's one item."""
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            while not done.wait(0.1):
                cur.execute(count_query)
                peak[0] = max(peak[0], int(cur.fetchone()[0]))
        conn.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield peak
    finally:
        done.set()
        watcher.join()


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
    client_backends = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    with peak_connections(small_postgres.port, client_backends) as peak:
        cmd = [sys.executable, "-m", "hpc_tune", "run", "--local", "--workers", "32", "-c", str(cfg)]
        result = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=900)
    print(f"32 workers, max_connections={MAX_CONNECTIONS}: peak {peak[0]} client connections")
    shown = result.stdout + result.stderr
    assert result.returncode == 0, shown
    assert "too many clients" not in shown and "Error:" not in shown
    study, _ = load(cfg)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 64 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({worker_of(t)["pid"] for t in trials}) > 16  # really many workers, not a few fast ones
    assert peak[0] <= MAX_CONNECTIONS


@dataclass(frozen=True)
class LimitedRole:
    """A role of the suite's server with ``CONNECTION LIMIT 12`` and a database of its own."""

    server: PostgresServer
    name: str
    database: str


@pytest.fixture
def limited_role(postgres_server: PostgresServer) -> LimitedRole:
    role, database = f"lim_{uuid.uuid4().hex[:8]}", f"d_{uuid.uuid4().hex[:8]}"
    postgres_server.sql(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT {ROLE_LIMIT}")
    postgres_server.sql(f"CREATE DATABASE {database} OWNER {role}")
    return LimitedRole(postgres_server, role, database)


@dataclass(frozen=True)
class Crowd:
    """What 24 workers on the limited role left: the launcher's output, the role's peak connections (from
    pg_stat_activity, polled every 0.1 s) and the workers' logs."""

    result: subprocess.CompletedProcess[str]
    peak: int
    logs: list[Path]


def run_24_workers(tmp_path: Path, role: LimitedRole, port: int) -> Crowd:
    """48 trials by 24 local workers on ``role``'s database through ``port`` (the server, or a pooler)."""
    task = write_plain_objective(tmp_path, epochs=2, sleep=0.05)
    cfg = write_config(
        tmp_path,
        storage=f"postgresql+psycopg2://{role.name}@127.0.0.1:{port}/{role.database}",
        task=task,
        space=PLAIN_SPACE,
        trials=48,
        pruner={"type": "none"},
        worker={"heartbeat_interval": 2, "grace_period": 20, "max_retry": 1},
    )
    of_the_role = f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{role.name}'"
    with peak_connections(role.server.port, of_the_role) as peak:
        cmd = [sys.executable, "-m", "hpc_tune", "run", "--local", "--workers", "24", "-c", str(cfg)]
        result = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=900)
    shown = result.stdout + result.stderr
    assert result.returncode == 0, shown
    assert "Error:" not in shown and "Traceback" not in shown
    logs = sorted((tmp_path / "runs" / "t-digits" / "logs").glob("local-worker-*.log"))
    assert len(logs) >= 24
    assert not [log.name for log in logs if "Traceback" in log.read_text() or "Error:" in log.read_text()]
    study, _ = load(cfg)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 48 and all(t.state == TrialState.COMPLETE for t in trials)  # the exact budget
    assert len({worker_of(t)["pid"] for t in trials}) > ROLE_LIMIT  # more workers at work than the limit
    return Crowd(result, peak[0], logs)


def test_24_workers_on_a_role_limited_to_12_connections(tmp_path: Path, limited_role: LimitedRole) -> None:
    """A site's usual way to share one server is a role with CONNECTION LIMIT; it says "too many connections
    for role", which used to be taken for a refused login: 23 of 24 workers died, 10 with a traceback while
    Optuna created its tables. Now it is waited out like a full server."""
    crowd = run_24_workers(tmp_path, limited_role, limited_role.server.port)
    print(f"24 workers, role CONNECTION LIMIT {ROLE_LIMIT}: peak {crowd.peak} connections of the role")
    assert crowd.peak <= ROLE_LIMIT
    # The limit was really met (and waited out): some worker was turned away at least once.
    assert any("too many connections for role" in log.read_text() for log in crowd.logs)


@pytest.fixture
def pgbouncer(limited_role: LimitedRole) -> Iterator[int]:
    """PgBouncer in transaction mode in front of the suite's server, pooling at most ``POOL_SIZE`` server
    connections for the limited role; its port. Run as the postgres user (PgBouncer refuses root)."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        unavailable("PgBouncer not found: `make test-services` installs it")
    root = Path(tempfile.mkdtemp(prefix="hpctune-pgbouncer-"))
    port = _free_port()
    (root / "users.txt").write_text(f'"{limited_role.name}" ""\n')
    (root / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host=127.0.0.1 port={limited_role.server.port}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {root / 'users.txt'}\n"
        f"pool_mode = transaction\ndefault_pool_size = {POOL_SIZE}\nmax_client_conn = 500\n"
        f"pidfile = {root / 'pgbouncer.pid'}\nlogfile = {root / 'pgbouncer.log'}\n"
    )
    for path in (root, *root.iterdir()):
        shutil.chown(path, "postgres", "postgres")
    subprocess.run(
        ["runuser", "-u", "postgres", "--", binary, "-d", str(root / "pgbouncer.ini")],
        check=True,
        capture_output=True,
        timeout=30,
    )
    # The daemon writes its pid file after the starting process has returned.
    pid_file = root / "pgbouncer.pid"
    assert wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=30), "no pid file"
    pid = int(pid_file.read_text())
    try:
        assert wait_until(lambda: _answers(port, limited_role), timeout=30), (
            root / "pgbouncer.log"
        ).read_text()
        yield port
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not Path(f"/proc/{pid}").exists(), timeout=30)
        shutil.rmtree(root, ignore_errors=True)


def _answers(port: int, role: LimitedRole) -> bool:
    try:
        psycopg2.connect(host="127.0.0.1", port=port, user=role.name, dbname=role.database).close()
    except psycopg2.OperationalError:
        return False
    return True


def test_24_workers_through_pgbouncer_in_transaction_mode_never_wait_for_the_role(
    tmp_path: Path, limited_role: LimitedRole, pgbouncer: int
) -> None:
    """The path past a role's limit that hpctune supports: PgBouncer in transaction mode. The study lock is a
    transaction-level advisory lock and the workers keep no session state, so a pooled server connection
    serves any worker between transactions: the exact budget holds, the role never sees more than the pool,
    and no worker is turned away (nothing to wait out)."""
    crowd = run_24_workers(tmp_path, limited_role, pgbouncer)
    print(f"24 workers through PgBouncer (pool {POOL_SIZE}): peak {crowd.peak} connections of the role")
    assert 0 < crowd.peak <= POOL_SIZE
    assert not [log.name for log in crowd.logs if "too many connections" in log.read_text()]
