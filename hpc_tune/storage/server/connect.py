"""How a worker connects to the study server: the address is read from ``address.json`` at every new
connection, so a server that was requeued onto another node (another host, another port) is found again.
While there is no address (the server is starting, or between its walltime and its requeue), connecting
fails with an OperationalError that the retrying layer waits out, as for a database restart.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2

from hpc_tune.storage.server.files import DATABASE, USER, ServerFiles

# What the retrying layer reads to know that waiting for the server is right (storage/failures.py).
NOT_RUNNING = "the study server is not running (yet)"


def server_connector(server_dir: Path, timeout_s: int) -> Callable[[], Any]:
    """SQLAlchemy's ``creator``: a DBAPI connection to wherever the server is now, with the study's password
    file (libpq's ``passfile``; the password is in no URL, argument or environment)."""
    files = ServerFiles(server_dir)

    def connect() -> Any:
        address = files.read_address()
        if address is None:
            raise psycopg2.OperationalError(f"{NOT_RUNNING}: no {files.address}")
        return psycopg2.connect(
            host=address.host,
            port=address.port,
            user=USER,
            dbname=DATABASE,
            passfile=str(files.pgpass),
            connect_timeout=timeout_s,
        )

    return connect
