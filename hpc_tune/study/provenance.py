"""Who ran a trial: host, pid and the SLURM ids of its worker, kept in ONE user attribute ``worker``.

Each user attribute is its own row, written with a read and an insert: seven separate attributes (host, pid
and five SLURM ids) cost seven round trips per trial, ~2 ms each here, more across a network. One attribute
holds them all. ``worker_of`` also reads the flat attributes of studies written before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.trial import FrozenTrial

WORKER_ATTR = "worker"
_LEGACY = ("host", "pid")
_LEGACY_SLURM = ("job_id", "array_job_id", "array_task_id", "global_task_id", "restart_count")


def worker_attr(host: str, pid: int, slurm: Mapping[str, Any]) -> dict[str, Any]:
    """The value of the ``worker`` attribute: host, pid, and the SLURM ids that are set."""
    return {"host": host, "pid": pid, **{k: v for k, v in slurm.items() if v is not None}}


def worker_of(trial: FrozenTrial) -> dict[str, Any]:
    found = trial.user_attrs.get(WORKER_ATTR)
    if isinstance(found, dict):
        return found
    legacy = {k: trial.user_attrs[k] for k in _LEGACY if k in trial.user_attrs}
    legacy.update(
        {k: trial.user_attrs[f"slurm.{k}"] for k in _LEGACY_SLURM if f"slurm.{k}" in trial.user_attrs}
    )
    return legacy
