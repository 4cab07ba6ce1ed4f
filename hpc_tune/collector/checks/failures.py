"""``failures``: failed trials cost budget; early divergence usually means the learning rate range reaches too
high."""

from __future__ import annotations

import math
from collections import Counter
from typing import Literal

from optuna.trial import FrozenTrial, TrialState
from pydantic import Field

from hpc_tune import attrs
from hpc_tune.collector.checks.context import Context, NumericRange, finite, is_numeric
from hpc_tune.collector.checks.finding import Check, Finding
from hpc_tune.collector.formatting import fmt
from hpc_tune.collector.model import Model

FEW_EPOCHS_DIVERGED = 2


class FailuresDetails(Model):
    """What ``failures`` measured."""

    by_reason: dict[str, int] = Field(description="Reason -> failed trials, most frequent first.")
    diverged_early: int = Field(
        description=f"Failed trials whose values went non-finite within {FEW_EPOCHS_DIVERGED} epochs."
    )
    lr_param: str | None = Field(description="The learning-rate parameter (by its name), if any.")
    diverged_lr_min: float | None = Field(description="The smallest learning rate that diverged.")
    trials: list[int] = Field(description="The failed trials (the first 50).")


class Failures(Finding):
    """Trials failed (retried ones not counted), by reason."""

    code: Literal["failures"] = Field(
        "failures", description="The check (hpc_tune/collector/checks/failures.py)."
    )
    details: FailuresDetails = Field(description="The numbers behind the message.")


def check(ctx: Context) -> Failures | None:
    failed = [t for t in ctx.standing if t.state == TrialState.FAIL]
    if not failed:
        return None
    ranges = ctx.ranges
    by_reason: Counter[str] = Counter()
    diverged: list[FrozenTrial] = []
    for t in failed:
        reason = str(t.user_attrs.get(attrs.REASON) or (ctx.record(t) or {}).get("reason") or "unknown")
        by_reason[reason] += 1
        if reason.startswith("nonfinite") or _diverged_early(ctx, t):
            diverged.append(t)
    lr_name = next(
        (
            n
            for n in sorted(ranges)
            if is_numeric(ranges[n]) and ("lr" in n.lower() or "learning_rate" in n.lower())
        ),
        None,
    )
    lr_values = [float(t.params[lr_name]) for t in diverged if lr_name and lr_name in t.params]
    details = FailuresDetails(
        by_reason=dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        diverged_early=len(diverged),
        lr_param=lr_name,
        diverged_lr_min=min(lr_values) if lr_values else None,
        trials=[t.number for t in failed][:50],
    )
    reasons = ", ".join(f"{r} {n}" for r, n in details.by_reason.items())
    message = f"{len(failed)} trial(s) failed ({reasons})"
    if diverged:
        message += f"; {len(diverged)} diverged early (non-finite values within {FEW_EPOCHS_DIVERGED} epochs)"
    if lr_values and lr_name:
        spec = ranges[lr_name]
        assert isinstance(spec, NumericRange)
        action = (
            f"lower the upper bound of {lr_name} (now {fmt(spec.high)}) below {fmt(min(lr_values))}, "
            "the smallest value that diverged"
        )
    elif diverged:
        action = "lower the learning rate range or add gradient clipping / warm-up: trials diverged early"
    else:
        action = "read the failed trials' reasons (trials/trial-N.json, stderr) and fix the cause"
    return Failures(message=message + ".", action=action, details=details)


def _diverged_early(ctx: Context, trial: FrozenTrial) -> bool:
    epochs = ctx.epochs(trial)
    if epochs:
        last = epochs[-1]
        if int(last["epoch"]) > FEW_EPOCHS_DIVERGED:
            return False
        return any(
            v is None or (isinstance(v, float) and not math.isfinite(v))
            for k, v in last.items()
            if k != "epoch" and not isinstance(v, str | bool | dict | list)
        )
    steps = trial.intermediate_values
    if not steps:
        return False
    last_step = max(steps)
    return last_step <= FEW_EPOCHS_DIVERGED and finite(steps[last_step]) is None


# The one check that also applies to a confirmation study: its runs can fail like any other.
CHECK = Check(Failures, check, on_confirmation=True)
