"""How many connections a worker holds: engine options for many workers on one PostgreSQL study.

Measured (docs/design-notes.md): SQLAlchemy's default pool holds 2 connections per process and Optuna does
not retry a refused one, so a role limit of 40 killed 19 of 32 workers; NullPool holds none while idle.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from sqlalchemy.pool import NullPool, QueuePool

from hpc_tune.storage.url import StorageSpec

CONNECT_TIMEOUT_S = 10

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


def peak_connections(workers: int, pool: PoolKind = "auto") -> int:
    """The most connections ``workers`` workers of one study may hold at once (the sizing rule of
    docs/concepts.md): ``persistent`` keeps 2 per worker and opens 1 more while the heartbeat overlaps a
    storage call; ``none`` holds one per call in flight, the lock holder two (the lock and its work), and a
    heartbeat may overlap: about one per worker, plus two."""
    kind = resolve_pool(pool, {WORKERS_ENV: str(workers)})
    return 3 * workers if kind == "persistent" else workers + 2
