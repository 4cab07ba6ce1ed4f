"""The study budget: exactly ``trials`` finished trials across all workers, and retries that cost nothing.

Optuna's MaxTrialsCallback counts after the fact, so parallel workers overshoot (measured with 4 workers
and 40 trials: 42-43 COMPLETE, 45-62 in all). Here every
``ask`` happens under the study lock after counting, which makes the count and the new trial one atomic step.

The rule, also in docs/concepts.md: every trial takes one unit of budget, except a FAIL that was retried
(a worker was killed or interrupted, or a walltime hand-on): its re-run, with the same parameters, stands in
for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs
from hpc_tune.policy.reruns import retried_numbers

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def is_void(trial: FrozenTrial) -> bool:
    """A trial created beyond the budget while a database restart broke the study lock (trial_source.py):
    it was closed at once and is not part of the study's result."""
    return bool(trial.system_attrs.get(attrs.VOID))


def counted_trials(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use budget: all but re-run FAILs (their re-run stands in for them) and void ones."""
    rerun = retried_numbers(trials)
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in rerun) and not is_void(t)]


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


def counts_by_state(trials: list[FrozenTrial]) -> dict[str, int]:
    """Every state's name with its number of trials (zeros included), as status, run and collect show them."""
    counts = {s.name: 0 for s in TrialState}
    for t in trials:
        counts[t.state.name] += 1
    return counts


def budget_state(trials: list[FrozenTrial], total: int) -> BudgetState:
    counted = counted_trials(trials)
    return BudgetState(
        total=total,
        counted=len(counted),
        finished=sum(1 for t in counted if t.state in FINISHED),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING),
        waiting=sum(1 for t in trials if t.state == TrialState.WAITING),
    )


def failing_from_the_start(trials: list[FrozenTrial], n: int) -> str | None:
    """The reason shared by the first ``n`` finished trials when they all FAILed for it, else None.

    Re-run trials (killed workers) are not results about the task and are skipped, as in the budget.
    """
    if n <= 0:
        return None
    finished = sorted((t for t in counted_trials(trials) if t.state in FINISHED), key=lambda t: t.number)[:n]
    if len(finished) < n or any(t.state != TrialState.FAIL for t in finished):
        return None
    reasons = {str(t.user_attrs.get(attrs.REASON) or "unknown") for t in finished}
    return reasons.pop() if len(reasons) == 1 else None
