"""SLURM itself, behind a small interface: array specs (array_spec.py), the sbatch/squeue/scontrol/scancel
calls (commands.py) and what SLURM tells a running task about itself (environment.py). It imports nothing of
hpc_tune but its errors; the launchers (hpc_tune/launchers/) and the worker's walltime requeue stand on it."""

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
from hpc_tune.slurm.study_jobs import StudyStatus

__all__ = [
    "ACTIVE_STATES",
    "ArrayChunk",
    "ArraySpec",
    "DEFAULT_MAX_ARRAY_SIZE",
    "OFFSET_ENV",
    "SlurmEnv",
    "StudyStatus",
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
