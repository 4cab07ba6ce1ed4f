"""A throw-away PostgreSQL for benchmarks (same approach as tests/conftest.py, without pytest).

``pg_server(url)`` yields an object with ``new_database(prefix) -> url``. Without ``url`` it runs initdb in a
temp directory and starts a server on a random loopback port (as the ``postgres`` user when run as root,
since PostgreSQL refuses to run as root), stopped and deleted on exit; with ``url`` (an existing server whose
role may CREATE DATABASE) it only creates databases there and leaves the server alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

_FOUND = sorted(
    Path("/usr/lib/postgresql").glob("*/bin"),
    key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
)
PG_BIN = Path(os.environ.get("HPCTUNE_PG_BIN") or (_FOUND[-1] if _FOUND else "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self, base_url: str) -> None:
        self.base_url = make_url(base_url)

    def _admin_connect(self):  # type: ignore[no-untyped-def]
        import psycopg2

        u = self.base_url
        return psycopg2.connect(
            host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database or "postgres"
        )

    def sql(self, statement: str) -> None:
        conn = self._admin_connect()
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
        finally:
            conn.close()

    def new_database(self, prefix: str = "bench") -> str:
        """A fresh, empty database; returns its SQLAlchemy URL (psycopg2 driver)."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self.sql(f"CREATE DATABASE {name}")
        url = self.base_url.set(drivername="postgresql+psycopg2", database=name)
        return url.render_as_string(hide_password=False)


@contextlib.contextmanager
def pg_server(url: str | None = None, max_connections: int = 300) -> Iterator[PgServer]:
    if url:
        yield PgServer(url)
        return
    initdb = PG_BIN / "initdb"
    if not initdb.exists():
        raise SystemExit(
            f"PostgreSQL binaries not found in {PG_BIN} (set HPCTUNE_PG_BIN or pass --storage URL)"
        )
    root = Path(tempfile.mkdtemp(prefix="hpctune-bench-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    data, sockets = root / "data", root / "sock"
    port = _free_port()
    started = False
    try:
        subprocess.run([*run_as, "mkdir", "-p", str(sockets)], check=True)
        subprocess.run(
            [
                *run_as,
                str(initdb),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        hba = "host all all 127.0.0.1/32 trust\nlocal all all trust\n"
        subprocess.run([*run_as, "sh", "-c", f"cat > {data}/pg_hba.conf"], input=hba, text=True, check=True)
        # Durability off, as in the test suite: we measure the orchestration, not the disk.
        opts = (
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c max_connections={max_connections} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        subprocess.run(
            [
                *run_as,
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                opts,
                "-l",
                str(root / "server.log"),
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        started = True
        yield PgServer(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres")
    finally:
        if started:
            subprocess.run(
                [*run_as, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)
