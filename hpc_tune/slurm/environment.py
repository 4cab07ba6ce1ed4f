"""What SLURM tells a running task about itself, and how a task puts itself back in the queue."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from hpc_tune.errors import SlurmError
from hpc_tune.slurm.array_spec import _UINT_RE
from hpc_tune.slurm.commands import run_slurm

# Added to SLURM_ARRAY_TASK_ID when a request beyond MaxArraySize was split into several arrays.
OFFSET_ENV = "HPCTUNE_ARRAY_OFFSET"


def _env_int(environ: Mapping[str, str], key: str) -> int | None:
    value = environ.get(key, "").strip()
    if not value:
        return None
    if not _UINT_RE.match(value):
        raise SlurmError(f"{key}={value!r} is not a whole number", "environment")
    return int(value)


@dataclass(frozen=True)
class SlurmEnv:
    """What SLURM told this process about its job; all None outside SLURM (local runs)."""

    job_id: str | None = None
    array_job_id: str | None = None
    array_task_id: int | None = None
    restart_count: int = 0  # SLURM_RESTART_COUNT: unset on the first run, 1 after one requeue
    array_offset: int = 0  # HPCTUNE_ARRAY_OFFSET: nonzero for the later parts of a split array

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SlurmEnv:
        env = os.environ if environ is None else environ
        return cls(
            job_id=env.get("SLURM_JOB_ID") or None,
            array_job_id=env.get("SLURM_ARRAY_JOB_ID") or None,
            array_task_id=_env_int(env, "SLURM_ARRAY_TASK_ID"),
            restart_count=_env_int(env, "SLURM_RESTART_COUNT") or 0,
            array_offset=_env_int(env, OFFSET_ENV) or 0,
        )

    @property
    def in_slurm(self) -> bool:
        return self.job_id is not None

    @property
    def in_array(self) -> bool:
        return self.array_job_id is not None and self.array_task_id is not None

    @property
    def global_task_id(self) -> int | None:
        """The task's index in the whole request, also when it was split into several arrays."""
        return None if self.array_task_id is None else self.array_offset + self.array_task_id

    @property
    def task_ref(self) -> str | None:
        """What scontrol/scancel need to name exactly this task (never the bare SLURM_JOB_ID of a task)."""
        if self.in_array:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id

    def ids(self) -> dict[str, str | int | None]:
        """The ids that tie a trial to the log file and squeue line of its task; none outside SLURM."""
        if not self.in_slurm:
            return {}
        return {
            "job_id": self.job_id,
            "array_job_id": self.array_job_id,
            "array_task_id": self.array_task_id,
            "global_task_id": self.global_task_id,
            "restart_count": self.restart_count,
        }


def requeue_self() -> str:
    """The bash line that requeues the running array task, for scripts and docs.

    The braces matter: ``$SLURM_ARRAY_JOB_ID_`` is another (unset) variable. And never ``$SLURM_JOB_ID``
    alone: in the last-started task it is the whole array's id, and the requeue would hit every task.
    """
    return 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"'


def requeue_own_task(env: SlurmEnv | None = None) -> str:
    """Put this task back in the queue (it needs ``--requeue``, which rendered scripts carry); return its ref.

    Call it last, after the checkpoint is on disk and the trial is marked for resume: SLURM then ends the
    running task (SIGTERM, later SIGKILL) and starts it again ~11 s later with SLURM_RESTART_COUNT=1 under the
    local settings, ~2 min with SLURM's defaults.
    """
    env = SlurmEnv.from_environ() if env is None else env
    ref = env.task_ref
    if ref is None:
        raise SlurmError("cannot requeue: not running under SLURM (no SLURM_JOB_ID)", "environment")
    run_slurm(["scontrol", "requeue", ref])
    return ref
