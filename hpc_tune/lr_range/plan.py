"""Which sweeps a range test runs, and over which learning rates, read from the config's space.

One run per optimizer choice and per batch size, because both move the range: SGD's good rates sit about
ten times above AdamW's, and a larger batch takes a larger rate. Every other parameter is held where the
study would start: the baseline's value, else the middle of its range (geometric for a log scale), else a
categorical's first choice, so that the test sees a model the study will really train.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpc_tune.config import Config
from hpc_tune.config.space import CategoricalParam, FloatParam, IntParam, is_active
from hpc_tune.errors import ConfigError, SpaceError

DEFAULT_STEPS = 100
DEFAULT_WIDEN = 100.0
# Parameter names read as the learning rate, the optimizer and the batch size (a dotted name's last part
# counts too: Hydra's optimizer.lr is a learning rate).
LR_NAMES = ("lr", "learning_rate")
OPTIMIZER_NAMES = ("optimizer", "optimizer.name", "optimizer.type", "optim")
BATCH_NAMES = ("batch_size",)

Spec = FloatParam | IntParam | CategoricalParam


@dataclass(frozen=True)
class SweepRun:
    """One run of the test: every parameter the task gets, the learning rate at the sweep's start."""

    params: dict[str, Any]
    optimizer: str | None  # the space's choice, None: the task's own optimizer
    batch_size: int | None  # the space's choice, None: train.batch_size or the script's own

    def label(self, optimizer: str | None = None, batch_size: int | None = None) -> str:
        """``adamw, batch 64``; the engine fills in what the task chose itself."""
        parts = [str(self.optimizer or optimizer or "the task's optimizer")]
        size = self.batch_size or batch_size
        if size is not None:
            parts.append(f"batch {size}")
        return ", ".join(parts)


@dataclass(frozen=True)
class RangePlan:
    param: str
    space: FloatParam
    start: float
    end: float
    steps: int
    runs: list[SweepRun]

    def lrs(self) -> list[float]:
        """The learning rate of every step: exponential from ``start`` to ``end``."""
        growth = (self.end / self.start) ** (1.0 / (self.steps - 1))
        return [self.start * growth**k for k in range(self.steps)]


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _named(space: Mapping[str, Spec], names: tuple[str, ...], kind: type | tuple[type, ...]) -> str | None:
    for name, spec in space.items():
        if (name in names or _leaf(name) in names) and isinstance(spec, kind):
            return name
    return None


def lr_param(config: Config, param: str | None = None) -> tuple[str, FloatParam]:
    """The space's learning rate: ``param``, else the first float named lr or learning_rate."""
    space = config.space or {}
    name = param if param is not None else _named(space, LR_NAMES, FloatParam)
    if name is None:
        raise SpaceError(
            "the space has no learning rate to test: a float named lr or learning_rate (optimizer.lr counts "
            "too); name another with --param",
            "space",
        )
    spec = space.get(name)
    if spec is None:
        raise SpaceError(f"no parameter {name!r} in the space", "--param")
    if not isinstance(spec, FloatParam):
        raise SpaceError(
            f"is of type {spec.type}; the range test sweeps a float learning rate", f"space.{name}"
        )
    if spec.low <= 0:
        raise SpaceError("low must be > 0: the range test sweeps on a log scale", f"space.{name}.low")
    return name, spec


def plan_range(
    config: Config, *, steps: int = DEFAULT_STEPS, widen: float = DEFAULT_WIDEN, param: str | None = None
) -> RangePlan:
    """The sweeps from ``space.lr.low / widen`` to ``space.lr.high * widen``, ``steps`` each."""
    if steps < 10:
        raise ConfigError(f"steps must be at least 10 to read a slope, got {steps}", "--steps")
    if not widen >= 1.0:
        raise ConfigError(f"must be at least 1, got {widen:g}", "--widen")
    name, spec = lr_param(config, param)
    start, end = spec.low / widen, spec.high * widen
    space = config.space or {}
    optimizer = _named(space, OPTIMIZER_NAMES, CategoricalParam)
    batch = _named(space, BATCH_NAMES, (CategoricalParam, IntParam))
    optimizers: list[Any] = list(space[optimizer].choices) if optimizer else [None]  # type: ignore[union-attr]
    batches = _batch_sizes(space[batch]) if batch else [None]
    runs = []
    for choice in optimizers:
        for size in batches:
            fixed = {k: v for k, v in ((optimizer, choice), (batch, size), (name, start)) if k is not None}
            runs.append(
                SweepRun(
                    params=_start_point(space, config.baseline or {}, fixed),
                    optimizer=None if choice is None else str(choice),
                    batch_size=None if size is None else int(size),
                )
            )
    return RangePlan(name, spec, start, end, steps, runs)


def _batch_sizes(spec: Spec) -> list[Any]:
    """Every choice of a categorical batch size; an int range's two ends."""
    if isinstance(spec, CategoricalParam):
        return list(spec.choices)
    assert isinstance(spec, IntParam)
    return [spec.low, spec.high]


def _start_point(space: Mapping[str, Spec], baseline: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict:
    """Every active parameter: ``fixed``, the baseline's, else the middle of its range."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        if not is_active(spec, params):
            continue
        if name in fixed:
            params[name] = fixed[name]
        elif name in baseline:
            params[name] = baseline[name]
        else:
            params[name] = _middle(spec)
    return params


def _middle(spec: Spec) -> Any:
    if isinstance(spec, CategoricalParam):
        return spec.choices[0]
    middle = math.sqrt(spec.low * spec.high) if spec.log else (spec.low + spec.high) / 2
    if isinstance(spec, IntParam):
        return min(spec.high, spec.low + round((middle - spec.low) / spec.step) * spec.step)
    if spec.step is not None:
        return min(spec.high, spec.low + round((middle - spec.low) / spec.step) * spec.step)
    return middle
