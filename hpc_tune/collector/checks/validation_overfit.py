"""``validation_overfit``: choosing among many trials by one validation split overfits that split (validation
96.60 % became 96.26 % on the leaderboard); a held-out ``test_*`` metric shows it.

It fires when the best trial by the tuning metric is out of the held-out top-k, or its generalization gap is
more than twice that of the other top-k trials and more than 0.25 % of its value (96.60 -> 96.26 is a 0.35 %
gap).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from optuna.trial import FrozenTrial
from pydantic import Field

from hpc_tune.collector.checks.context import Context, as_int, finite, value_of
from hpc_tune.collector.checks.finding import Check, Finding
from hpc_tune.collector.formatting import fmt
from hpc_tune.collector.model import Model

OVERFIT_GAP_FACTOR = 2.0
OVERFIT_MIN_GAP_FRACTION = 0.0025


class ValidationOverfitDetails(Model):
    """What ``validation_overfit`` measured."""

    held_out_key: str = Field(description="The held-out metric compared (a test_* key of the records).")
    best_trial: int = Field(description="The best trial by the tuning metric.")
    tuning_value: float = Field(description="Its tuning metric at the epoch compared.")
    held_out_value: float = Field(description="Its held-out metric there.")
    held_out_rank: int = Field(description="Its rank by the held-out metric (1 is best).")
    n: int = Field(description="Ranked trials that have the held-out metric.")
    gap: float = Field(description="Its tuning minus held-out value (positive: held-out worse).")
    median_gap_top_k: float | None = Field(description="The median gap of the other top-k trials.")
    top_k_by_held_out: list[int] = Field(description="The top-k trials by the held-out metric.")


class ValidationOverfit(Finding):
    """The best trial by validation is not the best on the held-out metric."""

    code: Literal["validation_overfit"] = Field(
        "validation_overfit", description="The check (hpc_tune/collector/checks/validation_overfit.py)."
    )
    details: ValidationOverfitDetails = Field(description="The numbers behind the message.")


def _held_out_key(ctx: Context, trials: Sequence[FrozenTrial]) -> str | None:
    """The held-out twin of the tuning metric: test_<x> for val_<x> (or test_<metric>); else the only test_*
    key, when it is as loss-like as the metric (a test_loss never stands in for an accuracy)."""
    keys = {
        k for t in trials for e in ctx.epochs(t) for k in e if isinstance(k, str) and k.startswith("test_")
    }
    metric = ctx.metric or ""
    for candidate in (f"test_{metric[4:]}" if metric.startswith("val_") else None, f"test_{metric}"):
        if candidate in keys:
            return candidate
    lossy = any(w in metric for w in ("loss", "err"))
    if len(keys) == 1:
        (only,) = keys
        if any(w in only for w in ("loss", "err")) == lossy:
            return only
    return None


def check(ctx: Context) -> ValidationOverfit | None:
    key = _held_out_key(ctx, ctx.ranking)
    if key is None:
        return None
    rows = []  # (trial, tuning value, value at that epoch, held-out value)
    for t in ctx.ranking:
        epochs = ctx.epochs(t)
        best_epoch = as_int(((ctx.record(t) or {}).get("best") or {}).get("epoch"))
        at = next(
            (e for e in epochs if as_int(e.get("epoch")) == best_epoch and finite(e.get(key)) is not None),
            None,
        )
        if at is None:
            at = next((e for e in reversed(epochs) if finite(e.get(key)) is not None), None)
        if at is None:
            continue
        tuned = finite(at.get(ctx.metric)) if ctx.metric else None
        rows.append((t, value_of(t), tuned if tuned is not None else value_of(t), finite(at.get(key))))
    if len(rows) < 3:
        return None
    best = rows[0]  # ctx.ranking is best first
    k = min(ctx.top_k, len(rows))
    by_held = sorted(rows, key=lambda r: -ctx.score(r[3]))  # type: ignore[arg-type]
    held_rank = [r[0].number for r in by_held].index(best[0].number) + 1

    def gap(row: tuple[Any, ...]) -> float:
        return ctx.score(row[2]) - ctx.score(row[3])  # positive: held-out worse than validation

    others = [gap(r) for r in rows[1:k]]
    median_gap = float(np.median(others)) if len(others) >= 2 else None
    best_gap = gap(best)
    out_of_top = len(rows) > k and held_rank > k
    wide_gap = (
        median_gap is not None
        and best_gap > OVERFIT_GAP_FACTOR * max(median_gap, 0.0)
        and best_gap > OVERFIT_MIN_GAP_FRACTION * abs(best[2])  # type: ignore[arg-type]
    )
    if not (out_of_top or wide_gap):
        return None
    metric = ctx.metric or "value"
    gap_said = (
        f"; its gap {fmt(best_gap)} is over {OVERFIT_GAP_FACTOR:g}x the median gap of the other top {k} "
        f"({fmt(median_gap)})"
        if wide_gap
        else ""
    )
    return ValidationOverfit(
        message=f"The best trial by {metric} (trial {best[0].number}, {fmt(best[2])}) ranks {held_rank} of "
        f"{len(rows)} by {key} ({fmt(best[3])}){gap_said}.",
        action=f"do not pick by {metric} alone: re-run the top trials with several seeds and compare them on "
        f"{key}, or use a larger validation split",
        details=ValidationOverfitDetails(
            held_out_key=key,
            best_trial=best[0].number,
            tuning_value=best[2],  # type: ignore[arg-type]
            held_out_value=best[3],  # type: ignore[arg-type]
            held_out_rank=held_rank,
            n=len(rows),
            gap=best_gap,
            median_gap_top_k=median_gap,
            top_k_by_held_out=[r[0].number for r in by_held[:k]],
        ),
    )


CHECK = Check(ValidationOverfit, check)
