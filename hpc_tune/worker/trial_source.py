"""Where a worker's next trial comes from: the budget, phases and screening decide, under the study lock.

Counting the study's trials and creating the next one are one step under the study lock, so N workers end
with exactly ``trials`` finished trials (Optuna's MaxTrialsCallback counts after the fact and overshoots).
Only that step is locked; building the ``Trial`` (a read plus the sampler's hooks) happens after release.

Two faults are handled here:
- a worker killed without a word: ``fail_stale_trials`` before asking fails its trial (stale heartbeat) and
  re-runs it. Not right after a database outage, though: every heartbeat is then as old as the outage, and
  the check waits until healthy workers had a grace period to beat again;
- a database restart while the lock is held: the server drops the advisory lock with its connection, so
  another worker may have counted at the same time. The trial just created is then checked against the
  budget and, if it is one too many, closed as void (it never ran and counts for nothing).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs
from hpc_tune.config import Config
from hpc_tune.errors import TaskError
from hpc_tune.policy.admission import Admission
from hpc_tune.policy.budget import counted_trials, failing_from_the_start
from hpc_tune.policy.campaign import decide
from hpc_tune.policy.ranking import is_promoted
from hpc_tune.policy.shared_study import SharedStudy
from hpc_tune.policy.suggest import distribution
from hpc_tune.storage import optuna_adapter as adapter
from hpc_tune.storage.lock import LockLost
from hpc_tune.worker.admission import WalltimeAdmission
from hpc_tune.worker.signals import SignalGuard

log = logging.getLogger(__name__)


class TrialSource:
    def __init__(
        self,
        shared: SharedStudy,
        config: Config,
        study_dir: Any,
        worker_attrs: dict[str, Any],
        guard: SignalGuard,
        *,
        pin_as_fixed: bool = False,
        admission: WalltimeAdmission | None = None,
    ) -> None:
        """``pin_as_fixed``: the objective asks for its parameters itself, so a grid point is held as pinned
        values (what ``enqueue_trial`` writes) that its ``suggest_*`` calls return, not as parameters of
        space's distributions that its calls would have to repeat exactly. ``admission``: checks that the
        next trial can finish before the task's time limit (None: always take it)."""
        self.shared = shared
        self.admission = admission
        self.pin_as_fixed = pin_as_fixed
        self.study = shared.study
        self.storage = shared.storage
        self.study_id = adapter.study_id(shared.study)
        self.config = config
        self.study_dir = study_dir
        self.worker_attrs = worker_attrs
        self.guard = guard
        self.sampler = shared.study.sampler
        self._next_stale_check = 0.0
        self._fail_fast_settled = False
        self._admission = Admission(True, "not checked yet")
        # Study user attrs (a query) matter only for phases and screening decisions.
        self._campaign = bool(config.phases) or bool(config.fidelity and config.fidelity.promote_top)

    # ------------------------------------------------------------------------------------------ liveness
    def fail_stale_trials(self) -> None:
        beat = self.config.worker
        now = time.monotonic()
        if now < self._next_stale_check:
            return
        self._next_stale_check = now + beat.heartbeat_interval
        # After an outage every heartbeat is old: give the healthy workers a grace period to beat again.
        if self.storage.settled(beat.grace_period + beat.heartbeat_interval):
            optuna.storages.fail_stale_trials(self.study)  # race-safe: Optuna fails each trial once

    # ------------------------------------------------------------------------------------------ reservation
    def _take_waiting(self, trials: list[FrozenTrial]) -> int | None:
        """Take the oldest WAITING trial (a retry, a continuation, the baseline, a promotion): the storage
        half of ``study.ask()``, done with public storage calls under our lock."""
        for trial in sorted((t for t in trials if t.state == TrialState.WAITING), key=lambda t: t.number):
            trial_id = adapter.trial_id(trial)
            if self.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
                return trial_id
        return None

    def _new_trial_id(self, trials: list[FrozenTrial], claim: dict[str, Any]) -> int:
        trial_id = self._take_waiting(trials)
        if trial_id is None:
            # Created with this worker's attrs (host, pid, SLURM ids) in one statement, and with the
            # parameters it claims (a grid point) so that the next worker, under the lock, sees them taken.
            pinned = self.pin_as_fixed and bool(claim)
            template = optuna.trial.create_trial(
                state=TrialState.RUNNING,
                user_attrs=self.worker_attrs,
                system_attrs={attrs.FIXED_PARAMS: claim} if pinned else None,
                params=None if pinned else claim,
                distributions=None if pinned else {n: distribution(self.config.space[n]) for n in claim},
            )
            trial_id = self.storage.create_new_trial(self.study_id, template_trial=template)
        return trial_id

    def _limit(self) -> int:
        fidelity = self.config.fidelity
        return self.config.trials + (fidelity.promote_top or 0 if fidelity is not None else 0)

    def _void_if_over_budget(self, trial_id: int) -> bool:
        """After a lost lock: close our new trial if it is beyond the budget. Every worker that lost the
        lock sorts the same trials the same way, so exactly the excess ones are voided."""
        trials = self.storage.get_all_trials(self.study_id, deepcopy=False)
        excess = {
            adapter.trial_id(t)
            for t in sorted(counted_trials(trials), key=lambda t: t.number)[self._limit() :]
        }
        if trial_id not in excess:
            return False
        log.warning("a database restart broke the budget lock: trial id %d is one too many, voided", trial_id)
        self.storage.set_trial_system_attr(trial_id, attrs.VOID, True)
        self.storage.set_trial_user_attr(trial_id, attrs.REASON, "over_budget")
        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        return True

    def _stop_if_failing_from_the_start(self, trials: list[FrozenTrial]) -> None:
        """Fail fast: the same failure in every one of the first trials is a mistake in the task or the
        config, not a result; the rest of the budget would only repeat it."""
        n = self.config.worker.fail_fast_trials
        if self._fail_fast_settled:
            return
        reason = failing_from_the_start(trials, n)
        if reason is not None:
            raise TaskError(
                f"the first {n} trials all failed ({reason}); stopping instead of spending the rest of the "
                f"budget: see {self.study_dir}/trials/trial-0.json and the worker logs",
                self.config.task_spec,
            )
        finished = sum(1 for t in trials if t.state.is_finished())
        self._fail_fast_settled = n == 0 or finished >= 2 * n  # past the start: no need to look again

    def _admits(self, trials: list[FrozenTrial], promoting: bool) -> bool:
        """Whether the trial about to be taken can finish in the task's time left: it is the oldest WAITING
        one (promotions just decided come first), else a new one at the study's first fidelity."""
        assert self.admission is not None
        waiting = sorted((t for t in trials if t.state == TrialState.WAITING), key=lambda t: t.number)
        promoted = promoting or bool(waiting and is_promoted(waiting[0]))
        self._admission = self.admission.check(trials, promoted=promoted)
        return self._admission.admit

    def _reserve_once(self) -> tuple[optuna.Trial | None, str, int]:
        trial_id: int | None = None
        decision = None
        running = 0
        try:
            with self.shared.lock("budget"):
                # The sampler of the next Trial reuses this read instead of reading the trials again.
                trials = adapter.read_trials_for_ask(self.study)
                self._stop_if_failing_from_the_start(trials)
                decision = decide(self.config, trials, self.study.user_attrs if self._campaign else {})
                running = sum(1 for t in trials if t.state == TrialState.RUNNING)
                if decision.kind != "ask":
                    return None, decision.kind, running
                if self.admission is not None and not self._admits(trials, bool(decision.enqueue)):
                    return None, "no_time", running
                for key, value in decision.study_attrs.items():
                    self.study.set_user_attr(key, value)
                for params, marks in decision.enqueue:
                    self.study.enqueue_trial(params, user_attrs=marks)
                if decision.enqueue:  # take what was just enqueued (promotions come before new trials)
                    trials = self.storage.get_all_trials(self.study_id, deepcopy=False)
                # A grid point is claimed by the new trial itself; other pins are only sampler hints.
                claim = decision.fixed if self.config.sampler.type == "grid" else {}
                trial_id = self._new_trial_id(trials, claim)
        except LockLost:
            if trial_id is None or decision is None or decision.kind != "ask":
                return None, "retry", running
            if self._void_if_over_budget(trial_id):
                return None, "retry", running
        assert trial_id is not None and decision is not None
        self.study.sampler = (
            optuna.samplers.PartialFixedSampler(decision.fixed, self.sampler)
            if decision.fixed
            else self.sampler
        )
        trial = optuna.Trial(self.study, trial_id)  # reads the trial and runs sampler hooks: no lock needed
        if decision.phase is not None and attrs.PHASE not in trial.user_attrs:
            trial.set_user_attr(attrs.PHASE, decision.phase)
        return trial, "ask", running

    def next_trial(self) -> optuna.Trial | None:
        """The next trial for this worker, or None when the study needs no more from it.

        With the budget used, the worker lingers one grace period while other trials run: if one of their
        workers died, its trial turns stale within that time and its retry must not be left WAITING with no
        worker to run it.
        """
        beat = self.config.worker
        linger_until = time.monotonic() + beat.grace_period + beat.heartbeat_interval
        # Polls start short, so that a worker leaves about when the last trial of a study of short trials
        # ends (a fixed 1 s poll made the last worker up to a second late), and back off to 1 s, so that
        # workers waiting on trials of hours do not load the database: each poll is one read of the trials.
        poll = 0.05
        while True:
            with self.guard.critical():
                self.fail_stale_trials()
                # Only the lock's own connection can fail here without being retried by the storage layer.
                trial, kind, running = self.storage.call(self._reserve_once)
            if trial is not None:
                return trial
            if kind == "retry":
                continue
            if kind == "no_time":
                assert self.admission is not None
                if self.admission.still_refused(self._admission):
                    return None
                continue
            if kind == "done" and (running == 0 or not adapter.heartbeat_enabled(self.storage)):
                return None
            if kind == "done" and time.monotonic() >= linger_until:
                return None
            # "wait" (phases and promotion need the results of running trials) or lingering.
            time.sleep(poll)
            poll = min(1.0, poll * 2, float(beat.heartbeat_interval))
