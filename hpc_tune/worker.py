"""One worker: what an array task (or a local process) runs. Loop: reserve → ask → train → report → tell.

Every worker of a study opens the SAME study (a study per array task is the classic mistake: no sharing of
what was learned). Guarantees, each covered by a test:
- the study ends with exactly ``trials`` finished trials (budget.py);
- no trial is left RUNNING by a worker that exits normally or on SIGTERM/SIGINT;
- a killed worker's trial becomes FAIL (heartbeat on PostgreSQL, the ``run --local`` parent on the journal)
  and is retried once with the same parameters;
- on USR2 (walltime near) the running trial is checkpointed at the next epoch boundary and continued by the
  next worker that asks (normally this task after SLURM requeues it), every epoch recorded once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import optuna
from optuna.trial import TrialState

from hpc_tune.budget import enqueue_retry
from hpc_tune.campaign import PHASE_ATTR, decide, is_promoted
from hpc_tune.config import LoadedConfig
from hpc_tune.errors import HpcTuneError, TrialAbort
from hpc_tune.heartbeat import TrialHeartbeat
from hpc_tune.metrics import TrialRecord, now_iso, read_trial_json, trial_path, write_trial
from hpc_tune.recovery import StaleTrialHandler, fail_trial
from hpc_tune.slurm import SlurmEnv, requeue_own_task
from hpc_tune.space import suggest
from hpc_tune.storage import StorageSpec, open_storage, resolve_storage, retry_transient, study_lock
from hpc_tune.strategy import make_pruner, make_sampler
from hpc_tune.tasks.base import LoadedTask, load_task
from hpc_tune.train.faults import Fault, parse_faults

log = logging.getLogger(__name__)
# fail_stale_trials and heartbeats are marked experimental; we rely on them deliberately (DESIGN §5).
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
# Optuna warns that heartbeats belong to study.optimize(); ask/tell workers run our own (heartbeat.py).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")

# Exit codes a scheduler can act on.
EXIT_OK = 0
EXIT_INTERRUPTED = 143  # SIGTERM/SIGINT: the trial was failed and re-enqueued

CHECKPOINTS_DIR = "checkpoints"
_MISSING = object()


class WorkerInterrupted(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT; BaseException so task code's ``except Exception`` lets
    it through."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


@dataclass
class WorkerReport:
    trials_run: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    stopped_by: str = "budget"  # budget | max_trials | signal | walltime

    @property
    def exit_code(self) -> int:
        return EXIT_INTERRUPTED if self.stopped_by == "signal" else EXIT_OK


def open_study(
    loaded: LoadedConfig, storage_url: str | None, *, worker_index: int = 0, with_heartbeat: bool = True
) -> tuple[optuna.Study, StorageSpec]:
    """Create or load the one shared study; enqueue the baseline exactly once."""
    config = loaded.config
    spec = resolve_storage(storage_url if storage_url is not None else config.storage, loaded.study_dir)
    beat = config.worker
    storage = open_storage(
        spec,
        heartbeat_interval=beat.heartbeat_interval if with_heartbeat else None,
        grace_period=beat.grace_period if with_heartbeat else None,
        stale_trial_callback=StaleTrialHandler(loaded.study_dir, beat.max_retry) if with_heartbeat else None,
        pool=beat.pool,
    )
    study = retry_transient(
        lambda: optuna.create_study(
            study_name=config.study,
            storage=storage,
            sampler=make_sampler(config, worker_index),
            pruner=make_pruner(config),
            direction=config.direction,
            load_if_exists=True,
        )
    )
    if config.baseline:
        with study_lock(spec, config.study, loaded.study_dir, "enqueue"):
            if not study.user_attrs.get("baseline_enqueued"):
                study.enqueue_trial(dict(config.baseline), user_attrs={"baseline": True})
                study.set_user_attr("baseline_enqueued", True)
    if study.user_attrs.get("trials") != config.trials or study.user_attrs.get("metric") != config.metric:
        study.set_user_attr("trials", config.trials)
        study.set_user_attr("metric", config.metric)
    return study, spec


def limit_threads(environ: Mapping[str, str]) -> None:
    """Use the CPUs SLURM gave this task, not every core of the node (torch's default).

    Oversubscribed intra-op threads made digits epochs 100x slower with two workers on two cores.
    """
    if environ.get("OMP_NUM_THREADS"):
        return
    cpus = environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit() and int(cpus) > 0:
        import torch

        torch.set_num_threads(int(cpus))


class Worker:
    def __init__(
        self,
        loaded: LoadedConfig,
        storage_url: str | None = None,
        *,
        worker_index: int = 0,
        max_trials: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.study_dir = loaded.study_dir
        self.environ = dict(os.environ if environ is None else environ)
        self.max_trials = max_trials
        self.slurm = SlurmEnv.from_environ(self.environ)
        self.faults: list[Fault] = parse_faults(self.environ.get("HPCTUNE_FAULT"))
        self.task: LoadedTask = load_task(self.config.task, loaded.root)
        self.study, self.spec = open_study(loaded, storage_url, worker_index=worker_index)
        self.sampler = self.study.sampler
        limit_threads(self.environ)
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._worker_attrs: dict[str, Any] = {
            "host": self.host,
            "pid": self.pid,
            **{k: v for k, v in self.slurm.user_attrs().items() if v is not None},
        }
        self._walltime = threading.Event()
        self._interrupted_by: int | None = None
        # While > 0, SIGTERM/SIGINT only note the signal: raising inside study.ask() or tell() could leave a
        # trial RUNNING that nobody owns. It is raised when the critical section ends.
        self._critical = 0
        self._current: optuna.Trial | None = None
        self._next_stale_check = 0.0
        # Study user attrs (a query) matter only for phases and screening decisions.
        self._campaign = bool(self.config.phases) or bool(
            self.config.fidelity and self.config.fidelity.promote_top
        )

    # ----------------------------------------------------------------- signals
    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def interrupt(signum: int, frame: FrameType | None) -> None:
            self._interrupted_by = signum
            if self._critical == 0:
                raise WorkerInterrupted(signum)

        def walltime(signum: int, frame: FrameType | None) -> None:
            log.warning("USR2: walltime near; checkpointing at the next epoch boundary")
            self._walltime.set()

        for sig, handler in (
            (signal.SIGTERM, interrupt),
            (signal.SIGINT, interrupt),
            (signal.SIGUSR2, walltime),
        ):
            previous[sig] = signal.signal(sig, handler)
        return previous

    @contextlib.contextmanager
    def _storage_critical(self) -> Iterator[None]:
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._critical == 0 and self._interrupted_by is not None:
            raise WorkerInterrupted(self._interrupted_by)

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    # ----------------------------------------------------------------- loop
    def run(self) -> WorkerReport:
        report = WorkerReport()
        previous = self._install_signals()
        try:
            while True:
                if self.max_trials is not None and report.trials_run >= self.max_trials:
                    report.stopped_by = "max_trials"
                    break
                if self._walltime.is_set():
                    report.stopped_by = "walltime"
                    break
                trial = self._reserve()
                if trial is None:
                    break
                self._current = trial
                state = self._run_trial(trial)
                self._current = None
                report.trials_run += 1
                report.by_state[state] = report.by_state.get(state, 0) + 1
                if state == "WALLTIME":
                    report.stopped_by = "walltime"
                    break
        except WorkerInterrupted:
            report.stopped_by = "signal"
            if self._current is not None:  # interrupted before _run_trial could take care of it
                fail_trial(
                    self.study,
                    self._current._trial_id,
                    "interrupted",
                    study_dir=self.study_dir,
                    max_retry=self.config.worker.max_retry,
                )
        finally:
            self._restore_signals(previous)
        if report.stopped_by == "walltime" and self.slurm.array_task_id is not None:
            requeue_own_task(self.slurm)
        return report

    def _new_trial_id(self) -> int:
        """The storage half of ``study.ask()``: pop a waiting trial or insert a new one.

        Only this part must happen under the budget lock; building the Trial (a read plus sampler hooks) is
        done after releasing it. A new trial is inserted with this worker's attrs (host, pid, SLURM ids) in
        the same statement, saving a transaction per attr. Uses Optuna's private ``_pop_waiting_trial_id``,
        the call ``ask()`` makes (optuna < 6 is pinned; tests cover it).
        """
        trial_id = self.study._pop_waiting_trial_id()
        if trial_id is None:
            template = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=self._worker_attrs)
            trial_id = self.study._storage.create_new_trial(self.study._study_id, template_trial=template)
        return trial_id

    def _reserve(self) -> optuna.Trial | None:
        """Count and ask as one step under the study lock, so N workers never overshoot the budget."""

        def attempt() -> tuple[optuna.Trial | None, str, int]:
            now = time.monotonic()
            if now >= self._next_stale_check:  # race-safe without our lock: Optuna fails each trial once
                optuna.storages.fail_stale_trials(self.study)
                self._next_stale_check = now + self.config.worker.heartbeat_interval
            with study_lock(self.spec, self.config.study, self.study_dir, "budget"):
                # Read through the study's per-ask cache: the sampler reuses this list instead of reading
                # the trials again (ask() would reset the cache and read twice per trial).
                self.study._thread_local.cached_all_trials = None
                trials = self.study._get_trials(deepcopy=False, use_cache=True)
                decision = decide(self.config, trials, self.study.user_attrs if self._campaign else {})
                running = sum(1 for t in trials if t.state == TrialState.RUNNING)
                if decision.kind != "ask":
                    return None, decision.kind, running
                for key, value in decision.study_attrs.items():
                    self.study.set_user_attr(key, value)
                for params, attrs in decision.enqueue:
                    self.study.enqueue_trial(params, user_attrs=attrs)
                trial_id = self._new_trial_id()
            self.study.sampler = (
                optuna.samplers.PartialFixedSampler(decision.fixed, self.sampler)
                if decision.fixed
                else self.sampler
            )
            trial = optuna.Trial(
                self.study, trial_id
            )  # reads the trial and runs sampler hooks: no lock needed
            if decision.phase is not None and PHASE_ATTR not in trial.user_attrs:
                trial.set_user_attr(PHASE_ATTR, decision.phase)
            return trial, "ask", running

        # With the budget used, linger one grace period while other trials run: if one of their workers
        # died, its trial turns stale within that time and its retry must not be left WAITING with no worker.
        beat = self.config.worker
        linger_until = time.monotonic() + beat.grace_period + beat.heartbeat_interval
        # Short enough that a worker leaves about when the last trial ends, long enough not to load the DB.
        poll = min(1.0, beat.heartbeat_interval)
        while True:
            with self._storage_critical():
                trial, kind, running = retry_transient(attempt)
            if trial is not None:
                return trial
            if kind == "wait":  # screening trials still running: promotion needs all of their results
                time.sleep(poll)
                continue
            if running == 0 or not TrialHeartbeat.enabled(self.study._storage):
                return None
            if time.monotonic() >= linger_until:
                return None
            time.sleep(poll)

    def _run_trial(self, trial: optuna.Trial) -> str:
        """Run one trial to a final state; returns the state name (or WALLTIME when handed on)."""
        # The trial's own cached copy (fresh from ask) saves a read per trial; the storage is the fallback.
        frozen = getattr(trial, "_cached_frozen_trial", None) or self.study._storage.get_trial(
            trial._trial_id
        )
        system_attrs = frozen.system_attrs
        params = suggest(trial, self.config.space)
        seed = self.config.train.seed
        full = self.config.fidelity is None or is_promoted(frozen)
        epochs = self.config.epochs if full else self.config.effective_epochs()
        data_fraction = 1.0 if full else self.config.fidelity.data_fraction  # type: ignore[union-attr]
        record = TrialRecord(
            study=self.config.study,
            trial=trial.number,
            params=params,
            fidelity={"data_fraction": data_fraction, "epochs": epochs},
            phase=frozen.user_attrs.get(PHASE_ATTR),
            seed=seed,
            host=self.host,
            pid=self.pid,
            slurm={k.removeprefix("slurm."): v for k, v in self.slurm.user_attrs().items() if v is not None},
            retry_of=system_attrs.get("failed_trial"),
        )
        attrs = dict(self._worker_attrs)
        if "reason" in frozen.user_attrs:  # a retry inherits the failed trial's attrs, its reason included
            attrs["reason"] = None
        for key, value in attrs.items():
            if frozen.user_attrs.get(key, _MISSING) != value:  # each write is a transaction
                retry_transient(lambda k=key, v=value: trial.set_user_attr(k, v))
        write_trial(self.study_dir, record)
        started = time.monotonic()
        faults = [f for f in self.faults if f.trial is None or f.trial == trial.number]
        state, value, reason = TrialState.FAIL, None, None
        fatal: HpcTuneError | None = None
        try:
            with TrialHeartbeat(self.study._storage, trial._trial_id, self.config.worker.heartbeat_interval):
                if self.task.kind == "objective":
                    value = float(self.task.fn(trial))
                    for step, v in sorted(trial._cached_frozen_trial.intermediate_values.items()):
                        record.add_epoch(
                            {"epoch": step, self.config.metric: v}, self.config.metric, self.config.direction
                        )
                    state = TrialState.COMPLETE
                else:
                    outcome = self._fit(trial, record, params, seed, faults, system_attrs, full, epochs)
                    if outcome == "WALLTIME":
                        return "WALLTIME"
                    value = (record.best or {}).get(self.config.metric)
                    state = TrialState.COMPLETE
            if value is None or not math.isfinite(value):
                state, reason, value = TrialState.FAIL, "nonfinite_value", None
        except optuna.TrialPruned:
            state, reason = TrialState.PRUNED, "pruned"
        except TrialAbort as abort:
            state, reason = TrialState.FAIL, abort.reason
        except WorkerInterrupted:
            with self._storage_critical():  # a second Ctrl-C must not cut this short
                self._finish_record(record, "FAIL", "interrupted", None, started)
                fail_trial(
                    self.study,
                    trial._trial_id,
                    "interrupted",
                    study_dir=self.study_dir,
                    max_retry=self.config.worker.max_retry,
                )
            raise
        except Exception as exc:
            # A user error (HpcTuneError: a task that breaks the protocol) ends the worker, after the trial
            # is closed; anything else is this trial's failure and the worker goes on.
            fatal = exc if isinstance(exc, HpcTuneError) else None
            if fatal is None:
                log.error("trial %d raised:\n%s", trial.number, traceback.format_exc())
            state, reason = TrialState.FAIL, f"exception:{type(exc).__name__}"
        with self._storage_critical():
            self._tell(trial, state, value, reason)
            self._finish_record(record, state.name, reason, value, started)
        if fatal is not None:
            raise fatal
        return state.name

    def _fit(
        self,
        trial: optuna.Trial,
        record: TrialRecord,
        params: dict[str, Any],
        seed: int,
        faults: list[Fault],
        system_attrs: Mapping[str, Any],
        full: bool,
        epochs: int,
    ) -> str | None:
        from hpc_tune.train.engine import fit  # torch import is paid only by workers that train

        resume_from = system_attrs.get("resume_checkpoint")
        checkpoint = self.study_dir / CHECKPOINTS_DIR / f"trial-{trial.number}.pt"
        resume = False
        if resume_from:
            source = Path(resume_from)
            if not source.is_file():
                raise TrialAbort("timeout", f"checkpoint {source} of an interrupted trial is missing")
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, checkpoint)
            resume = True

        metric, direction = self.config.metric, self.config.direction
        # Promoted trials run at another fidelity: their curves are not comparable with the screening ones
        # the pruner has seen, and they are the few chosen to run in full anyway.
        may_prune = not (full and self.config.fidelity is not None)

        def on_epoch(epoch_record: dict[str, Any]) -> None:
            record.add_epoch(epoch_record, metric, direction)
            write_trial(self.study_dir, record)
            value = epoch_record.get(metric)
            if value is None or not math.isfinite(float(value)):
                return
            step = int(epoch_record["epoch"])
            retry_transient(lambda: trial.report(float(value), step))
            # After the last epoch there is nothing left to save: a finished curve is a result, not a prune.
            if may_prune and step < epochs and trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {step}")

        if resume:
            self._replay(trial, record, int(system_attrs.get("resumed_from", -1)))
        parts = self.task.build(params, None if full else self.config.fidelity, seed, self.config.train)
        result = fit(
            parts,
            epochs=epochs,
            options=self.config.train,
            on_epoch=on_epoch,
            checkpoint_path=checkpoint,
            resume=resume,
            stop_requested=self._walltime.is_set,
            faults=faults,
            compile_cache_dir=self.study_dir / "inductor-cache",
        )
        if result.interrupted:
            self._hand_on(trial, record, checkpoint)
            return "WALLTIME"
        checkpoint.unlink(missing_ok=True)
        return None

    def _replay(self, trial: optuna.Trial, record: TrialRecord, previous: int) -> None:
        """A resumed trial: the epochs run before the checkpoint are recorded and reported once, so the JSON
        holds every epoch and the pruner sees the whole curve. They come from the interrupted trial's JSON,
        which is written before the checkpoint at the same epoch boundary."""
        data = read_trial_json(trial_path(self.study_dir, previous)) or {}
        for epoch_record in data.get("epochs", []):
            record.add_epoch(epoch_record, self.config.metric, self.config.direction)
            value = epoch_record.get(self.config.metric)
            if value is not None and math.isfinite(float(value)):
                retry_transient(lambda v=value, s=int(epoch_record["epoch"]): trial.report(float(v), s))
        write_trial(self.study_dir, record)

    def _hand_on(self, trial: optuna.Trial, record: TrialRecord, checkpoint: Path) -> None:
        """Walltime: this trial is continued by a new trial that resumes from the checkpoint.

        Optuna cannot reopen a finished trial and a RUNNING one would be failed by the heartbeat while the
        task waits in the queue, so the trial is closed as FAIL (reason ``walltime``, retried: it costs no
        budget) and its continuation carries ``resume_checkpoint``.
        """
        record.reason = "walltime"
        with study_lock(self.spec, self.config.study, self.study_dir, "budget"):
            retry_transient(lambda: trial.set_user_attr("reason", "walltime"))
            retry_transient(lambda: self.study.tell(trial, state=TrialState.FAIL))
            frozen = self.study._storage.get_trial(trial._trial_id)  # after tell: its final state
            # A hand-on is not a failure: it is never refused by max_retry.
            enqueue_retry(
                self.study,
                frozen,
                max_retry=len(frozen.system_attrs.get("retry_history", [])) + 1,
                extra_system_attrs={"resume_checkpoint": str(checkpoint), "resumed_from": trial.number},
            )
        self._finish_record(record, "FAIL", "walltime", None, None)

    def _tell(self, trial: optuna.Trial, state: TrialState, value: float | None, reason: str | None) -> None:
        if reason is not None:
            retry_transient(lambda: trial.set_user_attr("reason", reason))
        if state == TrialState.COMPLETE:
            retry_transient(lambda: self.study.tell(trial, value))
        else:
            retry_transient(lambda: self.study.tell(trial, state=state))

    def _finish_record(
        self, record: TrialRecord, state: str, reason: str | None, value: float | None, started: float | None
    ) -> None:
        record.state, record.reason, record.value = state, reason, value
        record.finished_at = now_iso()
        if started is not None:
            record.duration_s = round(time.monotonic() - started, 3)
        write_trial(self.study_dir, record)


def run_worker(
    loaded: LoadedConfig,
    storage_url: str | None = None,
    *,
    worker_index: int = 0,
    max_trials: int | None = None,
) -> WorkerReport:
    return Worker(loaded, storage_url, worker_index=worker_index, max_trials=max_trials).run()
