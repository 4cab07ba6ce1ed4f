"""The search space as Optuna sees it: each parameter's distribution, and ``suggest(trial)``.

The space itself (config/space.py) is plain data that ``check`` validates without importing Optuna; this is
where it meets the sampler. Parameters are suggested in the order the YAML lists them, so that a conditional
parameter (``when:``) is asked for after the categorical it depends on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna

from hpc_tune.config.space import CategoricalParam, FloatParam, IntParam, is_active

Param = FloatParam | IntParam | CategoricalParam


def distribution(spec: Param) -> optuna.distributions.BaseDistribution:
    if isinstance(spec, FloatParam):
        return optuna.distributions.FloatDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, IntParam):
        return optuna.distributions.IntDistribution(spec.low, spec.high, log=spec.log, step=spec.step)
    return optuna.distributions.CategoricalDistribution(spec.choices)


def suggest(
    trial: optuna.trial.BaseTrial, space: Mapping[str, Param], fixed: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Suggest every active parameter; ``fixed`` pins values (earlier phases, promoted configurations).

    Pinned values still go through ``suggest_*`` (after ``enqueue``-style fixing by the caller) or are
    recorded as plain values, so that every trial carries the full configuration it ran with.
    """
    params: dict[str, Any] = {}
    fixed = fixed or {}
    for name, spec in space.items():
        if not is_active(spec, params):
            continue
        if name in fixed:
            params[name] = fixed[name]
            continue
        if isinstance(spec, FloatParam):
            params[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log, step=spec.step)
        elif isinstance(spec, IntParam):
            params[name] = trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
        else:
            params[name] = trial.suggest_categorical(name, spec.choices)
    return params
