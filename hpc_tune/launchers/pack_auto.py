"""``slurm.trials_per_gpu: auto``: the supervisor's measurements for the rule of policy/pack_size.py.

What is measured comes from the trials' own JSON records (storage/records.py), which the workers write
anyway: their pid says which worker of this task ran them, ``duration_s`` how long they took, and
``peak_memory_bytes`` / ``device_memory_bytes`` how much memory they held (the GPU's figures only the engine
can read: the supervisor never imports torch). A size is judged on trials that started while that many
workers ran (each size starts fresh workers: launchers/task_pack.py) and ran whole: retries and
continuations resumed from a checkpoint are not measurements, nor trials cut short by a signal.

The first task to decide records its choice in the study (``attrs.TRIALS_PER_GPU``); a task that finds it
there, a requeued one included, starts with it instead of measuring again.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from hpc_tune import attrs
from hpc_tune.config import TRIALS_PER_GPU_AUTO_MAX, LoadedConfig
from hpc_tune.policy.pack_size import (
    CUDA_CONTEXT_BYTES,
    PackLimits,
    PackStep,
    choice_attr,
    next_pack_size,
    rate_text,
    throughput,
    trials_to_measure,
)
from hpc_tune.policy.shared_study import SharedStudy
from hpc_tune.slurm.allocation import Devices, MemoryHeld
from hpc_tune.storage.records import TRIALS_DIR, read_trial_json

log = logging.getLogger(__name__)

READ_EVERY_S = 1.0  # the records are read at most this often while a size is measured
# Trials that end like this were cut short by a signal or a dead worker: their duration is not a trial's.
_NOT_MEASURED = {"walltime", "walltime_killed", "interrupted", "worker_killed", "heartbeat_stale"}


class AutoSizer:
    """Measures one size after another for the supervisor and says when to change it."""

    def __init__(
        self,
        shared: SharedStudy,
        loaded: LoadedConfig,
        devices: Devices,
        cores: int,
        memory: MemoryHeld,
        where: dict[str, Any],
        say: Callable[[str], None],
    ) -> None:
        self.shared = shared
        self.trials_dir = loaded.study_dir / TRIALS_DIR
        self.devices = devices
        self.memory = memory
        self.where = where
        self.say = say
        self.host = socket.gethostname()
        self.cap = max(1, min(TRIALS_PER_GPU_AUTO_MAX, cores))
        self.cap_source = (
            f"{self.cap}, the task's cores"
            if self.cap < TRIALS_PER_GPU_AUTO_MAX
            else f"{self.cap}, auto's cap"
        )
        self.measured: dict[int, float] = {}
        self.size = 1
        self.pids: set[int] = set()  # this size's workers
        self.our_pids: set[int] = set()  # every worker this task started: their peaks bound the size
        self.finished: dict[str, dict[str, Any]] = {}  # final records of our workers, by file name
        self.others: set[str] = set()  # files of other tasks' workers (or earlier ones): never read again
        self.done = False
        self.choice: dict[str, Any] | None = None
        self._read_at = 0.0

    def start(self) -> int:
        """The size to start with: the study's recorded choice, else 1 (the first to measure)."""
        recorded = self.shared.study.user_attrs.get(attrs.TRIALS_PER_GPU)
        n = recorded.get("n") if isinstance(recorded, dict) else None
        if isinstance(n, int) and n >= 1:
            self.done, self.choice = True, recorded
            self.say(f"trials_per_gpu auto: {n} worker(s), as the study recorded ({recorded.get('why')})")
            return min(n, self.cap)  # recorded by a task with more cores
        self.say("trials_per_gpu auto: measuring 1 worker")
        return 1

    def begin(self, size: int, pids: Collection[int]) -> None:
        """A new size runs from now on, in workers ``pids`` (a replacement's pid is added with ``add``)."""
        self.size, self.pids = size, set(pids)
        self.our_pids |= self.pids

    def add(self, pid: int) -> None:
        self.pids.add(pid)
        self.our_pids.add(pid)

    def poll(self) -> PackStep | None:
        """The next step once the current size is measured; None while it is not (or after the choice)."""
        if self.done or time.monotonic() - self._read_at < READ_EVERY_S:
            return None
        self._read_at = time.monotonic()
        self._read()
        durations = [float(r["duration_s"]) for r in self.finished.values() if self._measures(r, self.pids)]
        if len(durations) < trials_to_measure(self.size):
            return None
        self.measured[self.size] = throughput(durations, self.size, self.devices.count)
        step = next_pack_size(self.measured, self.limits())
        rate = rate_text(self.measured[self.size])
        then = f"keeping {step.n}" if step.done else f"next: {step.n}"
        self.say(f"trials_per_gpu auto: {self.size} worker(s) finished {rate} trials per device-hour; {then}")
        if step.done:
            self._decide(step)
        return step

    def conclude(self, ended_by: str) -> None:
        """The task ended before the rule did (the budget was used, the walltime came): keep the best size
        measured, if one was."""
        if self.done or not self.measured:
            return
        step = next_pack_size(self.measured, self.limits())
        if not step.done:
            best = max(self.measured)
            step = PackStep(best, True, f"{ended_by} before {step.n} workers were measured")
        self._decide(step)

    def limits(self) -> PackLimits:
        mine = [r for r in self.finished.values() if r.get("pid") in self.our_pids]
        if self.devices.kind == "gpu":  # only the engine's figures are the GPU's (a script's RSS is not)
            gpu = [r for r in mine if r.get("device_memory_bytes") and r.get("peak_memory_bytes")]
            peak = max((int(r["peak_memory_bytes"]) for r in gpu), default=None)
            capacity = min((int(r["device_memory_bytes"]) for r in gpu), default=None)
            return PackLimits(
                None if peak is None else peak + CUDA_CONTEXT_BYTES,
                capacity,
                "GPU memory",
                self.cap,
                self.cap_source,
            )
        peaks = [int(r["peak_memory_bytes"]) for r in mine if r.get("peak_memory_bytes")]
        return PackLimits(
            max(peaks, default=None), self.memory.bytes, self.memory.source, self.cap, self.cap_source
        )

    def _measures(self, record: dict[str, Any], pids: Collection[int]) -> bool:
        return (
            record.get("pid") in pids
            and record.get("retry_of") is None
            and record.get("reason") not in _NOT_MEASURED
            and isinstance(record.get("duration_s"), (int, float))
        )

    def _read(self) -> None:
        """Our workers' finished records not read yet; other tasks' files are skipped by their pid."""
        try:
            paths = sorted(self.trials_dir.glob("trial-*.json"))
        except OSError:
            return
        for path in paths:
            if path.name in self.finished or path.name in self.others:
                continue
            data = read_trial_json(Path(path))
            if data is None:
                continue
            if data.get("host") != self.host or data.get("pid") not in self.our_pids:
                self.others.add(path.name)  # a trial's file is written by the one worker that runs it
                continue
            if data.get("state") not in (None, "RUNNING"):
                self.finished[path.name] = data

    def _decide(self, step: PackStep) -> None:
        self.done = True
        value = choice_attr(step, self.limits(), self.measured, **self.where)
        self.choice = value
        self.say(f"trials_per_gpu auto: chose {step.n} worker(s): {step.why}")
        with self.shared.lock("enqueue"):  # the first task to decide records it; the others keep theirs
            if attrs.TRIALS_PER_GPU not in self.shared.study.user_attrs:
                self.shared.study.set_user_attr(attrs.TRIALS_PER_GPU, value)
