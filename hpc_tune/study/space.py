"""The search space: typed parameter specs, their validation, and ``suggest(trial)``.

Parameters are suggested in the order the YAML lists them, so a conditional parameter (``when:``) can only
depend on a categorical parameter that comes before it; that keeps the space a simple tree that every
sampler (and a reader of the YAML) can follow.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hpc_tune.errors import SpaceError

Scalar = bool | int | float | str


class _ParamBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # {other_param: value or [values]}: suggest this parameter only when every condition holds.
    when: dict[str, Scalar | list[Scalar]] | None = None

    def conditions(self) -> dict[str, list[Scalar]]:
        return {k: (v if isinstance(v, list) else [v]) for k, v in (self.when or {}).items()}


class FloatParam(_ParamBase):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_numeric(self.low, self.high, self.log, self.step)
        return self

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log, step=self.step)


class IntParam(_ParamBase):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_numeric(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.IntDistribution(self.low, self.high, log=self.log, step=self.step)


class CategoricalParam(_ParamBase):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError("choices must not repeat")
        return self

    def distribution(self) -> optuna.distributions.BaseDistribution:
        return optuna.distributions.CategoricalDistribution(self.choices)


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def _check_numeric(low: float, high: float, log: bool, step: float | None) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError("low and high must be finite numbers")
    if low >= high:
        raise ValueError("low must be < high")
    if log and low <= 0:
        raise ValueError("low must be > 0 when log is true")
    if log and step is not None:
        raise ValueError("log and step cannot be used together")
    if step is not None and step <= 0:
        raise ValueError("step must be > 0")


def check_space(space: Mapping[str, FloatParam | IntParam | CategoricalParam], where: str) -> None:
    """Cross-parameter rules that a single spec cannot check (conditionals refer to earlier categoricals)."""
    seen: dict[str, FloatParam | IntParam | CategoricalParam] = {}
    for name, spec in space.items():
        for parent, values in spec.conditions().items():
            if parent == name:
                raise SpaceError(f"space.{name}.when refers to itself", where)
            if parent not in seen:
                raise SpaceError(
                    f"space.{name}.when refers to '{parent}', which must be a parameter listed before it",
                    where,
                )
            parent_spec = seen[parent]
            if not isinstance(parent_spec, CategoricalParam):
                raise SpaceError(f"space.{name}.when: '{parent}' must be categorical", where)
            unknown = [v for v in values if v not in parent_spec.choices]
            if unknown:
                raise SpaceError(
                    f"space.{name}.when: {unknown[0]!r} is not a choice of '{parent}' "
                    f"({', '.join(map(repr, parent_spec.choices))})",
                    where,
                )
        seen[name] = spec


def is_active(spec: FloatParam | IntParam | CategoricalParam, params: Mapping[str, Any]) -> bool:
    return all(params.get(parent, _MISSING) in values for parent, values in spec.conditions().items())


_MISSING = object()


def suggest(
    trial: optuna.trial.BaseTrial,
    space: Mapping[str, FloatParam | IntParam | CategoricalParam],
    fixed: Mapping[str, Any] | None = None,
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


def grid_size(space: Mapping[str, FloatParam | IntParam | CategoricalParam]) -> int | None:
    """Number of points of the full grid, or None when a parameter is continuous (no grid)."""
    total = 1
    for spec in space.values():
        if isinstance(spec, CategoricalParam):
            total *= len(spec.choices)
        elif isinstance(spec, IntParam) and not spec.log:
            total *= (spec.high - spec.low) // spec.step + 1
        elif isinstance(spec, FloatParam) and spec.step is not None:
            total *= int(round((spec.high - spec.low) / spec.step)) + 1
        else:
            return None
    return total


def grid_points(space: Mapping[str, FloatParam | IntParam | CategoricalParam]) -> dict[str, list[Any]]:
    """The values of each parameter on the grid (for GridSampler); the caller checks ``grid_size`` first."""
    points: dict[str, list[Any]] = {}
    for name, spec in space.items():
        if isinstance(spec, CategoricalParam):
            points[name] = list(spec.choices)
        elif isinstance(spec, IntParam):
            points[name] = list(range(spec.low, spec.high + 1, spec.step))
        else:
            assert spec.step is not None
            n = int(round((spec.high - spec.low) / spec.step)) + 1
            points[name] = [round(spec.low + i * spec.step, 12) for i in range(n)]
    return points


def iter_grid(space: Mapping[str, FloatParam | IntParam | CategoricalParam]) -> Iterator[dict[str, Any]]:
    """Every point of the grid, in one fixed order (the space's order, first parameter slowest), so every
    worker walks the same sequence."""
    points = grid_points(space)
    names = list(points)
    for values in itertools.product(*(points[n] for n in names)):
        yield dict(zip(names, values, strict=True))
