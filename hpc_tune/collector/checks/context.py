"""What the checks share: the study read once (which trials stand, which are comparable, their curves), the
parameters' recorded ranges and where a value sits in one, and the rank correlations several checks and the
analysis read.

Rules shared by all checks: a trial that was re-run (retried or continued, ``retried_numbers``) is replaced by
its re-run and never counted; promoted (full-fidelity) trials are ranked among themselves, and the screening
population (same fidelity as the pruned trials) is what importance, rank correlation and ``all_similar`` use.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated, Any, Literal, NamedTuple, TypeGuard

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState
from pydantic import Field

from hpc_tune import attrs
from hpc_tune.atomic import jsonable
from hpc_tune.collector.model import Model
from hpc_tune.policy.ranking import best_first, has_value, ranked_trials
from hpc_tune.policy.reliable_pruning import first_reliable, spearman, spearman_by_epoch
from hpc_tune.policy.reruns import retried_numbers

__all__ = [
    "EDGE_FRACTION",
    "MIN_RANK_TRIALS",
    "RANK_THRESHOLD",
    "CategoricalRange",
    "Context",
    "EpochSpearman",
    "NumericRange",
    "ParamRange",
    "RankCorrelation",
    "ScreeningPair",
    "as_int",
    "edge_of",
    "finite",
    "is_numeric",
    "rank_correlation",
    "ranges_of",
    "rounded_spearman",
    "value_of",
    "widened_range",
]

EDGE_FRACTION = 0.05  # "at the boundary": within 5 % of the range (of its decades for a log range)
RANK_THRESHOLD = 0.8  # Spearman from which an epoch's ranking is taken for the final one
MIN_RANK_TRIALS = 5  # fewer completed trials at an epoch: no correlation is computed there


# ------------------------------------------------------------------------------------------------- values
def finite(value: Any) -> float | None:
    """A number from a record or an attribute, None for anything that is no finite number."""
    if value is None or isinstance(value, bool | str):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def as_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def value_of(trial: FrozenTrial) -> float | None:
    """The trial's one finite objective value (None for a multi-objective or unfinished trial)."""
    values = trial.values
    if not values or len(values) != 1:
        return None
    return finite(values[0])


def rounded_spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Spearman as the summary reports it: four decimals, None where it is undefined."""
    r = spearman(xs, ys)
    return None if r is None else round(r, 4)


# ------------------------------------------------------------------------------------------------- ranges
class NumericRange(Model):
    """A float or int parameter's range as Optuna recorded it."""

    type: Literal["float", "int"] = Field(description="`float` or `int`.")
    low: int | float = Field(description="Smallest value.")
    high: int | float = Field(description="Largest value.")
    log: bool = Field(description="Sampled in log space.")
    step: int | float | None = Field(description="The grid's step; null for a continuous float range.")


class CategoricalRange(Model):
    """A categorical parameter's choices as Optuna recorded them."""

    type: Literal["categorical"] = Field(description="`categorical`.")
    choices: list[Any] = Field(description="The choices, in their order.")


ParamRange = Annotated[NumericRange | CategoricalRange, Field(discriminator="type")]


def ranges_of(trials: Sequence[FrozenTrial]) -> dict[str, ParamRange]:
    """Every parameter's recorded distribution, the latest trial's where a range changed during the study."""
    found: dict[str, BaseDistribution] = {}
    for t in sorted(trials, key=lambda t: t.number):
        found.update(t.distributions)
    return {name: _range_of(found[name]) for name in sorted(found)}


def _range_of(dist: BaseDistribution) -> ParamRange:
    if isinstance(dist, CategoricalDistribution):
        return CategoricalRange(type="categorical", choices=[jsonable(c) for c in dist.choices])
    if isinstance(dist, IntDistribution):
        return NumericRange(type="int", low=dist.low, high=dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, FloatDistribution):
        return NumericRange(type="float", low=dist.low, high=dist.high, log=dist.log, step=dist.step)
    raise TypeError(f"unknown distribution {type(dist).__name__}")


