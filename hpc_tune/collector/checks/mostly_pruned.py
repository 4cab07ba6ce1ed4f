"""``mostly_pruned``: when more than 90 % of the trials were pruned, the pruner, not the data, chose the
winner."""

from __future__ import annotations

from typing import Literal

from optuna.trial import TrialState
from pydantic import Field

from hpc_tune.collector.checks.context import Context
from hpc_tune.collector.checks.finding import Check, Finding
from hpc_tune.collector.model import Model

MOSTLY_PRUNED = 0.9


class MostlyPrunedDetails(Model):
    """What ``mostly_pruned`` measured."""

    pruned: int = Field(description="Pruned trials (re-run ones not counted).")
    finished: int = Field(description="Finished trials: COMPLETE, PRUNED or FAIL.")
    fraction: float = Field(description="pruned / finished.")


class MostlyPruned(Finding):
    """More than 90 % of the finished trials were pruned."""

    code: Literal["mostly_pruned"] = Field(
        "mostly_pruned", description="The check (hpc_tune/collector/checks/mostly_pruned.py)."
    )
    details: MostlyPrunedDetails = Field(description="The numbers behind the message.")


def check(ctx: Context) -> MostlyPruned | None:
    finished = [
        t for t in ctx.standing if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    ]
    pruned = sum(1 for t in finished if t.state == TrialState.PRUNED)
    if not finished or pruned / len(finished) <= MOSTLY_PRUNED:
        return None
    fraction = pruned / len(finished)
    return MostlyPruned(
        message=f"{pruned} of {len(finished)} finished trials ({fraction:.0%}) were pruned: the pruner, not "
        f"the data, chose the winner among {len(finished) - pruned} survivors.",
        action="prune later and less (raise n_startup_trials and n_warmup_steps, or a patient pruner), "
        "or check that the metric's direction is right",
        details=MostlyPrunedDetails(pruned=pruned, finished=len(finished), fraction=round(fraction, 4)),
    )


CHECK = Check(MostlyPruned, check)
