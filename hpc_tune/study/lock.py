"""A lock shared by every worker of a study, for "exactly once" work: the budget (count + new trial as one
step), enqueues (the baseline, promotions, retries) and phase switches.

PostgreSQL: a transaction-level advisory lock, so it works across nodes and is released when its holder dies
(8 racing ``enqueue_trial(skip_if_exists=True)`` calls enqueued up to 5 copies; under this lock, exactly 1).
The embedded store: an flock on a file beside the journal (one filesystem, as the journal itself).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy.pool import NullPool

from hpc_tune.study.retrying import is_transient

log = logging.getLogger(__name__)

_LOCK_ENGINES: dict[str, sqlalchemy.Engine] = {}


def register_lock_engine(url: str, engine: sqlalchemy.Engine) -> None:
    """Let the lock check its connection out of the storage's own pool: one persistent connection per
    worker instead of two."""
    _LOCK_ENGINES[url] = engine


def _lock_engine(url: str) -> sqlalchemy.Engine:
    if url not in _LOCK_ENGINES:
        from hpc_tune.study.storage import StorageSpec, engine_kwargs

        spec = StorageSpec(url=url, journal_path=None)
        _LOCK_ENGINES[url] = sqlalchemy.create_engine(url, **engine_kwargs(spec))  # type: ignore[arg-type]
    return _LOCK_ENGINES[url]


def _locked_connection(engine: sqlalchemy.Engine, key: dict[str, str]) -> Any:
    """A connection whose transaction holds the advisory lock.

    With a pooled engine, wait in the server (``pg_advisory_xact_lock``): the waiters' connections are their
    own idle pooled ones. Without a pool (many workers near the server's connection limit), a waiter that sat
    in the server would hold a connection while the holder needs one more for its own storage calls: with 32
    workers on 20 connections every connection ended up held by a waiter and nothing moved. So there a
    waiter asks with ``pg_try_advisory_xact_lock`` and gives its connection back between tries.
    """
    if not isinstance(engine.pool, NullPool):
        conn = engine.connect()
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), key)
        except BaseException:
            conn.close()
            raise
        return conn
    wait = 0.005
    while True:
        conn = engine.connect()
        try:
            if conn.execute(
                sqlalchemy.text("SELECT pg_try_advisory_xact_lock(hashtext(:key))"), key
            ).scalar():
                return conn
        except BaseException:
            conn.close()
            raise
        conn.close()
        time.sleep(random.uniform(wait / 2, wait))
        wait = min(0.5, wait * 2)


class LockLost(Exception):
    """The database connection that held the lock broke while the locked work ran (a restart): another
    worker may have held the lock meanwhile, so the work must check its result."""


@contextlib.contextmanager
def study_lock(url: str | None, study_name: str, study_dir: Path, purpose: str = "budget") -> Iterator[None]:
    """Hold the study's ``purpose`` lock while the block runs.

    The lock's transaction writes nothing, so a failure to release it (the server restarted meanwhile) is
    harmless for the lock itself: the server dropped it with the connection. It is reported as
    :class:`LockLost` only after the block completed, so the caller can verify what it did (the block's own
    storage calls went through the retrying layer and did complete).
    """
    if url is not None and url.startswith("postgresql"):
        engine = _lock_engine(url)
        key = {"key": f"hpctune:{purpose}:{study_name}"}
        with _locked_connection(engine, key) as conn:
            yield
            try:
                conn.commit()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("the %s lock's connection broke while held: checking the result", purpose)
                raise LockLost(purpose) from None
        return
    study_dir.mkdir(parents=True, exist_ok=True)
    with open(study_dir / f".{purpose}.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
