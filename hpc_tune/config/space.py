"""The search space: typed parameter specs, their validation, and the grid they span.

Parameters are suggested in the order the YAML lists them, so a conditional parameter (``when:``) can only
depend on a categorical parameter that comes before it; that keeps the space a simple tree that every
sampler (and a reader of the YAML) can follow.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hpc_tune.errors import SpaceError

Scalar = bool | int | float | str


class _ParamBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    when: dict[str, Scalar | list[Scalar]] | None = Field(
        None,
        description="Suggest this parameter only when every named parameter (a categorical listed before it) "
        "has the value, or one of the values, given: `when: {optimizer: sgd}`.",
    )

    def conditions(self) -> dict[str, list[Scalar]]:
        return {k: (v if isinstance(v, list) else [v]) for k, v in (self.when or {}).items()}


class FloatParam(_ParamBase):
    type: Literal["float"] = Field(description="A real number.")
    low: float = Field(description="Smallest value.")
    high: float = Field(description="Largest value (`low < high`).")
    log: bool = Field(
        False,
        description="Sample evenly in log space (learning rates, weight decay: values that span decades); "
        "needs `low > 0`.",
    )
    step: float | None = Field(
        None, description="Only `low`, `low + step`, ... (a grid can then run it). Not with `log`."
    )

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_numeric(self.low, self.high, self.log, self.step)
        return self


class IntParam(_ParamBase):
    type: Literal["int"] = Field(description="An integer.")
    low: int = Field(description="Smallest value.")
    high: int = Field(description="Largest value, included.")
    log: bool = Field(False, description="Sample evenly in log space (layer widths); needs `low > 0`.")
    step: int = Field(1, description="Only `low`, `low + step`, ...")

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_numeric(self.low, self.high, self.log, None if self.step == 1 else self.step)
        return self


class CategoricalParam(_ParamBase):
    type: Literal["categorical"] = Field(description="One of a list of values.")
    choices: list[Scalar] = Field(
        min_length=1, description="The values, each once (strings, numbers or booleans)."
    )

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        if len(set(map(repr, self.choices))) != len(self.choices):
            raise ValueError("choices must not repeat")
        return self


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
