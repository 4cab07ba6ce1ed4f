"""The SLURM wing: a task's environment, the sbatch/squeue/scontrol calls, and the readable array scripts
(render, submit). The cluster-specific part of hpc_tune is this folder; nothing in ``study/`` imports it."""

from hpc_tune.slurm.array_spec import DEFAULT_MAX_ARRAY_SIZE, ArrayChunk, ArraySpec
from hpc_tune.slurm.commands import (
    ACTIVE_STATES,
    TaskState,
    job_name_for,
    max_array_size,
    sbatch,
    sbatch_argv,
    scancel,
    squeue_study,
)
from hpc_tune.slurm.environment import OFFSET_ENV, SlurmEnv, requeue_own_task, requeue_self

__all__ = [
    "ACTIVE_STATES",
    "ArrayChunk",
    "ArraySpec",
    "DEFAULT_MAX_ARRAY_SIZE",
    "OFFSET_ENV",
    "SlurmEnv",
    "TaskState",
    "job_name_for",
    "max_array_size",
    "requeue_own_task",
    "requeue_self",
    "sbatch",
    "sbatch_argv",
    "scancel",
    "squeue_study",
]