def is_numeric(spec: ParamRange) -> TypeGuard[NumericRange]:
    """A range a value can sit at the edge of: numbers, and more than one of them."""
    return isinstance(spec, NumericRange) and spec.high > spec.low


def _position(spec: NumericRange, value: float) -> float:
    """Where ``value`` lies in the range, 0 at ``low`` and 1 at ``high``; in decades for a log range."""
    low, high = float(spec.low), float(spec.high)
    if spec.log and low > 0 and value > 0:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def edge_of(spec: NumericRange, value: Any) -> Literal["low", "high"] | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    position = _position(spec, float(value))
    if position <= EDGE_FRACTION:
        return "low"
    if position >= 1 - EDGE_FRACTION:
        return "high"
    return None


def widened_range(spec: NumericRange, edge: Literal["low", "high"]) -> tuple[int | float, int | float]:
    """The range moved out past ``edge``: one more decade for a log range (never to 0 or below), half its
    width for a linear one (a non-negative range stays non-negative, a float range inside [0, 1] stays a
    fraction); integers and stepped ranges stay on their grid."""
    low, high = spec.low, spec.high
    is_int = spec.type == "int"
    step = spec.step
    if spec.log:
        if edge == "low":
            low = max(1, math.floor(low / 10)) if is_int else _round(low / 10)
        else:
            high = math.ceil(high * 10) if is_int else _round(high * 10)
        return low, high
    half: float = (high - low) / 2
    if step:
        steps = max(1, math.ceil(half / step))
        half = steps * step
    elif is_int:
        half = max(1, math.ceil(half))
    if edge == "low":
        new_low = low - half
        if low >= 0 and new_low < 0:
            new_low = low - math.floor(low / step) * step if step else 0
        low = int(new_low) if is_int else _round(new_low)
    else:
        new_high = high + half
        if not is_int and spec.low >= 0 and high <= 1 and new_high > 1:
            new_high = high + math.floor((1 - high) / step) * step if step else 1.0
        high = int(new_high) if is_int else _round(new_high)
    return low, high


def _round(x: float) -> float:
    """Readable bounds: 1e-05, not 1.0000000000000001e-05; 0.0, not a step's 5.6e-17 of float error."""
    return float(f"{round(x, 12):.6g}")


# --------------------------------------------------------------------------------------- rank correlation
class EpochSpearman(Model):
    """The rank correlation at one epoch."""

    epoch: int = Field(description="The epoch.")
    spearman: float | None = Field(
        description="Spearman between the metric at this epoch and the final value; null where undefined."
    )
    n: int = Field(description="Complete trials that reached this epoch.")


class RankCorrelation(Model):
    """How well each epoch's ranking predicts the final one, over the complete (screening) trials."""

    threshold: float = Field(description="The Spearman from which an epoch's ranking is trusted (0.8).")
    by_epoch: list[EpochSpearman] = Field(description="Each epoch with enough complete trials.")
    reliable_from: int | None = Field(
        description="The first epoch from which Spearman stays at or above the threshold; null if never."
    )
    pruned_at: dict[str, int] = Field(description="Epoch (as a string) -> trials pruned at that epoch.")


def rank_correlation(
    complete: Sequence[FrozenTrial],
    pruned: Sequence[FrozenTrial],
    curve: Callable[[FrozenTrial], Mapping[int, float]],
) -> RankCorrelation | None:
    """Spearman between each epoch's metric and the final value over the complete trials that reached it;
    ``reliable_from`` is the first epoch from which it stays >= 0.8. ``curve(trial)`` gives epoch -> value."""
    measured = spearman_by_epoch([(curve(t), value_of(t)) for t in complete], min_trials=MIN_RANK_TRIALS)
    by_epoch = [
        EpochSpearman(epoch=epoch, spearman=None if r is None else round(r, 4), n=n)
        for epoch, r, n in measured
    ]
    pruned_at = Counter(max(c) for c in (curve(t) for t in pruned) if c)
    if not by_epoch:
        return None
    # The same rule the pruner with `n_warmup_steps: auto` applies while the study runs.
    return RankCorrelation(
        threshold=RANK_THRESHOLD,
        by_epoch=by_epoch,
        reliable_from=first_reliable(measured, RANK_THRESHOLD),
        pruned_at={str(e): n for e, n in sorted(pruned_at.items())},
    )


