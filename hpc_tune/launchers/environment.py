"""The environment of workers started on this machine (``run --local``, ``hpc_tune.launch`` with the
local executor), one definition for both.

- OMP_NUM_THREADS: N processes each using every core oversubscribe the CPU (epochs were 100x slower in the
  demo); each worker gets its share of the cores unless the caller set it.
- HPCTUNE_WORKERS: how many workers share the study, so that ``worker.pool: auto`` holds no idle
  connection above 16 (storage/connections.py).
- HPCTUNE_STORAGE: the storage URL goes to the workers through the environment, never their argv, so a
  password in it cannot show in ``ps``.
- HPCTUNE_PACK_SLOT / HPCTUNE_PACK_SIZE: a worker of an array task's pack (``slurm.trials_per_gpu``,
  launchers/task_pack.py): its slot, and how many share the task; it leaves the requeue to the supervisor
  and takes its share of the GPU's memory.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hpc_tune.config import STORAGE_ENV
from hpc_tune.storage.connections import WORKERS_ENV
from hpc_tune.worker.resources import PACK_SIZE_ENV, PACK_SLOT_ENV


def local_worker_environment(
    workers: int, storage_url: str | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What to add to ``environ`` (default: this process's) for ``workers`` local workers."""
    env = os.environ if environ is None else environ
    added = {WORKERS_ENV: str(workers)}
    if not env.get("OMP_NUM_THREADS"):
        added["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    if storage_url:
        added[STORAGE_ENV] = storage_url
    return added


def pack_worker_environment(
    slot: int,
    size: int,
    storage_url: str | None,
    environ: Mapping[str, str],
    *,
    study_workers: int,
    cores: int,
) -> dict[str, str]:
    """What to add to ``environ`` for worker ``slot`` of ``size`` sharing an array task's ``cores``:
    ``cores // size`` threads each (never more than a user's own OMP_NUM_THREADS), and ``study_workers``
    for the connection pool's choice."""
    share = max(1, cores // size)
    given = environ.get("OMP_NUM_THREADS", "").strip()
    threads = min(int(given), share) if given.isdigit() and int(given) > 0 else share
    added = local_worker_environment(study_workers, storage_url, environ)
    added.update({"OMP_NUM_THREADS": str(threads), PACK_SLOT_ENV: str(slot), PACK_SIZE_ENV: str(size)})
    return added
