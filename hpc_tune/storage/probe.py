"""A short look at a study's database before an array is submitted: does it answer from here, which
PostgreSQL is it, and how many connections may this role and this server hold.

``check`` reports what it finds as warnings, never errors: a login node may not reach the database that the
compute nodes reach. One connection with a short connect timeout, no retry, nothing created.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from hpc_tune.storage.failures import first_line
from hpc_tune.storage.url import StorageSpec

PROBE_TIMEOUT_S = 5


@dataclass(frozen=True)
class DatabaseProbe:
    """What the database said, or why it did not answer (``error``, redacted)."""

    error: str | None = None
    version: str | None = None
    role: str | None = None
    role_limit: int | None = None  # rolconnlimit: -1 is no limit
    server_limit: int | None = None  # max_connections
    reserved: int = 0  # superuser_reserved_connections (+ reserved_connections): not for our role

    @property
    def reachable(self) -> bool:
        return self.error is None

    @property
    def usable_by_role(self) -> int | None:
        """The most connections this role can hold at once: the smaller of its own limit and what the server
        keeps for ordinary roles."""
        limits = []
        if self.role_limit is not None and self.role_limit >= 0:
            limits.append(self.role_limit)
        if self.server_limit is not None:
            limits.append(self.server_limit - self.reserved)
        return min(limits) if limits else None


def probe_database(spec: StorageSpec, timeout_s: int = PROBE_TIMEOUT_S) -> DatabaseProbe:
    """Ask a PostgreSQL storage for its version and connection limits (other storages: nothing to ask)."""
    assert spec.url is not None and spec.is_postgres
    engine = sqlalchemy.create_engine(
        spec.url, poolclass=NullPool, connect_args={"connect_timeout": timeout_s}
    )
    try:
        with engine.connect() as conn:

            def show(setting: str) -> str | None:
                found = conn.execute(sqlalchemy.text(f"SELECT current_setting('{setting}', true)")).scalar()
                return None if found in (None, "") else str(found)

            role, role_limit = conn.execute(
                sqlalchemy.text(
                    "SELECT current_user, rolconnlimit FROM pg_roles WHERE rolname = current_user"
                )
            ).one()
            # PostgreSQL 16 added reserved_connections beside superuser_reserved_connections.
            reserved = sum(
                int(show(s) or 0) for s in ("superuser_reserved_connections", "reserved_connections")
            )
            return DatabaseProbe(
                version=show("server_version"),
                role=str(role),
                role_limit=int(role_limit),
                server_limit=int(show("max_connections") or 0) or None,
                reserved=reserved,
            )
    except SQLAlchemyError as exc:
        return DatabaseProbe(error=first_line(exc, spec.url))
    finally:
        engine.dispose()
