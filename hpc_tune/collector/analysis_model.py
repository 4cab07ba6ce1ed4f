"""``summary.analysis``'s schema: the recorded ranges, importance, warnings, rank correlation, screening and
pruning cost of a study (analysis.py computes them, checks/ finds the warnings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hpc_tune.collector.checks import AnyFinding
from hpc_tune.collector.checks.context import ParamRange, RankCorrelation
from hpc_tune.collector.model import Model

__all__ = [
    "Analysis",
    "Importance",
    "ImportanceKind",
    "ImportanceSkipped",
    "Overtaken",
    "PruningCost",
    "Screening",
]

ImportanceKind = Literal["ped_anova", "fanova"]


class ImportanceSkipped(Model):
    """Importance that was not computed, and why (too few trials, nothing varied, a confirmation study)."""

    skipped: str = Field(description="Why importance was not computed.")


class Importance(Model):
    """Optuna's parameter importance over the complete trials at screening fidelity."""

    evaluator: ImportanceKind = Field(description="`ped_anova` (default) or `fanova` (collect --importance).")
    overall: dict[str, float] = Field(
        description="Parameter -> share of importance (summing to 1), most important first; only the "
        "parameters that took more than one value."
    )
    by_phase: dict[str, dict[str, float] | ImportanceSkipped] = Field(
        description="In a phased search: phase (as a string) -> the importance among that phase's trials."
    )
    n_trials: int = Field(description="The trials importance was computed over.")


class Screening(Model):
    """How well the screening ranking predicts the full-fidelity one, over the completed promotions."""

    spearman: float | None = Field(description="Spearman between screening and full-fidelity values.")
    n: int = Field(description="Completed promotions.")


class Overtaken(Model):
    """A pruned trial that was ahead of the eventual best trial at the epoch it was stopped."""

    trial: int = Field(description="The pruned trial.")
    epoch: int = Field(description="The epoch it was stopped at.")
    value: float = Field(description="Its value there.")
    best_trial: int = Field(description="The eventual best trial (same fidelity).")
    best_value_at_epoch: float = Field(description="The best trial's value at that epoch.")


class PruningCost(Model):
    """What pruning may have cost: pruned trials that were ahead of the eventual best when stopped."""

    overtaken: list[Overtaken] = Field(description="Those trials (the first 100).")
    count: int = Field(description="How many there are.")


class Analysis(Model):
    """What a study says beyond its best trial."""

    ranges: dict[str, ParamRange] = Field(
        description="Every parameter's distribution as Optuna recorded it (the latest, if it changed)."
    )
    importance: Importance | ImportanceSkipped = Field(
        description="Parameter importance, or why it is absent."
    )
    warnings: list[AnyFinding] = Field(
        description="What to read before trusting the winner, most important first; each `code` has its own "
        "`details`."
    )
    rank_correlation: RankCorrelation | None = Field(
        description="How early epochs rank trials compared with their final values; null without curves."
    )
    screening: Screening | None = Field(description="Screening vs full fidelity; null without promotions.")
    pruning_cost: PruningCost = Field(description="Pruned trials that were ahead of the best when stopped.")
