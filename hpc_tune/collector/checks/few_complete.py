"""``few_complete``: importance and every ranking need trials; with fewer than 10 (or 2 per parameter) they
are anecdotes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hpc_tune.collector.checks.context import CategoricalRange, Context, is_numeric
from hpc_tune.collector.checks.finding import Check, Finding
from hpc_tune.collector.model import Model

FEW_COMPLETE = 10


class FewCompleteDetails(Model):
    """What ``few_complete`` measured."""

    complete: int = Field(description="Complete trials at screening fidelity.")
    params: int = Field(description="Parameters searched (ranges with more than one value).")
    needed: int = Field(description="Complete trials needed: 10, or 2 per parameter.")


class FewComplete(Finding):
    """Too few complete trials for the parameters searched."""

    code: Literal["few_complete"] = Field(
        "few_complete", description="The check (hpc_tune/collector/checks/few_complete.py)."
    )
    details: FewCompleteDetails = Field(description="The numbers behind the message.")


def check(ctx: Context) -> FewComplete | None:
    if not ctx.standing:
        return None
    n_params = sum(
        1
        for spec in ctx.ranges.values()
        if is_numeric(spec) or (isinstance(spec, CategoricalRange) and len(spec.choices) > 1)
    )
    needed = max(FEW_COMPLETE, 2 * n_params)
    n = len(ctx.population)
    if n >= needed:
        return None
    return FewComplete(
        message=f"Only {n} complete trials for {n_params} parameters (at least {needed} are needed): "
        "importance and rankings are anecdotes.",
        action="raise trials: and submit again (the study goes on where it stopped), or search fewer "
        "parameters (phases)",
        details=FewCompleteDetails(complete=n, params=n_params, needed=needed),
    )


CHECK = Check(FewComplete, check)
