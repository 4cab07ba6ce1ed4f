"""Shared fixtures: a real throw-away PostgreSQL (once per session, a database per test) and study configs.

PostgreSQL refuses to run as root, so under root the server runs as the ``postgres`` user (runuser) in a temp
directory on a random port. In CI (CI=true) a missing PostgreSQL is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

pytest_plugins = ["tests.slurm_fixtures"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``make test`` runs the suite in two processes (pytest-xdist, ``--dist loadgroup``): most of its time is
    spent waiting on real servers, schedulers and subprocesses, not computing. The tests of the one-node SLURM
    share one slurmctld and its 8 CPUs, so they run one after another in one process (and only that
    process runs scripts/slurm-local.sh); every other test gets its own PostgreSQL per process and runs
    beside them."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()) or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))


IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _newest_pg_bin() -> Path:
    """The newest installed PostgreSQL's binaries (Debian keeps each major version in its own folder)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = Path(os.environ.get("HPCTUNE_PG_BIN") or _newest_pg_bin())
REPO = Path(__file__).resolve().parent.parent
TEST_PASSWORD = "s3cret-Pa55-" + uuid.uuid4().hex[:8]


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: required components must run, not skip)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    data_dir: Path
    socket_dir: Path
    port: int
    run_as: list[str]

    def admin_url(self, db: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{db}"

    def version(self) -> str:
        """``SHOW server_version`` of the running server."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW server_version")
                return str(cur.fetchone()[0])
        finally:
            conn.close()

    def sql(self, statement: str, db: str = "postgres") -> None:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=db)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.run_as, str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c max_connections=300 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self.pg_ctl("-o", opts, "-l", str(self.data_dir.parent / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "stop")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    initdb = PG_BIN / "initdb"
    if not initdb.exists():
        unavailable(f"PostgreSQL binaries not found in {PG_BIN} (set HPCTUNE_PG_BIN)")
    root = Path(tempfile.mkdtemp(prefix="hpctune-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    data, sockets = root / "data", root / "sock"
    subprocess.run([*run_as, "mkdir", "-p", str(sockets)], check=True)
    result = subprocess.run(
        [*run_as, str(initdb), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        unavailable(f"initdb failed: {result.stderr.strip().splitlines()[-1:]}")
    # A password-protected role over TCP (for the secrets tests); everything else trusted on loopback.
    hba = "host all tuner 127.0.0.1/32 scram-sha-256\nhost all all 127.0.0.1/32 trust\nlocal all all trust\n"
    subprocess.run([*run_as, "sh", "-c", f"cat > {data}/pg_hba.conf"], input=hba, text=True, check=True)
    server = PostgresServer(data, sockets, _free_port(), run_as)
    server.start()
    server.sql(f"CREATE ROLE tuner LOGIN PASSWORD '{TEST_PASSWORD}' CREATEDB")
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database for this test; URL without password (trusted loopback role)."""
    name = "t_" + uuid.uuid4().hex[:12]
    postgres_server.sql(f"CREATE DATABASE {name}")
    return postgres_server.admin_url(name)


@pytest.fixture
def pg_secret_db(postgres_server: PostgresServer, tmp_path: Path) -> dict[str, str]:
    """A database owned by the password-protected role, with a 0600 PGPASSFILE for it."""
    name = "s_" + uuid.uuid4().hex[:12]
    postgres_server.sql(f"CREATE DATABASE {name} OWNER tuner")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres_server.port}:{name}:tuner:{TEST_PASSWORD}\n")
    passfile.chmod(0o600)
    return {
        "url": f"postgresql+psycopg2://tuner@127.0.0.1:{postgres_server.port}/{name}",
        "url_with_password": f"postgresql+psycopg2://tuner:{TEST_PASSWORD}@127.0.0.1:{postgres_server.port}/{name}",
        "password": TEST_PASSWORD,
        "passfile": str(passfile),
    }


