"""A pruner that extrapolates each trial's own learning curve, measured in benchmarks/search_efficiency.py.

The idea (Domhan, Springenberg and Hutter, 2015; DeepHyper's ``LCModelStopper``): fit parametric curve
families to the epochs a trial has run, forecast its final value with an uncertainty, and stop it when even
an optimistic forecast cannot beat the incumbent (the best finished trial). Unlike the rules that compare a
trial with the finished ones at the same epoch, it judges a trial by its own shape, so it cannot be misled
by finished trials that are survivors of earlier pruning, and a slow starter that is still climbing steeply
keeps a high forecast.

Simplified so that hundreds of replayed searches stay cheap: each family is ``value = c + a * g(epoch)``
with ``g`` fixed (power laws, exponentials, a logarithm), fitted by linear least squares, instead of Domhan's
MCMC over an ensemble of non-linear families. The forecast used is the most optimistic family's prediction
plus ``z`` standard errors of it: a trial is stopped only when no family gives it a chance.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

# Saturating shapes (power laws and exponentials of the epoch) and two that never saturate (log, linear):
# where those fit best, the trial is still climbing and its forecast stays high.
FAMILIES = (
    lambda x: x**-0.5,
    lambda x: x**-1.0,
    lambda x: x**-2.0,
    lambda x: np.exp(-x / 3.0),
    lambda x: np.exp(-x / 10.0),
    np.log,
    lambda x: x,  # a steady climb, extrapolated as one: the most optimistic, where it fits best
)


def optimistic_forecast(values: list[float], epochs: int, *, z: float = 2.0, maximize: bool = True) -> float:
    """The most optimistic plausible forecast of the value at epoch ``epochs`` from ``values`` (epochs 1..n,
    n >= 3): each family's least-squares prediction plus ``z`` prediction standard errors (minus, when
    minimising), best over the families that fit about as well as the best one (Akaike weights of at least
    e^-2 of the best: the ensemble's weighting, cut to what the data support)."""
    y = np.asarray(values, dtype=float) * (1 if maximize else -1)
    x = np.arange(1, len(y) + 1, dtype=float)
    fits = []
    for g in FAMILIES:
        design = np.column_stack([np.ones_like(x), g(x)])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        residual = y - design @ coef
        ssr = max(float(residual @ residual), 1e-12)
        at = np.array([1.0, float(g(np.array([float(epochs)]))[0])])
        leverage = float(at @ np.linalg.pinv(design.T @ design) @ at)
        sigma2 = ssr / max(1, len(y) - 2)
        fits.append((ssr, float(at @ coef) + z * math.sqrt(sigma2 * (1.0 + leverage))))
    best_ssr = min(ssr for ssr, _ in fits)
    # Same number of parameters per family: the AIC difference is n * ln(SSR / SSR_best).
    plausible = [f for ssr, f in fits if len(y) * math.log(ssr / best_ssr) <= 4.0]
    best = max(plausible)
    return best if maximize else -best


class CurveForecastPruner(optuna.pruners.BasePruner):
    """Stop a trial when its optimistic forecast (and its best value so far) is worse than the incumbent.

    ``base``, when given, is asked too: the trial is stopped when either says so (the forecast then only adds
    stops of trials that are hopeless by their own curve)."""

    def __init__(
        self,
        epochs: int,
        *,
        z: float = 2.0,
        min_epochs: int = 3,
        min_complete: int = 5,
        base: optuna.pruners.BasePruner | None = None,
    ) -> None:
        self._epochs = epochs
        self._z = z
        self._min_epochs = min_epochs
        self._min_complete = min_complete
        self._base = base

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        if self._base is not None and self._base.prune(study, trial):
            return True
        step = trial.last_step
        if step is None or step < self._min_epochs or step >= self._epochs:
            return False
        complete = [
            t.value
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None
        ]
        if len(complete) < self._min_complete:
            return False
        maximize = study.direction == StudyDirection.MAXIMIZE
        incumbent = max(complete) if maximize else min(complete)
        steps = sorted(trial.intermediate_values)
        values = [trial.intermediate_values[s] for s in steps]
        if len(values) < self._min_epochs or not all(math.isfinite(v) for v in values):
            return False
        seen = max(values) if maximize else min(values)
        forecast = optimistic_forecast(values, self._epochs, z=self._z, maximize=maximize)
        hope = max(seen, forecast) if maximize else min(seen, forecast)
        return hope < incumbent if maximize else hope > incumbent
