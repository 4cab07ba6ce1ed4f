"""PostgreSQL itself, driven directly: initdb once, the postmaster as our child, readiness, shutdown.

- Authentication is scram-sha-256 for every host and the local socket: the server listens on the node's
  interfaces (workers run on other nodes), so nothing is trusted.
- fsync stays on: the data must survive a node that loses power while the study runs.
- The postmaster gets SIGINT (a fast, clean shutdown) if the hpctune process that started it dies, so a killed
  server process never leaves an orphan postmaster holding the data directory (Linux's PR_SET_PDEATHSIG).
- Shutdown is "fast" (SIGINT: clients are disconnected, no half-written WAL, seconds), never "smart"
  (SIGTERM waits for every client: too slow at a walltime); "immediate" (SIGQUIT, crash recovery at the next
  start) only when fast did not finish in time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg2

from hpc_tune.errors import StorageError
from hpc_tune.storage.server.binaries import PgBinaries
from hpc_tune.storage.server.files import DATABASE, USER, ServerFiles

READY_TIMEOUT_S = 120.0
_PR_SET_PDEATHSIG = 1

HBA = """# Written by hpctune: every connection authenticates with the study's password (scram-sha-256).
local all all scram-sha-256
host all all 0.0.0.0/0 scram-sha-256
host all all ::/0 scram-sha-256
"""


def refuse_root() -> None:
    if os.geteuid() == 0:
        raise StorageError(
            "the study server cannot run as root: PostgreSQL refuses to; run hpctune as your own user",
            "storage: server",
        )


def init_cluster(bins: PgBinaries, files: ServerFiles) -> None:
    """initdb the data directory with the study's password (from its file: never in an argument)."""
    refuse_root()
    proc = subprocess.run(
        [
            str(bins.tool("initdb")),
            "-D",
            str(files.data),
            "-U",
            USER,
            "--auth=scram-sha-256",
            f"--pwfile={files.password}",
            "-E",
            "UTF8",
            "--no-instructions",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or ["initdb failed"])[-1]
        raise StorageError(f"cannot create the study server's data directory: {detail}", files.data)
    (files.data / "pg_hba.conf").write_text(HBA, encoding="utf-8")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: SIGINT (fast shutdown) when the parent dies. Linux only; elsewhere a
    no-op, and a killed parent leaves the postmaster to be stopped by hand."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGINT)


def start(
    bins: PgBinaries, files: ServerFiles, *, port: int, max_connections: int, listen: str = "*"
) -> subprocess.Popen[bytes]:
    """Start the postmaster as our child (TCP only: no Unix socket, whose path length the data folder's
    path could exceed); its log goes to server.log."""
    refuse_root()
    log = open(files.log, "ab")  # noqa: SIM115 - the child keeps the descriptor; ours closes below
    try:
        return subprocess.Popen(
            [
                str(bins.tool("postgres")),
                "-D",
                str(files.data),
                "-p",
                str(port),
                "-c",
                f"listen_addresses={listen}",
                "-c",
                f"max_connections={max_connections}",
                "-c",
                "unix_socket_directories=",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - nothing else runs threads at this point
        )
    finally:
        log.close()


def connect(host: str, port: int, files: ServerFiles, dbname: str = DATABASE, timeout_s: int = 10) -> object:
    """A psycopg2 connection to the server with the study's password file (libpq's ``passfile``)."""
    return psycopg2.connect(
        host=host, port=port, user=USER, dbname=dbname, passfile=str(files.pgpass), connect_timeout=timeout_s
    )


def wait_ready(proc: subprocess.Popen[bytes], files: ServerFiles, port: int) -> None:
    """Until the postmaster accepts our login; a postmaster that exits first is one error with its log's
    last line (a port taken, a data directory of another version, ...)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise StorageError(f"the study server did not start: {last_log_line(files)}", files.log)
        try:
            conn = connect("127.0.0.1", port, files, dbname="postgres", timeout_s=2)
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                stop(proc)
                raise StorageError("the study server did not accept connections in time", files.log) from None
            time.sleep(0.2)
            continue
        conn.close()  # type: ignore[attr-defined]
        return


def ensure_database(files: ServerFiles, port: int) -> None:
    conn = connect("127.0.0.1", port, files, dbname="postgres")
    try:
        conn.autocommit = True  # type: ignore[attr-defined]
        with conn.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        conn.close()  # type: ignore[attr-defined]


def stop(proc: subprocess.Popen[bytes], fast_timeout_s: float = 30.0) -> None:
    """Fast shutdown; immediate when fast did not finish in time (never smart: it waits for clients)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=fast_timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def last_log_line(files: ServerFiles) -> str:
    try:
        lines = [line for line in files.log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip() if lines else "no log"


def postmaster_pid(data: Path) -> int | None:
    """The pid PostgreSQL's own lock file names (first line of postmaster.pid), if any."""
    try:
        return int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
