"""The devices a task holds while it runs trials: what its GPU-hours (or CPU core-hours) are counted in.

A trial's cost to the user is not its wall time but the wall time of everything the scheduler set aside for
it: an array task with 2 GPUs bills 2 GPU-hours per hour whether the trial used both or not. The allocation
is read from what SLURM and the CUDA runtime are told, never from torch (a command or objective worker must
not import it to count): ``CUDA_VISIBLE_DEVICES`` is what the task's processes can see (SLURM's gres plugin
sets it, and a user who narrows it has narrowed what the trial holds), then SLURM's own GPU lists; without
GPUs, the CPU cores the task may run on (``SLURM_CPUS_PER_TASK``, else this process's CPU affinity).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

# Values CUDA and SLURM use for "no GPU here" (an empty list hides every device from CUDA too).
_NO_GPU = {"", "-1", "NoDevFiles", "none", "None"}
_GPU_LISTS = ("CUDA_VISIBLE_DEVICES", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS")


@dataclass(frozen=True)
class Devices:
    """What a task holds: ``count`` GPUs, or ``count`` CPU cores where it has no GPU."""

    kind: Literal["gpu", "cpu"]
    count: int
    ids: list[str] = field(default_factory=list)

    @property
    def unit(self) -> str:
        return "GPU-hours" if self.kind == "gpu" else "CPU core-hours"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _gpu_ids(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip() and part.strip() not in _NO_GPU]


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def devices_held(environ: Mapping[str, str] | None = None) -> Devices:
    """The devices of the task this process runs in (see the module's docstring for the order read)."""
    env = os.environ if environ is None else environ
    for key in _GPU_LISTS:
        if key in env:
            ids = _gpu_ids(env[key])
            if ids:
                return Devices("gpu", len(ids), ids)
            if key == "CUDA_VISIBLE_DEVICES":
                break  # set to hide every GPU: whatever SLURM lists, this task's processes see none
    on_node = env.get("SLURM_GPUS_ON_NODE", "").strip()
    if on_node.isdigit() and int(on_node) > 0 and "CUDA_VISIBLE_DEVICES" not in env:
        return Devices("gpu", int(on_node))
    cpus = env.get("SLURM_CPUS_PER_TASK", "").strip()
    if cpus.isdigit() and int(cpus) > 0:
        return Devices("cpu", int(cpus))
    return Devices("cpu", _cpu_count())


def device_share(devices: Mapping[str, Any] | None) -> float | None:
    """What one worker (and its trial) holds of its task's devices, as recorded with them: the task's count,
    divided among the ``shared_by`` workers of ``slurm.trials_per_gpu`` (the task bills its GPUs once)."""
    count = (devices or {}).get("count")
    if not isinstance(count, int) or count <= 0:
        return None
    shared = (devices or {}).get("shared_by", 1)
    return count / shared if isinstance(shared, int) and shared > 0 else float(count)


@dataclass(frozen=True)
class MemoryHeld:
    """The host memory a task may use, and where that figure came from (said in the ``auto`` choice)."""

    bytes: int | None
    source: str


_MIB = 2**20


def memory_held(environ: Mapping[str, str] | None = None, meminfo: str = "/proc/meminfo") -> MemoryHeld:
    """What SLURM granted the task (``--mem``: SLURM_MEM_PER_NODE; ``--mem-per-cpu``: SLURM_MEM_PER_CPU x its
    cores), else what the machine has free now: the host-memory budget several workers of a task share."""
    env = os.environ if environ is None else environ
    per_node = env.get("SLURM_MEM_PER_NODE", "").strip()
    if per_node.isdigit() and int(per_node) > 0:
        return MemoryHeld(int(per_node) * _MIB, "SLURM_MEM_PER_NODE")
    per_cpu = env.get("SLURM_MEM_PER_CPU", "").strip()
    if per_cpu.isdigit() and int(per_cpu) > 0:
        cpus = _cpus_of_task(env)
        return MemoryHeld(int(per_cpu) * cpus * _MIB, f"SLURM_MEM_PER_CPU x {cpus} cores")
    try:
        with open(meminfo, encoding="ascii") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return MemoryHeld(int(line.split()[1]) * 1024, "MemAvailable")
    except (OSError, ValueError, IndexError):
        pass
    return MemoryHeld(None, "unknown")


def cores_held(environ: Mapping[str, str] | None = None) -> int:
    """The CPU cores of the task (SLURM_CPUS_PER_TASK, else this process's affinity), GPU or not: what the
    workers of one task share for their threads."""
    return _cpus_of_task(os.environ if environ is None else environ)


def _cpus_of_task(env: Mapping[str, str]) -> int:
    cpus = env.get("SLURM_CPUS_PER_TASK", "").strip()
    return int(cpus) if cpus.isdigit() and int(cpus) > 0 else _cpu_count()