class ScreeningPair(NamedTuple):
    """A completed promotion: the screening trial, its full-fidelity re-run, and their two values."""

    source: int
    trial: int
    screening_value: float
    value: float


# ------------------------------------------------------------------------------------------------ context
@dataclass
class Context:
    """The study, read once: which trials stand, which are comparable, and their curves."""

    trials: list[FrozenTrial]
    maximize: bool
    records: Mapping[Any, dict[str, Any]]
    metric: str | None
    top_k: int
    standing: list[FrozenTrial]
    complete: list[FrozenTrial]  # standing COMPLETE, finite value, best first
    population: list[FrozenTrial]  # complete at screening fidelity (not promoted), best first
    ranking: list[FrozenTrial]  # what the collector ranks (policy/ranking.py); best first
    pruned: list[FrozenTrial]
    confirmation_sd: float | None = None  # the seed-to-seed sd of ``rerun-top``'s runs, when there are any
    _curves: dict[int, dict[int, float]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        trials: Sequence[FrozenTrial],
        *,
        maximize: bool,
        records: Mapping[Any, dict[str, Any]],
        metric: str | None,
        top_k: int,
        confirmation_sd: float | None = None,
    ) -> Context:
        ordered = sorted(trials, key=lambda t: t.number)
        retried = retried_numbers(ordered)
        standing = [t for t in ordered if t.number not in retried]
        direction = "maximize" if maximize else "minimize"
        complete = best_first(standing, direction)
        return cls(
            trials=ordered,
            maximize=maximize,
            records=records,
            metric=metric,
            top_k=top_k,
            standing=standing,
            complete=complete,
            population=[t for t in complete if attrs.PROMOTED_FROM not in t.user_attrs],
            ranking=ranked_trials(standing, direction),
            pruned=[t for t in standing if t.state == TrialState.PRUNED],
            confirmation_sd=confirmation_sd,
        )

    def score(self, value: float) -> float:
        """Higher is better, whatever the direction."""
        return value if self.maximize else -value

    def record(self, trial: FrozenTrial) -> dict[str, Any] | None:
        found = self.records.get(trial.number)
        if found is None:
            found = self.records.get(str(trial.number))
        return found if isinstance(found, dict) else None

    def epochs(self, trial: FrozenTrial) -> list[dict[str, Any]]:
        epochs = (self.record(trial) or {}).get("epochs")
        return (
            [e for e in epochs if isinstance(e, dict) and as_int(e.get("epoch")) is not None]
            if epochs
            else []
        )

    def curve(self, trial: FrozenTrial) -> dict[int, float]:
        """Epoch -> metric: the record's epochs when it has the metric, else Optuna's intermediate values."""
        if trial.number not in self._curves:
            curve: dict[int, float] = {}
            if self.metric:
                for e in self.epochs(trial):
                    value = finite(e.get(self.metric))
                    if value is not None:
                        curve[int(e["epoch"])] = value
            if not curve:
                curve = {
                    int(step): float(v)
                    for step, v in trial.intermediate_values.items()
                    if finite(v) is not None
                }
            self._curves[trial.number] = dict(sorted(curve.items()))
        return self._curves[trial.number]

    @cached_property
    def ranges(self) -> dict[str, ParamRange]:
        return ranges_of(self.trials)

    @cached_property
    def correlation(self) -> RankCorrelation | None:
        return rank_correlation(self.population, self.pruned, self.curve)

    @cached_property
    def screening_pairs(self) -> list[ScreeningPair]:
        """Every completed promotion, by source trial."""
        by_number = {t.number: t for t in self.trials}
        pairs = []
        for t in self.complete:
            source = by_number.get(as_int(t.user_attrs.get(attrs.PROMOTED_FROM)))  # type: ignore[arg-type]
            if source is None or not has_value(source):
                continue
            pairs.append(ScreeningPair(source.number, t.number, source.value, t.value))  # type: ignore[arg-type]
        return sorted(pairs)
