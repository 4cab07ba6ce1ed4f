"""Where the study lives: URL resolution, redaction, engine options for many workers, opening the storage.

Two kinds of storage (measured choices in docs/design-notes.md):
- the embedded default, an Optuna journal file under runs/<study>/ (fast, no server, single filesystem);
- PostgreSQL by URL for clusters, opened with few connections per worker (``engine_kwargs``).

Either is opened behind :class:`~hpc_tune.study.retrying.RetryingStorage`, so every call survives outages.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool, QueuePool

from hpc_tune.errors import StorageError, StorageUnavailableError
from hpc_tune.study import optuna_adapter as adapter
from hpc_tune.study.lock import register_lock_engine
from hpc_tune.study.retrying import DEFAULT_DEADLINE_S, RetryingStorage, RetryPolicy, retry_transient
from hpc_tune.study.retrying import first_line as retrying_first_line

EMBEDDED_FILE = "journal.log"
CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class StorageSpec:
    """A resolved storage: either a database URL or the embedded journal file of one study."""

    url: str | None
    journal_path: Path | None

    @property
    def is_postgres(self) -> bool:
        return self.url is not None and self.url.startswith("postgresql")

    @property
    def display(self) -> str:
        if self.url is not None:
            return redact_url(self.url)
        return f"journal:{self.journal_path}"


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


def resolve_storage(url: str | None, study_dir: Path) -> StorageSpec:
    """``url`` is already the winner of CLI flag > HPCTUNE_STORAGE > file; None means embedded."""
    if url is None or url in ("", "embedded"):
        return StorageSpec(url=None, journal_path=study_dir / EMBEDDED_FILE)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError("storage is not a database URL", redact_url(url)) from None
    if not parsed.drivername.startswith(("postgresql", "sqlite", "mysql")):
        raise StorageError(f"unsupported storage '{parsed.drivername}'", redact_url(url))
    return StorageSpec(url=url, journal_path=None)


PoolKind = Literal["auto", "persistent", "none"]
# Above this many workers of one study, "auto" holds no idle connection: 32 workers with one persistent
# connection each exceed a server with max_connections=20, and the extra workers could only wait.
AUTO_POOL_MAX_WORKERS = 16
WORKERS_ENV = "HPCTUNE_WORKERS"


def resolve_pool(pool: PoolKind, environ: Mapping[str, str] | None = None) -> Literal["persistent", "none"]:
    """``auto``: persistent connections when few workers share the study, none when many do.

    The number of workers comes from ``run --local`` (HPCTUNE_WORKERS) or SLURM (SLURM_ARRAY_TASK_COUNT,
    all tasks of the array, a safe over-estimate when ``%N`` limits how many run at once).
    """
    if pool != "auto":
        return pool
    env = os.environ if environ is None else environ
    for key in (WORKERS_ENV, "SLURM_ARRAY_TASK_COUNT"):
        value = env.get(key, "")
        if value.isdigit():
            return "none" if int(value) > AUTO_POOL_MAX_WORKERS else "persistent"
    return "persistent"


def engine_kwargs(spec: StorageSpec, pool: PoolKind = "auto") -> dict[str, object]:
    """Options for many workers: few connections each, checked before use, bounded connect time.

    ``persistent``: two connections kept per worker, one for the study lock and one for the storage calls
    made while the lock is held, plus one short-lived overflow connection when the heartbeat thread overlaps
    them. With a single kept connection the lock held it and every trial connected anew for its storage
    calls (one TCP connect and login per trial, ~3 ms here, more across a network). ``none`` (NullPool) keeps
    no idle connection and connects for every call (~4x slower per trial of a trivial objective, nothing next
    to an epoch of training); it lets more workers than the server's connection limit share a study, each
    waiting its turn. ``auto`` picks ``none`` above 16 workers: 16 x 2 kept connections stay well inside
    PostgreSQL's default ``max_connections=100``. ``pool_size=1, max_overflow=0`` fails in RDBStorage's
    schema check, which needs two connections (docs/design-notes.md).
    """
    if not spec.is_postgres:
        return {}
    common: dict[str, object] = {
        "pool_pre_ping": True,
        "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S},
    }
    if resolve_pool(pool) == "none":
        return {"poolclass": NullPool, **common}
    return {"poolclass": QueuePool, "pool_size": 2, "max_overflow": 1, "pool_timeout": 60, **common}


def open_storage(
    spec: StorageSpec,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    attempts: int | None = None,
    pool: PoolKind = "auto",
    retry_deadline_s: float = DEFAULT_DEADLINE_S,
) -> RetryingStorage:
    """Open the storage behind the retrying layer. An unreachable database raises
    StorageUnavailableError (exit 75) after ``attempts`` tries (HPCTUNE_CONNECT_ATTEMPTS, default 3)."""
    policy = RetryPolicy(deadline_s=retry_deadline_s)
    if spec.url is None:
        assert spec.journal_path is not None
        spec.journal_path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(spec.journal_path))
        return RetryingStorage(optuna.storages.JournalStorage(backend), policy=policy, where=spec.display)

    tries = attempts if attempts is not None else int(os.environ.get("HPCTUNE_CONNECT_ATTEMPTS", "3"))

    def make() -> optuna.storages.RDBStorage:
        storage = adapter.BulkReadRDBStorage(
            spec.url,
            engine_kwargs=engine_kwargs(spec, pool),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=stale_trial_callback,
        )
        # The study lock checks its connection out of the same pool: one persistent connection per worker.
        register_lock_engine(spec.url, storage.engine)
        return storage

    def make_racing() -> optuna.storages.RDBStorage:
        # Workers starting together on an empty database race to create Optuna's tables; the losers get an
        # IntegrityError/ProgrammingError and simply find the tables there on the next try.
        for attempt in range(5):
            try:
                return make()
            except (IntegrityError, ProgrammingError):
                if attempt == 4:
                    raise
                time.sleep(random.uniform(0.1, 0.5))
        raise AssertionError("unreachable")

    try:
        rdb = retry_transient(
            make_racing, RetryPolicy(deadline_s=retry_deadline_s, first_wait_s=1.0, attempts=max(1, tries))
        )
    except (IntegrityError, ProgrammingError) as exc:
        raise StorageError(
            f"cannot set up the study tables: {first_line(exc, spec.url)}", redact_url(spec.url)
        ) from None
    except (OperationalError, DBAPIError) as exc:
        reason = first_line(exc, spec.url)
        if any(marker in reason for marker in _LOGIN_REFUSED):
            # Not transient: retrying later will not help, so not EX_TEMPFAIL.
            raise StorageError(
                f"the database refused the login: {reason}; put the password in PGPASSFILE",
                redact_url(spec.url),
            ) from None
        raise StorageUnavailableError(
            f"cannot reach the study database: {first_line(exc, spec.url)}", redact_url(spec.url)
        ) from None
    return RetryingStorage(adapter.cached(rdb), policy=policy, where=redact_url(spec.url), engine=rdb.engine)


_LOGIN_REFUSED = ("password authentication failed", "no password supplied", "does not exist")


def first_line(exc: BaseException, url: str | None) -> str:
    """The error's first line with the URL's password scrubbed (driver messages can echo connection
    strings)."""
    return scrub(retrying_first_line(exc), url)
