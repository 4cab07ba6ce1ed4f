"""An array task that runs several trials at once on its GPU(s): ``slurm.trials_per_gpu``.

The rendered script still ``exec``s ``hpctune worker -c CONFIG``; with ``trials_per_gpu`` other than 1 that
process becomes this supervisor (cli/local_commands.py) and its children are the workers. Why a supervisor
rather than N workers started by the script: it is the batch shell, so SLURM's walltime signal
(``--signal=B:USR2@grace``) reaches it alone and it must reach every worker; the task must requeue itself
once, after every worker has handed its trial on; and on the journal store a child killed by a signal
leaves a RUNNING trial that only its parent sees die (launchers/local.py, whose spawn and recovery this
reuses).

- the workers: ``python -m hpc_tune worker -c CONFIG --worker-index I``, I = global task id x stride + slot
  (stride N, or auto's cap), so no two workers of the array share a sampler stream; a slot started again
  gets a stream of its own; the storage URL is in their environment (launchers/environment.py), never argv;
- USR2, SIGTERM and SIGINT are forwarded to every worker. A worker starts with them blocked and unblocks
  them once it handles them (worker/signals.py): one that was still importing is neither killed by USR2's
  default action nor misses it;
- workers never requeue (HPCTUNE_PACK_SLOT); once all have exited, the task requeues itself once when the
  walltime signal came (or a worker's walltime admission asked for it) and the study's budget is not used up;
- a worker killed by a signal: its trials are failed and re-run at once, and a replacement starts;
- the exit code: 0 when every worker ended normally, 143 when the task was interrupted, else the first failed
  worker's code with its ``Error:`` line (WorkerFailedError);
- ``auto`` changes the size by starting the new size's workers behind a gate while the old ones finish
  (``_resize``; launchers/pack_auto.py measures); CUDA MPS: launchers/mps.py.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from hpc_tune.config import TRIALS_PER_GPU_AUTO_MAX, LoadedConfig
from hpc_tune.errors import WorkerFailedError
from hpc_tune.launchers.environment import pack_worker_environment
from hpc_tune.launchers.local import WorkerProcess, first_error_line, recover_killed, spawn_worker
from hpc_tune.launchers.mps import Mps, start_mps
from hpc_tune.launchers.pack_auto import AutoSizer
from hpc_tune.launchers.pack_gate import SizeChange
from hpc_tune.policy.budget import budget_state
from hpc_tune.policy.shared_study import open_study
from hpc_tune.slurm.allocation import cores_held, devices_held, memory_held
from hpc_tune.slurm.environment import SlurmEnv, requeue_own_task
from hpc_tune.worker.loop import EXIT_INTERRUPTED, RESTART_SEED_STRIDE
from hpc_tune.worker.resources import PACK_SIZE_ENV, PACK_SLOT_ENV, pack_size

log = logging.getLogger(__name__)

POLL_S = 0.25
# A worker's exit code when it stopped for the walltime (or its admission) and left the requeue to us.
REQUEUE_WANTED = 88
# Added to a slot's sampler index each time the slot starts again (a new size, a replacement): with
# sampler.seed set, the same index would draw the drained worker's parameters once more. The worker adds
# RESTART_SEED_STRIDE x SLURM_RESTART_COUNT (below 100 requeues) within it; seeds stay below 2**32.
GENERATION_STRIDE = RESTART_SEED_STRIDE * 100
_FORWARDED = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


def is_pack_worker(environ: Mapping[str, str]) -> bool:
    return PACK_SLOT_ENV in environ


def packs(loaded: LoadedConfig, environ: Mapping[str, str]) -> bool:
    """Whether ``hpctune worker`` is this supervisor rather than a worker."""
    return loaded.config.slurm.trials_per_gpu != 1 and not is_pack_worker(environ)


def as_pack_worker(loaded: LoadedConfig, environ: Mapping[str, str]) -> LoadedConfig:
    """A worker of N plans its batches within 1/N of the GPU's ``train.memory_fraction``: the batch probe
    would otherwise take the GPU as its own."""
    n = pack_size(environ)
    if n == 1:
        return loaded
    train = loaded.config.train
    train = train.model_copy(update={"memory_fraction": train.memory_fraction / n})
    return loaded.model_copy(update={"config": loaded.config.model_copy(update={"train": train})})


@dataclass
class PackReport:
    size: int
    mps: str = "off"
    exit_codes: list[int] = field(default_factory=list)
    recovered_trials: list[int] = field(default_factory=list)
    replacements: int = 0
    logs: list[Path] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    walltime: bool = False  # USR2 came
    requeue_asked: bool = False  # a worker's walltime admission asked for the task again
    interrupted_by: int | None = None
    requeued: str | None = None
    choice: dict[str, Any] | None = None  # auto: what was chosen and why

    @property
    def failed(self) -> list[int]:
        """Exit codes of workers that stopped on an error (killed ones are recovered, not failed)."""
        return [c for c in self.exit_codes if c > 0 and c not in (EXIT_INTERRUPTED, REQUEUE_WANTED)]

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.interrupted_by is not None else 0

    def raise_for_failures(self) -> None:
        if not self.failed or self.interrupted_by is not None:
            return
        why = first_error_line(self.logs) or f"exit codes {self.failed}"
        # The worker's line already names where; its log's path was said when it started.
        raise WorkerFailedError(f"a worker of the task failed: {why}", exit_code=self.failed[0])


def task_name(slurm: SlurmEnv) -> str:
    """What the task's worker logs and MPS folder are named after."""
    if slurm.in_array:
        restart = f".r{slurm.restart_count}" if slurm.restart_count else ""
        return f"array-{slurm.array_job_id}_{slurm.array_task_id}{restart}"
    return f"pack-{os.getpid()}"


