"""The study budget: exactly ``trials`` finished trials across all workers, and retries that cost nothing.

Optuna's MaxTrialsCallback counts after the fact, so parallel workers overshoot (DESIGN §5). Here every
``ask`` happens under the study lock after counting, which makes the count and the new trial one atomic step.

The rule, also in docs/concepts.md: every trial takes one unit of budget, except a FAIL that was retried
(a worker was killed or interrupted): its retry, with the same parameters, stands in for it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def retried_numbers(trials: Iterable[FrozenTrial]) -> set[int]:
    """Numbers of trials that have a retry (Optuna's ``retry_history`` system attribute)."""
    numbers: set[int] = set()
    for t in trials:
        numbers.update(int(n) for n in t.system_attrs.get("retry_history", []))
    return numbers


@dataclass(frozen=True)
class BudgetState:
    total: int
    counted: int  # trials that use budget: everything but retried FAILs
    finished: int  # counted trials in a final state
    running: int
    waiting: int

    @property
    def exhausted(self) -> bool:
        return self.counted >= self.total and self.waiting == 0

    @property
    def done(self) -> bool:
        return self.finished >= self.total and self.running == 0 and self.waiting == 0


def budget_state(trials: list[FrozenTrial], total: int) -> BudgetState:
    retried = retried_numbers(trials)
    counted = [t for t in trials if not (t.state == TrialState.FAIL and t.number in retried)]
    return BudgetState(
        total=total,
        counted=len(counted),
        finished=sum(1 for t in counted if t.state in FINISHED),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING),
        waiting=sum(1 for t in trials if t.state == TrialState.WAITING),
    )


def enqueue_retry(
    study: optuna.Study, failed: FrozenTrial, max_retry: int, extra_system_attrs: dict | None = None
) -> bool:
    """Re-enqueue a failed trial with the same parameters; False when it was retried ``max_retry`` times.

    Delegates to Optuna's RetryHeartbeatStaleTrialCallback so the attributes (``failed_trial``,
    ``retry_history``) are exactly Optuna's and its helpers (``retried_trial_number``) keep working.
    """
    history = failed.system_attrs.get("retry_history", [])
    if len(history) + 1 > max_retry:
        return False
    trial = copy.deepcopy(failed)
    if extra_system_attrs:
        trial.system_attrs = {**trial.system_attrs, **extra_system_attrs}
    RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, trial)
    return True
