"""Which trials are best: one rule for the collector's top-k and for what ``rerun-top`` confirms."""

from __future__ import annotations

import math

from optuna.trial import FrozenTrial, TrialState

from hpc_tune.study.campaign import is_promoted

__all__ = ["ranked_trials"]


def ranked_trials(trials: list[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """Completed trials with a finite value, best first; once trials were promoted from screening, only
    the promoted ones (screening values, on a data subset, are not comparable with full-fidelity ones).

    The collector's top-k and ``rerun-top`` both rank with this, so they always agree.
    """
    complete = [
        t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]
    promoted = [t for t in complete if is_promoted(t)]
    maximize = direction == "maximize"
    # Stable on the trial number among equal values, so two calls pick the same k.
    return sorted(promoted or complete, key=lambda t: (-t.value if maximize else t.value, t.number))  # type: ignore[operator]
