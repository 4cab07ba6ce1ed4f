"""The two ways a study lock is held: a PostgreSQL advisory lock, or an flock on a file of the results folder.

The lock serves "exactly once" work (the budget's count + new trial as one step, enqueues, phase switches);
:meth:`~hpc_tune.storage.store.StudyStore.lock` picks the way from its storage.

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

from hpc_tune.storage.failures import is_transient

log = logging.getLogger(__name__)


class LockLost(Exception):
    """The database connection that held the lock broke while the locked work ran (a restart): another
    worker may have held the lock meanwhile, so the work must check its result."""


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


@contextlib.contextmanager
def advisory_lock(engine: sqlalchemy.Engine, key: str, purpose: str) -> Iterator[None]:
    """Hold PostgreSQL's advisory lock ``key`` while the block runs.

    The lock's transaction writes nothing, so a failure to release it (the server restarted meanwhile) is
    harmless for the lock itself: the server dropped it with the connection. It is reported as
    :class:`LockLost` only after the block completed, so the caller can verify what it did (the block's own
    storage calls went through the retrying layer and did complete).
    """
    with _locked_connection(engine, {"key": key}) as conn:
        yield
        try:
            conn.commit()
        except Exception as exc:
            if not is_transient(exc):
                raise
            log.warning("the %s lock's connection broke while held: checking the result", purpose)
            raise LockLost(purpose) from None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if needed) while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
