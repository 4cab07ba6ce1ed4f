"""One handle on a study's storage: the Optuna storage behind the retrying layer, the SQLAlchemy engine it
owns, and the study lock, which checks its connection out of that same engine.

Every part of hpc_tune that opens a study goes through :func:`open_store` (measured choices in
docs/design-notes.md):
- the embedded default, an Optuna journal file under runs/<study>/ (fast, no server, single filesystem);
- PostgreSQL by URL for clusters, opened with few connections per worker (storage/connections.py).
Either is opened behind :class:`~hpc_tune.storage.retrying.RetryingStorage`, so every call survives outages.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import optuna
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError

from hpc_tune.config.storage_value import redact_url
from hpc_tune.errors import StorageError, StorageUnavailableError
from hpc_tune.storage import optuna_adapter as adapter
from hpc_tune.storage.connections import CONNECT_TIMEOUT_S, PoolKind, engine_kwargs
from hpc_tune.storage.failures import first_line, is_login_refused
from hpc_tune.storage.lock import advisory_lock, file_lock
from hpc_tune.storage.retrying import DEFAULT_DEADLINE_S, RetryingStorage, RetryPolicy, retry_transient
from hpc_tune.storage.server.connect import server_connector
from hpc_tune.storage.url import StorageSpec


@dataclass(frozen=True)
class StudyStore:
    """An open storage and where it is. ``lock`` is the study lock of one study on it: an advisory lock on
    this storage's own engine (one persistent connection per worker, not a second pool), or an flock in the
    study's folder for storages without one."""

    spec: StorageSpec
    storage: RetryingStorage

    @property
    def display(self) -> str:
        return self.spec.display

    @contextlib.contextmanager
    def lock(self, study_name: str, purpose: str = "budget") -> Iterator[None]:
        """Hold the ``purpose`` lock of study ``study_name`` while the block runs (see storage/lock.py)."""
        if self.spec.is_postgres and self.storage.engine is not None:
            with advisory_lock(self.storage.engine, f"hpctune:{purpose}:{study_name}", purpose):
                yield
            return
        with file_lock(self.spec.study_dir / f".{purpose}.lock"):
            yield


def open_store(
    spec: StorageSpec,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_trial_callback: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    attempts: int | None = None,
    pool: PoolKind = "auto",
    retry_deadline_s: float = DEFAULT_DEADLINE_S,
) -> StudyStore:
    """Open the storage behind the retrying layer. An unreachable database raises StorageUnavailableError
    (exit 75) after ``attempts`` tries (HPCTUNE_CONNECT_ATTEMPTS, default 3); a refused login StorageError."""
    policy = RetryPolicy(deadline_s=retry_deadline_s)
    if spec.url is None:
        assert spec.journal_path is not None
        spec.journal_path.parent.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(spec.journal_path))
        journal = optuna.storages.JournalStorage(backend)
        return StudyStore(spec, RetryingStorage(journal, policy=policy, where=spec.display))

    tries = attempts if attempts is not None else int(os.environ.get("HPCTUNE_CONNECT_ATTEMPTS", "3"))

    kwargs = engine_kwargs(spec, pool)
    if spec.server_dir is not None:
        kwargs["creator"] = server_connector(spec.server_dir, CONNECT_TIMEOUT_S)

    def make() -> optuna.storages.RDBStorage:
        return adapter.BulkReadRDBStorage(
            spec.url,
            engine_kwargs=kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=stale_trial_callback,
        )

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
            f"cannot set up the study tables: {first_line(exc, spec.url)}", spec.display
        ) from None
    except (OperationalError, DBAPIError, optuna.exceptions.StorageInternalError) as exc:
        # Optuna wraps what failed while it set up its tables (a full server, a role at its limit).
        cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else None
        reason = first_line(cause or exc, spec.url)
        if is_login_refused(reason):
            # Not transient: retrying later will not help, so not EX_TEMPFAIL.
            raise StorageError(
                f"the database refused the login: {reason}; put the password in PGPASSFILE",
                spec.display,
            ) from None
        raise StorageUnavailableError(f"cannot reach the study database: {reason}", spec.display) from None
    storage = RetryingStorage(
        adapter.cached(rdb), policy=policy, where=redact_url(spec.url), engine=rdb.engine
    )
    return StudyStore(spec, storage)
