"""``slurm.trials_per_gpu: auto``: how many workers one array task runs, from what its first trials measured.

Small models leave most of an 80-140 GiB GPU idle with one trial on it, but how many trials fit and whether
more of them finish sooner depends on the model, the data path and the GPU: so it is measured, not guessed.
The rule, as pure functions of the measurements (the supervisor, launchers/pack_auto.py, does the measuring):

- memory bounds it first: N_mem = floor(0.9 x capacity / peak), where peak is the largest a trial of this
  task took (on a GPU plus a CUDA context per process) and capacity the GPU's memory, else the task's;
- then N doubles (1, 2, 4, ...) while the finished trials per device-hour rise by at least 10 % over the best
  N so far, never past N_mem nor the cap (16, and the task's cores: each worker's Python side needs one);
- the best N measured is kept. Without a measured peak nothing grows: one more process on a full GPU fails
  every trial it shares the GPU with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GAIN = 1.10  # a larger N must finish at least 10 % more trials per device-hour to be worth its memory
MEMORY_SHARE = 0.9  # of the capacity: room for the allocator's fragmentation and the rest of the process
# A CUDA context outside torch's allocator, per process (300-600 MiB on recent GPUs; not measured here, as no
# GPU was lent to this project's tests).
CUDA_CONTEXT_BYTES = 512 * 2**20
_GIB = 2**30


@dataclass(frozen=True)
class PackLimits:
    """What bounds N before throughput is looked at."""

    peak_bytes: (
        int | None
    )  # the largest peak a measured trial took (None: not measured, e.g. a script on GPU)
    capacity_bytes: int | None
    capacity_source: str  # "GPU memory", "SLURM_MEM_PER_NODE", "MemAvailable", ...
    cap: int
    cap_source: str  # why the cap is what it is ("16, the most auto tries", "8 cores")

    @property
    def memory_limit(self) -> int | None:
        if not self.peak_bytes or not self.capacity_bytes:
            return None
        return max(1, math.floor(MEMORY_SHARE * self.capacity_bytes / self.peak_bytes))

    def memory_text(self) -> str:
        if self.peak_bytes is None:
            return "the trials' peak memory is not measured"
        if self.capacity_bytes is None:
            return f"peak {self.peak_bytes / _GIB:.2f} GiB, capacity unknown"
        return (
            f"peak {self.peak_bytes / _GIB:.2f} GiB of {self.capacity_bytes / _GIB:.1f} GiB "
            f"({self.capacity_source}): {self.memory_limit} fit"
        )


@dataclass(frozen=True)
class PackStep:
    """What to run now: ``n`` workers, either to measure them (``done`` False) or as the choice."""

    n: int
    done: bool
    why: str


def rate_text(rate: float) -> str:
    """A throughput as a person reads it: 11,224 rather than 1.122e+04."""
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def trials_to_measure(n: int) -> int:
    """Trials that must finish (each started with ``n`` workers running) before ``n`` is judged: one per
    worker, and never a single trial."""
    return max(2, n)


def throughput(durations: Sequence[float], n: int, devices: int) -> float:
    """Finished trials per device-hour of ``n`` workers whose trials took ``durations`` seconds: each worker
    finishes one trial per mean duration, and the task holds ``devices`` GPUs (or cores) meanwhile."""
    mean = sum(durations) / len(durations)
    return n * 3600.0 / max(mean, 1e-9) / max(devices, 1)


def next_pack_size(measured: Mapping[int, float], limits: PackLimits) -> PackStep:
    """The next step given the throughput ``measured`` at each N so far (trials per device-hour)."""
    if not measured:
        return PackStep(1, False, "measuring 1 worker")
    sizes = sorted(measured)
    best = sizes[0]
    for n in sizes[1:]:
        if measured[n] < GAIN * measured[best]:
            return PackStep(
                best,
                True,
                f"{n} workers finished {rate_text(measured[n])} trials per device-hour, less than 10 % more "
                f"than {best} ({rate_text(measured[best])})",
            )
        best = n
    memory = limits.memory_limit
    if memory is None:
        return PackStep(best, True, f"{limits.memory_text()}: not growing past {best}")
    if memory < best:  # a later trial peaked higher than the first ones
        return PackStep(memory, True, limits.memory_text())
    candidate = min(2 * best, limits.cap, memory)
    if candidate > best:
        return PackStep(candidate, False, f"measuring {candidate} workers")
    why = (
        limits.memory_text() if memory <= limits.cap else f"the most workers per task is {limits.cap_source}"
    )
    if len(sizes) > 1:
        why += f"; {best} workers finished {rate_text(measured[best])} trials per device-hour"
    return PackStep(best, True, why)


def choice_attr(
    step: PackStep, limits: PackLimits, measured: Mapping[int, float], **where: Any
) -> dict[str, Any]:
    """The study attribute that records the choice (attrs.TRIALS_PER_GPU): what ``collect`` prints and what a
    later task of the study starts with instead of measuring again."""
    return {
        "n": step.n,
        "why": step.why,
        "peak_memory_bytes": limits.peak_bytes,
        "capacity_bytes": limits.capacity_bytes,
        "capacity_source": limits.capacity_source,
        "throughput_per_device_hour": {str(n): round(v, 4) for n, v in sorted(measured.items())},
        **where,
    }
