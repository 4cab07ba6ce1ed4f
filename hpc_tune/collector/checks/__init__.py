"""The warnings a person should read before trusting a study's winner: one module per warning, each a
``check(ctx) -> Finding | None`` with the model of its details, and here the registry that runs them.

A new warning is a module in this folder and a line in ``CHECKS``. The registry's order is the order of
``summary.analysis.warnings``, most important first: what changes the conclusion, then what changes the next
study, then bookkeeping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from hpc_tune.collector.checks import (
    all_similar,
    baseline_beats_tuned,
    best_at_boundary,
    failures,
    few_complete,
    mostly_pruned,
    pruning_unreliable,
    screening_unreliable,
    tmax_mismatch,
    validation_overfit,
)
from hpc_tune.collector.checks.context import Context
from hpc_tune.collector.checks.finding import Check, Finding

__all__ = ["CHECKS", "WARNING_ORDER", "AnyFinding", "Check", "Context", "Finding", "run_checks"]

CHECKS: tuple[Check[Any], ...] = (
    baseline_beats_tuned.CHECK,
    best_at_boundary.CHECK,
    validation_overfit.CHECK,
    pruning_unreliable.CHECK,
    screening_unreliable.CHECK,
    tmax_mismatch.CHECK,
    mostly_pruned.CHECK,
    all_similar.CHECK,
    few_complete.CHECK,
    failures.CHECK,
)

WARNING_ORDER: tuple[str, ...] = tuple(c.code for c in CHECKS)

if TYPE_CHECKING:
    AnyFinding = Finding
else:
    # Any check's finding, told apart by its code: summary.json's schema lists each with its details.
    AnyFinding = Annotated[Union[tuple(c.finding for c in CHECKS)], Field(discriminator="code")]  # noqa: UP007


def run_checks(ctx: Context, *, confirmation: bool = False) -> list[Finding]:
    """Every check's finding, in the registry's order; on a confirmation study only the checks that apply
    to one."""
    found = [c.run(ctx) for c in CHECKS if c.on_confirmation or not confirmation]
    return [f for f in found if f is not None]
