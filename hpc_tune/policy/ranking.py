"""Which trials are best: one rule for the collector's top-k, what ``rerun-top`` confirms, the trials
screening promotes and the phase pins.

A trial has a value to rank when it is COMPLETE with a finite value; equal values rank by trial number, so
that two calls (two workers under the lock, the collector and ``rerun-top``) pick the same trials.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs

__all__ = ["best_first", "has_value", "is_promoted", "ranked_trials"]


def has_value(trial: FrozenTrial) -> bool:
    """COMPLETE with a finite value: a result that can be ranked."""
    return trial.state == TrialState.COMPLETE and trial.value is not None and math.isfinite(trial.value)


def is_promoted(trial: FrozenTrial) -> bool:
    """A full-fidelity re-run of a screening trial (``fidelity.promote_top``)."""
    return attrs.PROMOTED_FROM in trial.user_attrs


def best_first(trials: Iterable[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """The trials with a value, best first (ties by trial number)."""
    sign = -1.0 if direction == "maximize" else 1.0
    return sorted((t for t in trials if has_value(t)), key=lambda t: (sign * t.value, t.number))  # type: ignore[operator]


def ranked_trials(trials: list[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """``best_first``, except that once trials were promoted from screening only the promoted ones rank:
    screening values, on a data subset, are not comparable with full-fidelity ones.

    The collector's top-k and ``rerun-top`` both rank with this, so they always agree.
    """
    ranked = best_first(trials, direction)
    promoted = [t for t in ranked if is_promoted(t)]
    return promoted or ranked
