"""Run one trial to a final state, whatever computes it (task_runner.py): record every epoch, prune, tell.

Guarantees, each covered by a test:
- every storage call of the trial goes through the retrying storage, the objective's own included, so a
  database restart fails nothing; past the retry deadline the worker ends with exit 75 and leaves the
  trial to the liveness check (failed and re-run by another worker, never counted as budget);
- ``suggest`` and the first JSON write are inside the trial's error handling, like everything else;
- a trial is told exactly once, by the worker that runs it, and its JSON is complete when it ends;
- a results directory that cannot be written (read-only, full) fails and re-runs the trial, then ends the
  worker with one ``Error:`` line: the study in the database stays consistent;
- on USR2 (walltime near) the trial is checkpointed at the next epoch boundary and handed on to a
  continuation that resumes it, every epoch recorded once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hpc_tune import attrs
from hpc_tune.config import LoadedConfig
from hpc_tune.errors import HpcTuneError, MetricsError, StorageUnavailableError, TrialAbort
from hpc_tune.policy.dead_workers import fail_trial
from hpc_tune.policy.ranking import is_promoted
from hpc_tune.policy.reruns import HandOn, checkpoint_path, enqueue_rerun, seed_of
from hpc_tune.policy.shared_study import SharedStudy
from hpc_tune.policy.suggest import suggest
from hpc_tune.slurm.allocation import device_share
from hpc_tune.storage import optuna_adapter as adapter
from hpc_tune.storage.heartbeat import TrialHeartbeat
from hpc_tune.storage.lock import LockLost
from hpc_tune.storage.records import TrialRecord, now_iso
from hpc_tune.tasks.base import LoadedTask
from hpc_tune.train.faults import Fault
from hpc_tune.worker.epochs import epoch_reporter, resume_from_checkpoint, save_record
from hpc_tune.worker.kinds import task_runner_for
from hpc_tune.worker.kinds.base import TrialContext
from hpc_tune.worker.kinds.objective import asks_for_its_parameters
from hpc_tune.worker.resources import fill_peak_memory
from hpc_tune.worker.signals import SignalGuard, WorkerInterrupted

log = logging.getLogger(__name__)

WALLTIME = "WALLTIME"  # what run() returns for a trial handed on to a continuation
_MISSING = object()


def interrupted_reason(guard: SignalGuard) -> str:
    """SIGTERM after the walltime signal is SLURM's time limit: a trial it ends was killed by walltime
    (``collect`` counts those and their hours), any other SIGTERM or SIGINT an interruption."""
    return attrs.WALLTIME_KILLED if guard.walltime.is_set() else "interrupted"


class TrialRunner:
    def __init__(
        self,
        shared: SharedStudy,
        loaded: LoadedConfig,
        task: LoadedTask,
        guard: SignalGuard,
        worker_attrs: Mapping[str, Any],
        record_base: Mapping[str, Any],
        faults: list[Fault],
    ) -> None:
        self.shared = shared
        self.study = shared.study
        self.storage = shared.storage
        self.config = loaded.config
        self.study_dir = loaded.study_dir
        self.task = task
        self.task_runner = task_runner_for(task, loaded, guard)
        self.asks_itself = asks_for_its_parameters(self.config, task)
        self.guard = guard
        self.worker_attrs = dict(worker_attrs)
        self.record_base = dict(record_base)
        self.faults = faults

    # ------------------------------------------------------------------------------------------ records
    def _write(self, record: TrialRecord) -> None:
        save_record(self.study_dir, record)

    def _finish_record(
        self, record: TrialRecord, state: str, reason: str | None, value: float | None, started: float | None
    ) -> None:
        record.state, record.reason, record.value = state, reason, value
        record.finished_at = now_iso()
        if started is not None:
            record.duration_s = round(time.monotonic() - started, 3)
            share = device_share(record.devices)  # a trial sharing the task's GPU holds its share of it
            if share is not None:
                record.device_seconds = round(record.duration_s * share, 3)
        fill_peak_memory(record)
        self._write(record)

    # ------------------------------------------------------------------------------------------ one trial
    def run(self, trial: optuna.Trial) -> str:
        """Run one trial to a final state; returns the state name (or WALLTIME when handed on)."""
        trial_id = adapter.trial_id(trial)
        frozen = adapter.trial_snapshot(trial) or self.storage.get_trial(trial_id)
        full = self.config.fidelity is None or is_promoted(frozen)
        epochs = self.config.epochs if full else self.config.effective_epochs()
        data_fraction = 1.0 if full else self.config.fidelity.data_fraction  # type: ignore[union-attr]
        record = TrialRecord(
            study=self.config.study,
            trial=trial.number,
            params={},
            fidelity={"data_fraction": data_fraction, "epochs": epochs},
            phase=frozen.user_attrs.get(attrs.PHASE),
            seed=seed_of(frozen, self.config.train.seed),
            retry_of=adapter.original_trial_number(frozen),
            **self.record_base,
        )
        checkpoint = checkpoint_path(self.study_dir, trial.number)
        started = time.monotonic()
        state, value, reason = TrialState.FAIL, None, None
        fatal: BaseException | None = None
        try:
            with TrialHeartbeat(self.storage, trial_id, self.config.worker.heartbeat_interval):
                # A retry or a waiting trial keeps the attrs of the worker that created it: claim it.
                for key, attr in self.worker_attrs.items():
                    if frozen.user_attrs.get(key, _MISSING) != attr:  # each write is a transaction
                        trial.set_user_attr(key, attr)
                if not self.asks_itself:
                    assert self.config.space is not None
                    record.params = suggest(trial, self.config.space)
                self._write(record)
                resume = resume_from_checkpoint(
                    trial, record, frozen, checkpoint, study_dir=self.study_dir, config=self.config
                )
                ctx = TrialContext(
                    trial=trial,
                    frozen=frozen,
                    record=record,
                    params=dict(record.params),
                    epochs=epochs,
                    fidelity=None if full else self.config.fidelity,
                    seed=record.seed,
                    checkpoint=checkpoint,
                    resume=resume,
                    # Promoted trials run at another fidelity: their curves are not comparable with the
                    # screening ones the pruner has seen, and they are the few chosen to run in full anyway.
                    report_epoch=epoch_reporter(
                        trial,
                        record,
                        epochs=epochs,
                        may_prune=not (full and self.config.fidelity is not None),
                        config=self.config,
                        save=self._write,
                    ),
                    walltime_requested=self.guard.walltime.is_set,
                    faults=[f for f in self.faults if f.trial is None or f.trial == trial.number],
                )
                try:
                    outcome = self.task_runner.run(ctx)
                finally:
                    if self.asks_itself:  # define-by-run: the parameters the objective asked for
                        snapshot = adapter.trial_snapshot(trial)
                        record.params = dict(snapshot.params if snapshot else trial.params)
                if outcome.handed_on:
                    self._hand_on(trial, record, checkpoint, started)
                    return WALLTIME
                value = outcome.value
                state = TrialState.COMPLETE
            if self.storage.unavailable:  # the objective swallowed our error: the database is still gone
                raise StorageUnavailableError("the study database is unreachable", self.storage.where or None)
            if value is None or not math.isfinite(value):
                state, reason, value = TrialState.FAIL, "nonfinite_value", None
        except optuna.TrialPruned:
            state, reason = TrialState.PRUNED, "pruned"
        except TrialAbort as abort:
            state, reason = TrialState.FAIL, abort.reason
        except StorageUnavailableError:
            # Nothing can be told: the trial stays RUNNING until the other workers' liveness check fails and
            # re-runs it. Its JSON says why this worker left.
            record.reason = "storage_unavailable"
            self._try_write(record)
            raise
        except WorkerInterrupted:
            why = interrupted_reason(self.guard)
            with self.guard.critical():  # a second Ctrl-C must not cut this short
                self.fail_and_rerun(trial_id, why)  # the study first: it is the truth
                with contextlib.suppress(MetricsError):
                    self._finish_record(record, "FAIL", why, None, started)
            raise
        except MetricsError as exc:
            # The results directory cannot be written: not the trial's fault. Re-run it, then stop.
            with self.guard.critical():
                self.fail_and_rerun(trial_id, "results_unwritable")
            raise exc from None
        except Exception as exc:
            # A user error (HpcTuneError: a task that breaks the protocol) ends the worker, after the trial
            # is closed; anything else is this trial's failure and the worker goes on.
            fatal = exc if isinstance(exc, HpcTuneError) else None
            if fatal is None:
                log.error("trial %d raised:\n%s", trial.number, traceback.format_exc())
            state, reason = TrialState.FAIL, f"exception:{type(exc).__name__}"
        with self.guard.critical():
            self._tell(trial, state, value, reason)
            self._finish_record(record, state.name, reason, value, started)
        if fatal is not None:
            raise fatal
        return state.name

    def _try_write(self, record: TrialRecord) -> None:
        with contextlib.suppress(MetricsError):
            self._write(record)

    def fail_and_rerun(self, trial_id: int, reason: str) -> None:
        try:
            with self.shared.lock("budget"):
                fail_trial(
                    self.study,
                    self.storage,
                    trial_id,
                    reason,
                    study_dir=self.study_dir,
                    max_retry=self.config.worker.max_retry,
                )
        except LockLost:
            pass  # the work under the lock completed through the retrying storage

    def _tell(self, trial: optuna.Trial, state: TrialState, value: float | None, reason: str | None) -> None:
        if reason is not None:
            trial.set_user_attr(attrs.REASON, reason)
        adapter.tell(self.study, trial, state, value)

    def _hand_on(self, trial: optuna.Trial, record: TrialRecord, checkpoint: Path, started: float) -> None:
        """Walltime: this trial is continued by a new trial that resumes from the checkpoint (or starts over
        when there is none: a script that does not save to the path it was given).

        Optuna cannot reopen a finished trial and a RUNNING one would be failed by the heartbeat while the
        task waits in the queue, so the trial is closed as FAIL (reason ``walltime``; re-run, so it costs no
        budget) and its continuation carries the checkpoint. A hand-on is not a failure: it never counts
        toward ``max_retry``.
        """
        record.reason = "walltime"
        last_epoch = int(record.epochs[-1]["epoch"]) if record.epochs else 0
        saved = checkpoint if checkpoint.is_file() else None  # a script that saved nothing starts over
        with self.guard.critical():
            try:
                with self.shared.lock("budget"):
                    trial.set_user_attr(attrs.REASON, "walltime")
                    adapter.tell(self.study, trial, TrialState.FAIL, None)
                    enqueue_rerun(
                        self.study,
                        self.storage.get_trial(adapter.trial_id(trial)),
                        max_retry=self.config.worker.max_retry,
                        study_dir=self.study_dir,
                        hand_on=HandOn(saved, last_epoch),
                    )
            except LockLost:
                pass
            self._finish_record(record, "FAIL", "walltime", None, started)
