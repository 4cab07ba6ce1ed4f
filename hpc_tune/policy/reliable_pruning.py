"""A pruner that waits until the study's own learning curves can be trusted.

A fixed warm-up is a guess: too short and slow starters are killed (the field notes' F1 0.52 at epoch 20 that
became 0.84 at epoch 83), too long and pruning saves nothing. The study itself tells when early epochs are
reliable: over its completed trials, the rank correlation (Spearman) between the value at epoch e and the
final value. From the first epoch where that correlation stays at or above a threshold for every later epoch,
ranking trials by their current value ranks them as they will finish, and the wrapped pruner (median by
default) may act; before it, nothing is pruned.

The epoch is recomputed whenever a trial completes (cached by the number of completed trials), so it moves as
evidence accumulates: every worker of a shared study reads the same trials and reaches the same epoch. Until
``min_complete`` trials have completed, nothing is pruned at all: with fewer curves the correlation is noise.
The collector's ``pruning_unreliable`` warning measures the same correlation after the fact.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["ReliableEpochPruner", "first_reliable", "reliable_epoch", "spearman", "spearman_by_epoch"]

THRESHOLD = 0.8
MIN_COMPLETE = 5


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman's rank correlation, or None where it says nothing (fewer than 2 points, a constant column)."""
    if len(xs) < 2:
        return None
    # Imported here, not at the top: the worker imports this module through policy/strategy.py at start-up,
    # and scipy.stats costs ~0.8 s there, paid by every array task even when no trial ever reaches a pruning
    # decision (or the study has no reliable pruner at all).
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on a constant input and returns nan
        r = float(spearmanr(xs, ys).statistic)
    return r if math.isfinite(r) else None


def spearman_by_epoch(
    curves: Sequence[tuple[Mapping[int, float], float]], *, min_trials: int = MIN_COMPLETE
) -> list[tuple[int, float | None, int]]:
    """(epoch, Spearman, n) for every epoch reached by at least ``min_trials`` of the ``curves`` — each a
    completed trial's (epoch -> value, final value) — between the value at that epoch and the final one."""
    out = []
    for epoch in sorted({e for curve, _ in curves for e in curve}):
        pairs = [(curve[epoch], final) for curve, final in curves if epoch in curve]
        if len(pairs) >= min_trials:
            out.append((epoch, spearman([p[0] for p in pairs], [p[1] for p in pairs]), len(pairs)))
    return out


def first_reliable(
    by_epoch: Sequence[tuple[int, float | None, int]], threshold: float = THRESHOLD
) -> int | None:
    """The first epoch from which the correlation stays at or above ``threshold`` for every later epoch."""
    reliable = None
    for epoch, rho, _ in reversed(by_epoch):
        if rho is None or rho < threshold:
            break
        reliable = epoch
    return reliable


def reliable_epoch(
    complete: Sequence[FrozenTrial], *, threshold: float = THRESHOLD, min_trials: int = MIN_COMPLETE
) -> int | None:
    """The first step from which intermediate values rank ``complete`` trials as their final values do;
    None when no step qualifies yet."""
    curves = [
        ({s: v for s, v in t.intermediate_values.items() if math.isfinite(v)}, float(t.value))
        for t in complete
        if t.value is not None and math.isfinite(t.value)
    ]
    return first_reliable(spearman_by_epoch(curves, min_trials=min_trials), threshold)


class ReliableEpochPruner(optuna.pruners.BasePruner):
    """``base`` (a MedianPruner without warm-up, by default) acting only from the study's reliable epoch."""

    def __init__(
        self,
        base: optuna.pruners.BasePruner | None = None,
        *,
        threshold: float = THRESHOLD,
        min_complete: int = MIN_COMPLETE,
    ) -> None:
        self._base = base if base is not None else optuna.pruners.MedianPruner(n_startup_trials=min_complete)
        self._threshold = threshold
        self._min_complete = min_complete
        self._cached: tuple[int, int | None] = (-1, None)

    def reliable_from(self, study: optuna.Study) -> int | None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) < self._min_complete:
            return None
        if self._cached[0] != len(complete):
            epoch = reliable_epoch(complete, threshold=self._threshold, min_trials=self._min_complete)
            self._cached = (len(complete), epoch)
        return self._cached[1]

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        reliable = self.reliable_from(study)
        if reliable is None or step < reliable:
            return False
        return self._base.prune(study, trial)
