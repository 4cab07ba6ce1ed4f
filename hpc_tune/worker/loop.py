"""One worker: what an array task (or a local process) runs. Loop: next trial → run it → repeat.

Every worker of a study opens the SAME study (a study per array task is the classic mistake: no sharing of
what was learned). The loop composes three parts, each with its own guarantees: the signal guard
(signals.py), the trial source that keeps the budget (trial_source.py) and the trial runner (runner.py).
Guarantees of the whole, each covered by a test:
- the study ends with exactly ``trials`` finished trials;
- no trial is left RUNNING by a worker that exits normally or on SIGTERM/SIGINT;
- a killed worker's trial becomes FAIL (heartbeat on PostgreSQL, the ``run --local`` parent on the journal)
  and is re-run with the same parameters;
- a database outage is waited out (exit 75 past ``worker.db_retry_deadline_s``);
- on USR2 (walltime near) the running trial is checkpointed and continued by the next worker that asks
  (normally this task after SLURM requeues it), every epoch recorded once.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hpc_tune import attrs
from hpc_tune.config import LoadedConfig
from hpc_tune.policy.shared_study import open_study
from hpc_tune.slurm.allocation import devices_held
from hpc_tune.slurm.environment import SlurmEnv, requeue_own_task
from hpc_tune.slurm.walltime import TimeLimit
from hpc_tune.storage import optuna_adapter as adapter
from hpc_tune.storage.timelines import WorkerTimeline, timeline_path
from hpc_tune.tasks.base import load_task
from hpc_tune.train.faults import parse_faults
from hpc_tune.worker.admission import WalltimeAdmission
from hpc_tune.worker.kinds.objective import asks_for_its_parameters
from hpc_tune.worker.resources import shared_devices, wait_at_pack_gate
from hpc_tune.worker.runner import WALLTIME, TrialRunner, interrupted_reason
from hpc_tune.worker.signals import SignalGuard, WorkerInterrupted
from hpc_tune.worker.trial_source import TrialSource

log = logging.getLogger(__name__)

# Exit codes a scheduler can act on.
EXIT_OK = 0
EXIT_INTERRUPTED = 143  # SIGTERM/SIGINT: the trial was failed and re-run
RESTART_SEED_STRIDE = 100_003  # larger than any array: run k of task i never shares a seed with another task


@dataclass
class WorkerReport:
    trials_run: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    stopped_by: str = "budget"  # budget | max_trials | signal | walltime | admission

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.stopped_by == "signal" else EXIT_OK

    @property
    def wants_requeue(self) -> bool:
        """The study needs this task again: it handed a trial on at the walltime, or it had too little time
        left for the next trial (walltime admission) and ended early to free its devices."""
        return self.stopped_by in ("walltime", "admission")


def limit_threads(environ: Mapping[str, str]) -> None:
    """Use the CPUs SLURM gave this task, not every core of the node (torch's and OpenMP's default).

    Oversubscribed intra-op threads made digits epochs 100x slower with two workers on two cores. Set
    before the task is imported, OMP_NUM_THREADS reaches every library that reads it when it starts (torch
    among them) without importing torch here: a command or objective worker may never need it. A torch the
    task module already imported is told directly.
    """
    if environ.get("OMP_NUM_THREADS"):
        return
    cpus = environ.get("SLURM_CPUS_PER_TASK", "")
    if not (cpus.isdigit() and int(cpus) > 0):
        return
    os.environ["OMP_NUM_THREADS"] = cpus
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(int(cpus))


class Worker:
    def __init__(
        self,
        loaded: LoadedConfig,
        storage_url: str | None = None,
        *,
        worker_index: int | None = None,
        max_trials: int | None = None,
        environ: Mapping[str, str] | None = None,
        requeue: bool = True,
        started_at: float | None = None,
        time_limit: TimeLimit | None = None,
    ) -> None:
        """``requeue=False``: after a walltime hand-on, leave the requeue to the caller (submitit requeues
        the tasks of ``hpc_tune.launch`` itself; a second requeue would run the task twice). ``started_at``:
        when the worker's allocation started being used (its process's start, for a worker process), the
        start of its timeline's "starting"; now by default (a worker inside another program).
        ``time_limit``: the task's deadline when the caller knows it (else squeue is asked, on SLURM, for
        walltime admission)."""
        self.loaded = loaded
        self.requeue = requeue
        self.config = loaded.config
        self.environ = dict(os.environ if environ is None else environ)
        self.max_trials = max_trials
        self.slurm = SlurmEnv.from_environ(self.environ)
        host, pid = socket.gethostname(), os.getpid()
        slurm_ids = {k: v for k, v in self.slurm.ids().items() if v is not None}
        devices = shared_devices(devices_held(self.environ).to_json(), self.environ)
        self.timeline = WorkerTimeline(
            host, pid, slurm_ids, devices, path=timeline_path(loaded.study_dir, host, pid)
        )
        self.timeline.begin("starting", at=started_at)
        if worker_index is None:  # an array task: its index in the whole request (also a split array)
            worker_index = self.slurm.global_task_id or 0
        limit_threads(self.environ)
        task = load_task(self.config.task, loaded.root, has_space=self.config.space is not None)
        # A requeued task is a new sampler stream: with sampler.seed set it would otherwise draw again the
        # very parameters of its first run (a continuation's, for one).
        sampler_index = worker_index + RESTART_SEED_STRIDE * self.slurm.restart_count
        self.shared = open_study(loaded, storage_url, worker_index=sampler_index)
        self.study = self.shared.study
        worker_attrs: dict[str, Any] = {attrs.WORKER: attrs.worker_attr(host, pid, slurm_ids)}
        self.guard = SignalGuard()
        self.worker_id = worker_attrs[attrs.WORKER]
        self.devices = devices
        self.admission = WalltimeAdmission.for_task(self.config, task.kind, self.slurm, limit=time_limit)
        # Every storage call, the objective's own included, completes before SIGTERM/SIGINT is raised: a
        # signal that landed inside the journal store's file lock left it broken (FileNotFoundError).
        self.shared.storage.guard = self.guard.critical
        self.source = TrialSource(
            self.shared,
            self.config,
            loaded.study_dir,
            worker_attrs,
            self.guard,
            pin_as_fixed=asks_for_its_parameters(self.config, task),
            admission=self.admission,
        )
        self.runner = TrialRunner(
            self.shared,
            loaded,
            task,
            self.guard,
            worker_attrs,
            {"host": host, "pid": pid, "slurm": slurm_ids, "devices": devices},
            parse_faults(self.environ.get("HPCTUNE_FAULT")),
        )
        self._current: Any = None

    def run(self) -> WorkerReport:
        report = WorkerReport()
        with self.guard.installed():
            try:
                if wait_at_pack_gate(self.environ):
                    # Until now the task's devices ran the previous size's last trials: this worker's share
                    # of them starts here, as its first wait for a trial.
                    self.timeline.started_ahead_at = self.timeline.segments[0].start
                    self.timeline.segments.clear()
                while True:
                    if self.max_trials is not None and report.trials_run >= self.max_trials:
                        report.stopped_by = "max_trials"
                        break
                    if self.guard.walltime.is_set():
                        report.stopped_by = "walltime"
                        break
                    self.timeline.begin("waiting")
                    trial = self.source.next_trial()
                    if trial is None:
                        if self.admission is not None and self.admission.refusal is not None:
                            report.stopped_by = "admission"
                            self.admission.record(self.study, self.worker_id, self.devices)
                        break
                    self._current = trial
                    self.timeline.begin("trial", trial.number)
                    state = self.runner.run(trial)
                    self._current = None
                    report.trials_run += 1
                    report.by_state[state] = report.by_state.get(state, 0) + 1
                    if state == WALLTIME:
                        report.stopped_by = "walltime"
                        break
            except WorkerInterrupted:
                report.stopped_by = "signal"
                if self._current is not None:  # interrupted before the runner could take care of it
                    why = interrupted_reason(self.guard)
                    self.runner.fail_and_rerun(adapter.trial_id(self._current), why)
            finally:
                self.timeline.begin("exiting")
        if report.wants_requeue and self.requeue and self.slurm.array_task_id is not None:
            requeue_own_task(self.slurm)
        self.timeline.close()
        return report


def run_worker(
    loaded: LoadedConfig,
    storage_url: str | None = None,
    *,
    worker_index: int | None = None,
    max_trials: int | None = None,
    requeue: bool = True,
    started_at: float | None = None,
    time_limit: TimeLimit | None = None,
) -> WorkerReport:
    """Run one worker to its end. ``worker_index`` decorrelates the workers' samplers; None: the SLURM array
    task's index in the whole request (HPCTUNE_ARRAY_OFFSET added for a split array), else 0."""
    return Worker(
        loaded,
        storage_url,
        worker_index=worker_index,
        max_trials=max_trials,
        requeue=requeue,
        started_at=started_at,
        time_limit=time_limit,
    ).run()
