"""What a database error means for the caller: wait and retry, or stop and tell the user.

One classification for every storage call, the study lock's connection and the first connect: a transient
error (a restart, a fail-over, a full connection table) is waited out, a refused login is not, since waiting
will not fix a wrong password.
"""

from __future__ import annotations

import optuna
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from hpc_tune.config.storage_value import scrub
from hpc_tune.storage.server.connect import NOT_RUNNING

# What PostgreSQL says when it refuses a login: a wrong password, none supplied, an unknown role or database.
# A role at its CONNECTION LIMIT ('too many connections for role "x"') is not among them: like a full server
# ('too many clients already'), it is waited out until other workers give a connection back.
LOGIN_REFUSED = ("password authentication failed", "no password supplied", "does not exist")


def is_transient(exc: BaseException) -> bool:
    """A failure a retry can fix: the connection broke, the server restarts or is full, a serialization
    conflict. Optuna re-raises SQLAlchemy errors from its sessions as ``StorageInternalError``, so the cause
    decides (found by restarting PostgreSQL under a running worker)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OperationalError | InterfaceError):
            text = str(getattr(current, "orig", current))
            return not is_login_refused(text)
        if isinstance(current, DBAPIError) and getattr(current, "connection_invalidated", False):
            return True
        if not isinstance(current, optuna.exceptions.StorageInternalError):
            return False
        current = current.__cause__
    return False


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc) + str(getattr(exc, "__cause__", "") or "")


def is_server_full(exc: BaseException) -> bool:
    """The server is up but its connection table is full, or the study server is on its way (starting, or
    requeued at its walltime): either is worth waiting for up to the deadline, where a dead server would be
    given up on after a few attempts."""
    text = _reason(exc)
    return any(marker in text for marker in ("too many clients", "too many connections", NOT_RUNNING))


def is_server_starting(exc: BaseException) -> bool:
    """The study server has published no address yet: no database was asked, only a file was looked for,
    so asking again soon costs nothing (a worker that backs off exponentially here starts its first trial
    seconds after the server could have served it)."""
    return NOT_RUNNING in _reason(exc)


def is_login_refused(reason: str) -> bool:
    return any(marker in reason for marker in LOGIN_REFUSED)


def first_line(exc: BaseException, url: str | None = None) -> str:
    """The error's first line, with the URL's password scrubbed."""
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    return scrub(lines[0] if lines else type(exc).__name__, url)
