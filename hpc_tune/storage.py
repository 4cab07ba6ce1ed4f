"""Where the study lives: URL resolution, redaction, engine options for many workers, and a study-wide lock.

Two kinds of storage (measured choices in DESIGN §4 and docs/design-notes.md):
- the embedded default, an Optuna journal file under runs/<study>/ (fast, no server, single filesystem);
- PostgreSQL by URL for clusters, opened with a pool of one persistent connection per worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import optuna
import sqlalchemy
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.pool import NullPool, QueuePool

from hpc_tune.errors import StorageError, StorageUnavailableError

T = TypeVar("T")

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


PoolKind = Literal["single", "none"]


def engine_kwargs(spec: StorageSpec, pool: PoolKind = "single") -> dict[str, object]:
    """Options for many workers: few connections each, checked before use, bounded connect time.

    ``single`` (default): one persistent connection per worker, which the study lock shares, plus up to two
    short-lived overflow connections when the heartbeat thread, the lock and a storage call overlap. NullPool
    (``none``) holds no idle connection but connects ~25 times per trial (measured: 4x slower per trial,
    docs/benchmarks.md); keep it for very large arrays close to the server's connection limit. The default
    QueuePool keeps more connections than needed (two per worker exhausted a role limit of 40 with 32
    workers), and ``pool_size=1, max_overflow=0`` fails in RDBStorage's schema check, which needs two
    (DESIGN §4).
    """
    if not spec.is_postgres:
        return {}
    common: dict[str, object] = {
        "pool_pre_ping": True,
        "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S},
    }
    if pool == "none":
        return {"poolclass": NullPool, **common}
    return {"poolclass": QueuePool, "pool_size": 1, "max_overflow": 2, "pool_timeout": 60, **common}


def open_storage(
    spec: StorageSpec,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    attempts: int | None = None,
    pool: PoolKind = "single",
) -> optuna.storages.BaseStorage:
    """Open the storage; an unreachable database raises StorageUnavailableError (exit 75) after retries."""
    if spec.url is None:
        assert spec.journal_path is not None
        spec.journal_path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(spec.journal_path))
        return optuna.storages.JournalStorage(backend)

    tries = attempts if attempts is not None else int(os.environ.get("HPCTUNE_CONNECT_ATTEMPTS", "3"))

    def make() -> optuna.storages.BaseStorage:
        storage = optuna.storages.RDBStorage(
            spec.url,
            engine_kwargs=engine_kwargs(spec, pool),
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=stale_trial_callback,
        )
        # The study lock checks its connection out of the same pool: one persistent connection per worker.
        _LOCK_ENGINES[spec.url] = storage.engine
        return storage

    def make_racing() -> optuna.storages.BaseStorage:
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
        return retry_transient(make_racing, attempts=max(1, tries), first_wait=1.0)
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


_LOGIN_REFUSED = ("password authentication failed", "no password supplied", "does not exist")


def first_line(exc: BaseException, url: str | None) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [ln.strip() for ln in str(orig).splitlines() if ln.strip()]
    return scrub(lines[0] if lines else type(exc).__name__, url)


def is_transient(exc: BaseException) -> bool:
    """Connection-level failures a retry can fix; integrity or programming errors are not retried.

    Optuna re-raises SQLAlchemy errors from its sessions as ``StorageInternalError``: the cause decides
    (found by restarting PostgreSQL under a running worker).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OperationalError):
            return True
        if isinstance(current, DBAPIError) and getattr(current, "connection_invalidated", False):
            return True
        if not isinstance(current, optuna.exceptions.StorageInternalError):
            return False
        current = current.__cause__
    return False


# How long a worker keeps retrying a storage call through a database outage (a restart, a failover) before
# giving up: long enough for a PostgreSQL restart, short enough that a dead server ends the task.
TRANSIENT_DEADLINE_S = 120.0


def retry_transient(
    fn: Callable[[], T],
    *,
    attempts: int | None = None,
    deadline_s: float = TRANSIENT_DEADLINE_S,
    first_wait: float = 0.5,
    max_wait: float = 8.0,
) -> T:
    """Call ``fn`` again after a transient database error, with exponential back-off and jitter, until
    ``attempts`` calls were made or ``deadline_s`` passed.

    A database blip must not turn a healthy trial into a FAIL; anything else propagates at once.
    """
    deadline = time.monotonic() + deadline_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            out_of_tries = attempts is not None and attempt >= attempts
            if out_of_tries or not is_transient(exc) or time.monotonic() >= deadline:
                raise
            wait = min(max_wait, first_wait * 2 ** (attempt - 1))
            time.sleep(min(random.uniform(wait / 2, wait), max(0.0, deadline - time.monotonic())))


_LOCK_ENGINES: dict[str, sqlalchemy.Engine] = {}


def _lock_engine(url: str) -> sqlalchemy.Engine:
    if url not in _LOCK_ENGINES:
        spec = StorageSpec(url=url, journal_path=None)
        _LOCK_ENGINES[url] = sqlalchemy.create_engine(url, **engine_kwargs(spec))  # type: ignore[arg-type]
    return _LOCK_ENGINES[url]


@contextlib.contextmanager
def study_lock(
    spec: StorageSpec, study_name: str, study_dir: Path, purpose: str = "budget"
) -> Iterator[None]:
    """A lock shared by every worker of the study, for "exactly once" work (budget, enqueues).

    PostgreSQL: a transaction-level advisory lock, so it works across nodes and is released even if the
    holder dies. Otherwise: an flock on a file beside the study (one filesystem, as the journal itself).
    """
    if spec.is_postgres:
        assert spec.url is not None
        engine = _lock_engine(spec.url)
        with engine.begin() as conn:
            conn.execute(
                sqlalchemy.text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"hpctune:{purpose}:{study_name}"},
            )
            yield
        return
    study_dir.mkdir(parents=True, exist_ok=True)
    with open(study_dir / f".{purpose}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
