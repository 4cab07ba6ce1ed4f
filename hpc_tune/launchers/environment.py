"""The environment of workers started on this machine (``run --local``, ``hpc_tune.launch`` with the
local executor), one definition for both.

- OMP_NUM_THREADS: N processes each using every core oversubscribe the CPU (epochs were 100x slower in the
  demo); each worker gets its share of the cores unless the caller set it.
- HPCTUNE_WORKERS: how many workers share the study, so that ``worker.pool: auto`` holds no idle
  connection above 16 (storage/connections.py).
- HPCTUNE_STORAGE: the storage URL goes to the workers through the environment, never their argv, so a
  password in it cannot show in ``ps``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hpc_tune.config import STORAGE_ENV
from hpc_tune.storage.connections import WORKERS_ENV


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