def write_config(directory: Path, **overrides: object) -> Path:
    """A small, fast digits study; keyword arguments replace top-level keys."""
    config: dict[str, object] = {
        "study": "t-digits",
        "direction": "maximize",
        "metric": "val_acc",
        "task": "hpc_tune.tasks.digits",
        "trials": 6,
        "epochs": 3,
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
            "hidden": {"type": "int", "low": 8, "high": 32, "log": True},
            "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
            "momentum": {"type": "float", "low": 0.8, "high": 0.95, "when": {"optimizer": "sgd"}},
        },
        "sampler": {"type": "tpe", "seed": 1, "n_startup_trials": 4},
        "pruner": {"type": "median", "n_startup_trials": 3, "n_warmup_steps": 1},
        "train": {"batch_size": 64, "compile": "off", "schedule": {"type": "cosine", "warmup_epochs": 0}},
        "worker": {"heartbeat_interval": 1, "grace_period": 3, "max_retry": 1},
        "results": str(directory / "runs"),
    }
    config.update(overrides)
    path = directory / "hpctune.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HPCTUNE_STORAGE", None)
    env.pop("HPCTUNE_FAULT", None)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def study_of(cfg: Path, storage: str | None = None):  # type: ignore[no-untyped-def]
    """The study of config ``cfg`` as the workers see it (its storage, or ``storage``)."""
    import optuna

    from hpc_tune.config import load_config
    from hpc_tune.storage.store import open_store
    from hpc_tune.storage.url import resolve_storage

    loaded = load_config(cfg)
    spec = resolve_storage(storage or loaded.config.storage, loaded.study_dir)
    return optuna.load_study(study_name=loaded.config.study, storage=open_store(spec).storage)


def running_with_epochs(cfg: Path):  # type: ignore[no-untyped-def]
    """A probe for the tests that wait for trials at work: called, it returns the RUNNING trials that have
    reported an epoch, or [] while the study cannot be read yet (not created, or its server starting). The
    study is opened once, on the first call that finds it."""
    import optuna
    from optuna.trial import TrialState

    holder: list[optuna.Study] = []

    def probe() -> list[optuna.trial.FrozenTrial]:
        try:
            if not holder:
                holder.append(study_of(cfg))
            running = holder[0].get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        except (KeyError, optuna.exceptions.StorageInternalError):
            return []
        return [t for t in running if t.intermediate_values]

    return probe


# --- an unprivileged user, for the study server (PostgreSQL refuses root) -----------------------------------

TEST_USER = os.environ.get("HPCTUNE_TEST_USER", "hpctune-tester")


@dataclass
class StudyUser:
    """An ordinary user (scripts/test-services.sh creates it) and a folder of theirs to work in."""

    name: str
    home: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCTUNE_", "SLURM_", "PG"))}
        env.update(HOME=str(self.home), USER=self.name, LOGNAME=self.name, PYTHONUNBUFFERED="1")
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
        env.update(extra)
        return env

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 300, **env: str
    ) -> subprocess.CompletedProcess[str]:
        """``args`` as this user (``hpctune ...`` runs ``python -m hpc_tune ...``), in ``cwd`` or home."""
        argv = [sys.executable, "-m", "hpc_tune", *args[1:]] if args[0] == "hpctune" else list(args)
        return subprocess.run(
            ["runuser", "-u", self.name, "--", *argv],
            cwd=cwd or self.home,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        """``args`` as this user in the background (a dashboard, a server), as ``run`` starts them."""
        argv = [sys.executable, "-m", "hpc_tune", *args[1:]] if args[0] == "hpctune" else list(args)
        return subprocess.Popen(
            ["runuser", "-u", self.name, "--", *argv],
            cwd=self.home,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def own(self, path: Path) -> Path:
        shutil.chown(path, self.name, self.name)
        return path


@pytest.fixture
def tester() -> Iterator[StudyUser]:
    """A fresh folder owned by the unprivileged user; in CI the user must exist (a failure, not a skip)."""
    import pwd

    if os.geteuid() != 0:
        home = Path(tempfile.mkdtemp(prefix="hpctune-tester-"))
        yield StudyUser(pwd.getpwuid(os.geteuid()).pw_name, home)  # already unprivileged: run as ourselves
        shutil.rmtree(home, ignore_errors=True)
        return
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        unavailable(f"the unprivileged user {TEST_USER} does not exist (run scripts/test-services.sh)")
    home = Path(tempfile.mkdtemp(prefix="hpctune-tester-"))
    shutil.chown(home, TEST_USER, TEST_USER)
    try:
        yield StudyUser(TEST_USER, home)
    finally:
        # Stop whatever server a failed test left, then remove its files.
        for pid_file in home.rglob("address.json"):
            with contextlib.suppress(Exception):
                os.kill(int(json.loads(pid_file.read_text())["pid"]), signal.SIGTERM)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def two_torch_threads() -> Iterator[None]:
    """Torch on two threads for the test (the machine's cores; more would oversubscribe a busy CI), then back:
    torch is imported here, not at the top, so that tests that never train do not pay for it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
