"""The study server's folder on the shared filesystem, ``<results>/<study>/server/`` (or ``server.data_dir``):

- ``data/``: PostgreSQL's data directory;
- ``password`` and ``pgpass``: a generated password, and a libpq password file for it; 0600 files in the
  0700 folder, the only place the password ever is (workers point libpq at ``pgpass``; it never reaches a
  script, an argument, an environment, a log or SLURM's spool);
- ``address.json``: where the running server listens (host, port, its process and job), written atomically
  once it accepts connections and removed when it stops; workers read it on every connect;
- ``server.log``, ``stop`` (a request to stop, from the collector or ``hpctune server stop``) and ``.lock``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hpc_tune.atomic import atomic_write_json, atomic_write_text

USER = "hpctune"
DATABASE = "optuna"


@dataclass(frozen=True)
class Address:
    """Where a running study server listens, and who runs it."""

    host: str
    port: int
    pid: int  # the hpctune process that runs (and stops) the server
    postmaster_pid: int
    job_id: str | None  # the SLURM job that runs it, if any
    version: str
    started_at: str

    def where(self) -> str:
        job = f", job {self.job_id}" if self.job_id else ""
        return f"{self.host}:{self.port} (pid {self.pid}{job})"


@dataclass(frozen=True)
class ServerFiles:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def password(self) -> Path:
        return self.root / "password"

    @property
    def pgpass(self) -> Path:
        return self.root / "pgpass"

    @property
    def address(self) -> Path:
        return self.root / "address.json"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    @property
    def stop_request(self) -> Path:
        return self.root / "stop"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def create(self) -> None:
        """The folder, private to its owner (0700), and the password files (0600), made once."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if not self.password.is_file() or not self.pgpass.is_file():
            secret = secrets.token_urlsafe(32)
            atomic_write_text(self.password, secret + "\n", private=True)
            # host:port:database:user:password, for every host and port the server may move to.
            atomic_write_text(self.pgpass, f"*:*:*:{USER}:{secret}\n", private=True)

    def read_address(self) -> Address | None:
        """The recorded address, or None when there is none (or it is unreadable: a crash mid-write cannot
        leave one, the file is replaced atomically)."""
        try:
            data: dict[str, Any] = json.loads(self.address.read_text(encoding="utf-8"))
            return Address(**data)
        except (OSError, ValueError, TypeError):
            return None

    def write_address(self, address: Address) -> None:
        atomic_write_json(self.address, asdict(address))

    def clear_address(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.address.unlink()

    def request_stop(self) -> None:
        atomic_write_text(self.stop_request, "stop\n")

    def clear_stop_request(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.stop_request.unlink()
