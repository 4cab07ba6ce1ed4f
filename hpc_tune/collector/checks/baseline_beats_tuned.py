"""``baseline_beats_tuned``: tuning that does not beat the defaults searched the wrong space (or the wrong
metric)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hpc_tune import attrs
from hpc_tune.collector.checks.context import Context, value_of
from hpc_tune.collector.checks.finding import Check, Finding
from hpc_tune.collector.formatting import fmt
from hpc_tune.collector.model import Model
from hpc_tune.policy.ranking import has_value


class BaselineBeatsTunedDetails(Model):
    """What ``baseline_beats_tuned`` measured."""

    baseline_trial: int = Field(description="The baseline's standing run (its last retry).")
    baseline_value: float = Field(description="Its value.")
    best_trial: int = Field(description="The best tuned trial, ranked among the baseline's fidelity.")
    best_value: float = Field(description="Its value.")


class BaselineBeatsTuned(Finding):
    """The baseline is at least as good as the best tuned trial."""

    code: Literal["baseline_beats_tuned"] = Field(
        "baseline_beats_tuned", description="The check (hpc_tune/collector/checks/baseline_beats_tuned.py)."
    )
    details: BaselineBeatsTunedDetails = Field(description="The numbers behind the message.")


def check(ctx: Context) -> BaselineBeatsTuned | None:
    marked = [t for t in ctx.standing if t.user_attrs.get(attrs.BASELINE)]
    if not marked:
        return None
    base = marked[-1]
    value = value_of(base) if has_value(base) else None
    if value is None:
        return None
    group = ctx.ranking if attrs.PROMOTED_FROM in base.user_attrs else ctx.population
    others = [t for t in group if t.number != base.number]
    if not others:
        return None
    best = others[0]
    best_value = value_of(best)
    assert best_value is not None
    if ctx.score(value) < ctx.score(best_value):
        return None
    return BaselineBeatsTuned(
        message=f"The baseline (trial {base.number}, {fmt(value)}) is at least as good as the best tuned "
        f"trial (trial {best.number}, {fmt(best_value)}) after {len(others)} tuned trials.",
        action="keep the baseline; widen or move the search space around it, and check that the metric and "
        "its direction are what you meant",
        details=BaselineBeatsTunedDetails(
            baseline_trial=base.number, baseline_value=value, best_trial=best.number, best_value=best_value
        ),
    )


CHECK = Check(BaselineBeatsTuned, check)