def study_workers(environ: Mapping[str, str], per_task: int) -> int:
    """Workers of the whole study, for the connection pool's choice (storage/connections.py)."""
    tasks = environ.get("SLURM_ARRAY_TASK_COUNT", "").strip()
    return (int(tasks) if tasks.isdigit() and int(tasks) > 0 else 1) * per_task


def requeue_once(
    report: PackReport, slurm: SlurmEnv, budget_used: Callable[[], bool], say: Callable[[str], None]
) -> None:
    """After every worker has exited: the task again, once, when the walltime (or an admission) wants it."""
    wanted = report.walltime or report.requeue_asked
    if not wanted or report.interrupted_by is not None or slurm.array_task_id is None:
        return
    if budget_used():
        say("walltime: the study's budget is used; not requeued")
        return
    report.requeued = requeue_own_task(slurm)
    say(f"requeued {report.requeued}")


class TaskPack:
    def __init__(
        self,
        loaded: LoadedConfig,
        storage_url: str | None,
        environ: Mapping[str, str] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.loaded, self.storage_url = loaded, storage_url
        self.environ = dict(os.environ if environ is None else environ)
        self.say = say or log.info
        self.slurm = SlurmEnv.from_environ(self.environ)
        self.devices = devices_held(self.environ)
        self.cores = cores_held(self.environ)
        setting = loaded.config.slurm.trials_per_gpu
        self.stride = TRIALS_PER_GPU_AUTO_MAX if setting == "auto" else int(setting)
        self.shared = open_study(loaded, storage_url, with_heartbeat=False)
        self.sizer: AutoSizer | None = None
        if setting == "auto":
            where = {"task": self.slurm.global_task_id, "host": socket.gethostname()}
            memory = memory_held(self.environ)
            self.sizer = AutoSizer(self.shared, loaded, self.devices, self.cores, memory, where, self.say)
        self.size = 1 if setting == "auto" else int(setting)
        self.report = PackReport(self.size)
        self.children: dict[int, WorkerProcess] = {}  # by pid
        self.generation: dict[int, int] = {}  # how often each slot started
        self.slot_of: dict[int, int] = {}  # by pid
        self.draining: set[int] = set()  # pids told to stop after their trial (a new size)
        self.change: SizeChange | None = None  # from a resize until the new size runs
        self.mps = Mps("off")

    # ------------------------------------------------------------------------------------------- the loop
    def run(self) -> PackReport:
        self.mps = start_mps(self.devices, self.environ, task_name(self.slurm))
        self.report.mps = self.mps.state
        self.say(f"MPS {self.mps.state}")
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _FORWARDED}
        try:
            self._start(self.sizer.start() if self.sizer is not None else self.size)
            while self.children:
                time.sleep(POLL_S)
                self._reap()
                if self.sizer is not None and self.change is None and not self._stopping():
                    step = self.sizer.poll()
                    if step is not None and step.n != self.size:
                        self._resize(step.n)
                if self.change is not None:
                    self._change_size(self.change)
        except BaseException:
            self._terminate()
            raise
        finally:
            self._open_gate()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.mps.quit(self.environ)
        if self.sizer is not None:
            self.sizer.conclude("the walltime came" if self.report.walltime else "the budget was used")
            self.report.choice = self.sizer.choice
        requeue_once(self.report, self.slurm, self._budget_used, self.say)
        self.report.raise_for_failures()
        return self.report

    def _stopping(self) -> bool:
        return self.report.walltime or self.report.interrupted_by is not None

    def _budget_used(self) -> bool:
        trials = self.shared.study.get_trials(deepcopy=False)
        return budget_state(trials, self.loaded.config.trials).exhausted

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGUSR2:
            self.report.walltime = True
        else:
            self.report.interrupted_by = signum
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    # ------------------------------------------------------------------------------------------- workers
    def _start(self, size: int) -> None:
        self.size = self.report.size = size
        started = [c for c in (self._spawn(slot) for slot in range(size)) if c is not None]
        if self.sizer is not None:
            self.sizer.begin(size, [c.proc.pid for c in started])
        self.say(
            f"{size} worker(s) share this task's {self.devices.count} {self.devices.kind.upper()}(s); logs: "
            + ", ".join(str(c.log) for c in started)
        )

    def _spawn(self, slot: int) -> WorkerProcess | None:
        """Worker ``slot`` of the current size, behind the gate while one is closed; None once a signal
        has come (it would not reach a worker started after it was forwarded)."""
        generation = self.generation.get(slot, -1) + 1
        self.generation[slot] = generation
        index = (self.slurm.global_task_id or 0) * self.stride + slot + GENERATION_STRIDE * generation
        env = {**self.environ, **self.mps.env}
        env.update(
            pack_worker_environment(
                slot,
                self.size,
                self.storage_url,
                env,
                study_workers=study_workers(self.environ, self.stride),
                cores=self.cores,
            )
        )
        gate: tuple[int, ...] = ()
        if self.change is not None:
            added, gate = self.change.for_worker()
            env.update(added)
        suffix = "" if generation == 0 else f".{generation}"
        log_path = self.loaded.study_dir / "logs" / f"{task_name(self.slurm)}.slot{slot}{suffix}.log"
        # Blocked across the fork: a signal in that moment is handled (and forwarded) once the worker is
        # known; the worker unblocks them once its own handlers are in place.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
        try:
            if self._stopping():
                return None
            child = spawn_worker(self.loaded, index, env, log_path, pass_fds=gate)
            self.children[child.proc.pid] = child
            self.slot_of[child.proc.pid] = slot
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self.report.logs.append(log_path)
        self.report.pids.append(child.proc.pid)
        return child

    def _reap(self) -> None:
        for pid, child in list(self.children.items()):
            code = child.proc.poll()
            if code is None:
                continue
            del self.children[pid]
            drained = pid in self.draining
            self.draining.discard(pid)
            self.report.exit_codes.append(0 if drained and code == REQUEUE_WANTED else code)
            if code == REQUEUE_WANTED and not drained:
                self.report.requeue_asked = True
            if code >= 0:
                continue
            self.report.recovered_trials += recover_killed(self.shared, self.loaded, pid)
            # Its size is being replaced by the next one.
            ending = drained or (self.change is not None and pid in self.change.previous)
            if ending or self._stopping() or self.report.replacements >= 2 * self.stride:
                continue
            if not self._budget_used():
                self.report.replacements += 1
                replacement = self._spawn(self.slot_of[pid])
                if self.sizer is not None and replacement is not None:
                    self.sizer.add(replacement.proc.pid)

    def _resize(self, size: int) -> None:
        """``size`` fresh workers start behind a gate while the current ones finish: each size is measured
        alone, on workers with its share of threads and memory. Why the current ones go on until the new ones
        are ready on a GPU, and end after their trial at once on a CPU: launchers/pack_gate.py."""
        on_gpu = self.devices.kind == "gpu"
        self.change = SizeChange(self.children, wait_for_ready=on_gpu)
        if on_gpu:
            self.say(f"{self.size} -> {size} worker(s): the new ones start while the current ones go on")
        else:
            self.say(
                f"{self.size} -> {size} worker(s): the new ones start, the current ones end after their trial"
            )
            self._drain(self.change.previous)
        self._start(size)

    def _change_size(self, change: SizeChange) -> None:
        """Once every new worker is ready, the previous ones end after their trial; once they are gone, or
        a signal came (the waiting workers have it: they see it before any trial), the gate opens."""
        if change.ready is not None and not self._stopping():
            if not change.all_ready(self.children):
                return
            if change.previous & self.children.keys():
                self.say("the new worker(s) are ready: the current ones end after their trial")
            self._drain(change.previous)
            return
        if self._stopping() or not self.draining & self.children.keys():
            self._open_gate()

    def _drain(self, pids: set[int]) -> None:
        for pid in pids & self.children.keys():
            self.draining.add(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR2)

    def _open_gate(self) -> None:
        if self.change is not None:
            self.change.close()
            self.change = None

    def _terminate(self) -> None:
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for child in list(self.children.values()):
            self.report.exit_codes.append(child.proc.wait())
        self.children.clear()


def run_pack(
    loaded: LoadedConfig,
    storage_url: str | None,
    *,
    environ: Mapping[str, str] | None = None,
    say: Callable[[str], None] | None = None,
) -> PackReport:
    """Run this task's workers to their end (see the module's docstring); raises WorkerFailedError."""
    return TaskPack(loaded, storage_url, environ, say).run()


__all__ = ["PACK_SIZE_ENV", "PackReport", "TaskPack", "as_pack_worker", "is_pack_worker", "packs", "run_pack"]
