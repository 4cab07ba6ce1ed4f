"""A pruner that trusts early epochs on the evidence of partial curves too, measured in
benchmarks/search_efficiency.py.

hpctune's default (``ReliableEpochPruner``) prunes nothing until five trials have finished, and then only from
the epoch where the finished curves' early ranking agrees with their final one. On tables whose curves can be
trusted early, those five full trainings are most of what the default pays more than Optuna's defaults.
The running and the pruned trials hold evidence sooner: every trial that has reached epoch F shows whether
its rank at an earlier epoch e predicted its rank at F. This pruner, while fewer than ``min_complete`` trials
have finished, takes F as the furthest epoch that ``min_complete`` trials (of any state) have reached,
requires F to be at least ``horizon`` of the run (a ranking at epoch 3 of 40 says little about the end),
and prunes a trial below the median of the others at its epoch from the first epoch whose correlation with
F stays at or above the threshold. Once ``min_complete`` trials have finished, it is the default rule,
which backs off (moves the reliable epoch later, or stops pruning) as soon as the finished curves disagree.
"""

from __future__ import annotations

import math
import statistics

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpc_tune.policy.reliable_pruning import (
    MIN_COMPLETE,
    THRESHOLD,
    ReliableEpochPruner,
    first_reliable,
    spearman,
)


def _finite_curve(trial: FrozenTrial) -> dict[int, float]:
    return {s: v for s, v in trial.intermediate_values.items() if math.isfinite(v)}


def partial_reliable_epoch(
    curves: list[dict[int, float]], epochs: int, *, horizon: float, threshold: float, min_trials: int
) -> int | None:
    """The first epoch whose ranking of ``curves`` agrees (Spearman >= threshold, and at every later epoch up
    to F) with their ranking at F, the furthest epoch that ``min_trials`` of them reached; None when F is
    short of ``horizon`` x ``epochs`` or no epoch agrees."""
    reached = sorted((max(c) for c in curves if c), reverse=True)
    if len(reached) < min_trials:
        return None
    far = reached[min_trials - 1]
    if far < horizon * epochs:
        return None
    at_far = [c for c in curves if far in c]
    by_epoch = []
    for epoch in range(1, far):
        pairs = [(c[epoch], c[far]) for c in at_far if epoch in c]
        if len(pairs) >= min_trials:
            by_epoch.append((epoch, spearman([p[0] for p in pairs], [p[1] for p in pairs]), len(pairs)))
    return first_reliable(by_epoch, threshold)


class PartialEvidencePruner(optuna.pruners.BasePruner):
    def __init__(
        self,
        epochs: int,
        *,
        horizon: float = 0.5,
        threshold: float = THRESHOLD,
        min_complete: int = MIN_COMPLETE,
    ) -> None:
        self._epochs = epochs
        self._horizon = horizon
        self._threshold = threshold
        self._min = min_complete
        self._finished_rule = ReliableEpochPruner(min_complete=min_complete, threshold=threshold)

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        trials = study.get_trials(deepcopy=False)
        if sum(t.state == TrialState.COMPLETE for t in trials) >= self._min:
            return self._finished_rule.prune(study, trial)
        others = [_finite_curve(t) for t in trials if t.number != trial.number]
        reliable = partial_reliable_epoch(
            [c for c in others if c] + [_finite_curve(trial)],
            self._epochs,
            horizon=self._horizon,
            threshold=self._threshold,
            min_trials=self._min,
        )
        if reliable is None or step < reliable:
            return False
        at_step = [c[step] for c in others if step in c]
        if len(at_step) < self._min:
            return False
        maximize = study.direction == StudyDirection.MAXIMIZE
        mine = _finite_curve(trial)
        if not mine:
            return True  # only non-finite values so far
        best = max(mine.values()) if maximize else min(mine.values())
        median = statistics.median(at_step)
        return best < median if maximize else best > median
