"""What ``storage:`` may say, checked when the config is loaded: ``null`` or ``embedded`` (the journal file
under the results folder), ``server`` (a PostgreSQL server hpctune runs itself for the study), or a database
URL of a dialect Optuna's RDBStorage runs on.

Checked here, once, so that ``check``, ``render``, ``submit``, ``launch`` and every worker agree: a value
refused by the workers alone would be refused after the array was submitted. The URL helpers live here too:
whatever prints a storage value redacts it first.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

EMBEDDED = "embedded"
SERVER = "server"
DATABASE_DIALECTS = ("postgresql", "sqlite", "mysql")
_EXAMPLE = "postgresql+psycopg2://USER@HOST/DB"


def is_embedded(storage: str | None) -> bool:
    """Whether a storage value means the embedded journal store (``null``, empty, or ``embedded``)."""
    return storage is None or storage in ("", EMBEDDED)


def is_server(storage: str | None) -> bool:
    """Whether a storage value means the study server hpctune runs itself (storage/server/)."""
    return storage == SERVER


def check_storage(storage: str | None) -> str | None:
    """The value as given, or ValueError saying what is wrong and what to write instead (redacted)."""
    if is_embedded(storage) or is_server(storage):
        return storage
    assert storage is not None
    try:
        dialect = make_url(storage).get_backend_name()
    except (ArgumentError, ValueError):
        raise ValueError(
            f"{redact_url(storage)!r} is not a database URL: use null (the embedded store), server (a study "
            f"server hpctune runs) or a URL such as {_EXAMPLE}"
        ) from None
    if dialect == "grpc":
        # Optuna's GrpcStorageProxy is a plain storage: no heartbeat (a dead worker's trial would stay RUNNING
        # and hold the budget) and no engine to take the study lock on (the exact budget, enqueues once).
        raise ValueError(
            "Optuna's gRPC storage proxy is not supported: it has no heartbeat and no study lock; to get "
            "past a database's connection limit, connect through PgBouncer in transaction mode "
            f"({_EXAMPLE} with PgBouncer's host and port), or use server"
        )
    if dialect not in DATABASE_DIALECTS:
        raise ValueError(
            f"unsupported storage {dialect!r}: use null (the embedded store), server (a study server hpctune "
            f"runs) or PostgreSQL ({_EXAMPLE})"
        )
    return storage


def redact_url(url: str) -> str:
    """The URL as it may be printed: any password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not a SQLAlchemy URL: hide anything between '//' user ':' and '@' the crude way.
        head, sep, tail = url.partition("://")
        if sep and "@" in tail and ":" in tail.split("@", 1)[0]:
            user = tail.split("@", 1)[0].split(":", 1)[0]
            return f"{head}://{user}:***@{tail.split('@', 1)[1]}"
        return url


def url_password(url: str) -> str | None:
    try:
        return make_url(url).password
    except (ArgumentError, ValueError):
        return None


def scrub(text: str, url: str | None) -> str:
    """Remove the URL's password from any text (driver error messages can echo connection strings)."""
    password = url_password(url) if url else None
    return text.replace(password, "***") if password else text
