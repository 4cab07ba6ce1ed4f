"""``tmax_mismatch``: a cosine schedule whose T_max is not the epochs run either never anneals or restarts
(T_max ≈ 24 with 22 epochs run: the last epochs ran at a learning rate that was never meant to be the end).

A cosine fit must match the recorded lr within 0.5 % of the peak (RMS) to be trusted, and the lr minimum must
be >= 2 epochs and >= 5 % away from the epochs run. One epoch of slack covers both common conventions (lr
logged at the end of the epoch, hpctune: minimum at epoch E; at the start of the epoch, a per-epoch torch
scheduler: minimum at epoch E + 1).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from optuna.trial import FrozenTrial, TrialState
from pydantic import Field

from hpc_tune import attrs
from hpc_tune.collector.checks.context import Context, as_int, finite
from hpc_tune.collector.checks.finding import Check, Finding
from hpc_tune.collector.model import Model, Sparse

TMAX_MIN_EPOCHS = 4
TMAX_TOLERANCE_EPOCHS = 2.0
TMAX_TOLERANCE_FRACTION = 0.05
COSINE_MAX_RMSE = 0.005
LR_RISE = 0.05  # the lr rising again by more than 5 % of its peak after its minimum: a restart
CONSTANT_LR = 0.01  # lr varying by less than 1 % of its peak: no schedule, nothing to check
TMAX_FITS_PER_LENGTH = 50  # the schedule is a config matter: 50 trials per length of run are enough


class Mismatch(Sparse):
    """One complete trial whose schedule does not end with its run."""

    trial: int = Field(description="The trial.")
    epochs_run: int = Field(description="The epochs it ran.")
    t_max: int | float = Field(description="Its T_max: reported, or estimated (one decimal).")
    source: Literal["reported", "lr_curve"] = Field(
        description="`reported` (the trial's t_max attribute or record), or `lr_curve` (a cosine fitted to "
        "the recorded learning rates)."
    )
    lr_min_epoch: float | None = Field(
        None, description="With `lr_curve`: the epoch of the fitted lr minimum (absent otherwise)."
    )
    rises_after: int | None = Field(
        None,
        description="With `lr_curve`: the epoch after which the lr rises again, or null (absent otherwise).",
    )


class TmaxMismatchDetails(Model):
    """What ``tmax_mismatch`` measured."""

    trials: list[Mismatch] = Field(description="The affected trials (the first 20).")
    count: int = Field(description="How many complete trials are affected.")


class TmaxMismatch(Finding):
    """A cosine schedule whose T_max is not the epochs run."""

    code: Literal["tmax_mismatch"] = Field(
        "tmax_mismatch", description="The check (hpc_tune/collector/checks/tmax_mismatch.py)."
    )
    details: TmaxMismatchDetails = Field(description="The numbers behind the message.")


def check(ctx: Context) -> TmaxMismatch | None:
    found: list[Mismatch] = []
    fitted_per_length: Counter[int] = Counter()
    for t in (t for t in ctx.standing if t.state == TrialState.COMPLETE):
        epochs = ctx.epochs(t)
        run = max((int(e["epoch"]) for e in epochs), default=0) or max(ctx.curve(t), default=0)
        if not run:
            continue
        reported = _reported_tmax(t, ctx.record(t), epochs)
        if reported is not None and reported != run:
            found.append(Mismatch(trial=t.number, epochs_run=run, t_max=reported, source="reported"))
            continue
        lr = [(int(e["epoch"]), v) for e in epochs if (v := finite(e.get("lr"))) is not None]
        if len(lr) < TMAX_MIN_EPOCHS or fitted_per_length[run] >= TMAX_FITS_PER_LENGTH:
            continue
        fitted_per_length[run] += 1
        fit = fit_cosine_schedule([e for e, _ in lr], [v for _, v in lr])
        if fit is None:
            continue
        off = abs(fit.min_epoch - run)
        if fit.rises_after is not None or (
            off >= TMAX_TOLERANCE_EPOCHS and off >= TMAX_TOLERANCE_FRACTION * run
        ):
            found.append(
                Mismatch(
                    trial=t.number,
                    epochs_run=run,
                    t_max=round(fit.t_max, 1),
                    source="lr_curve",
                    lr_min_epoch=round(fit.min_epoch, 1),
                    rises_after=fit.rises_after,
                )
            )
    if not found:
        return None
    first = found[0]
    rise = f"; the lr rises again after epoch {first.rises_after}" if first.rises_after else ""
    how = "reported" if first.source == "reported" else "estimated from its lr curve"
    return TmaxMismatch(
        message=f"Cosine T_max ≈ {round(first.t_max)} with {first.epochs_run} epochs run (trial "
        f"{first.trial}, {how}{rise}); {len(found)} complete trial(s) affected.",
        action="set the schedule's T_max to the epochs each trial really runs (hpctune's engine does; a "
        "script must use the epochs it is given, also at reduced fidelity)",
        details=TmaxMismatchDetails(trials=found[:20], count=len(found)),
    )


def _reported_tmax(
    trial: FrozenTrial, record: dict[str, Any] | None, epochs: list[dict[str, Any]]
) -> int | None:
    for source in (
        trial.user_attrs.get(attrs.T_MAX),
        (record or {}).get("t_max"),  # a record's key, not an attribute (a foreign script's own record)
        next((e["t_max"] for e in reversed(epochs) if e.get("t_max") is not None), None),
    ):
        if as_int(source) is not None:
            return as_int(source)
    return None


@dataclass(frozen=True)
class CosineFit:
    """A cosine decay fitted to an lr curve: ``min_epoch`` is where it reaches its minimum (the epochs run,
    for a right T_max), ``t_max`` the length of the decay, ``rises_after`` the epoch after which the lr climbs
    again (a T_max shorter than the run), else None."""

    t_max: float
    min_epoch: float
    start_epoch: float
    rmse: float
    rises_after: int | None


def fit_cosine_schedule(epochs: Sequence[int], lrs: Sequence[float]) -> CosineFit | None:
    """Fit lr_e = A·(1 + cos(π·(e − s)/T))/2 to the decay after the lr's peak, or None when the curve is no
    cosine decay (constant, steps, exponential, linear) or too short.

    Each point's progress through the cosine, arccos(2·lr/A − 1)/π, is linear in the epoch for a cosine: a
    line through them gives the start s and the epoch T + s where the progress reaches 1. The peak amplitude
    A is searched a little above the largest lr seen (the logged lr is the one at the end of an epoch,
    already decayed). ``rises_after`` is reported whatever the shape before."""
    e = np.asarray(epochs, dtype=float)
    lr = np.asarray(lrs, dtype=float)
    order = np.argsort(e, kind="stable")
    e, lr = e[order], lr[order]
    if len(e) < TMAX_MIN_EPOCHS:
        return None
    peak = float(lr.max())
    if peak <= 0 or float(lr.min()) >= peak * (1 - CONSTANT_LR):
        return None
    start = int(np.argmax(lr))
    after_e, after = e[start:], lr[start:]
    lowest = int(np.argmin(after))
    rises = lowest < len(after) - 1 and float(after[lowest:].max() - after[lowest]) > LR_RISE * peak
    rises_after = int(after_e[lowest]) if rises else None
    dec_e, dec = after_e[: lowest + 1], after[: lowest + 1]
    best: tuple[float, float, float] | None = None
    for amplitude in peak * np.linspace(1.0, 1.5, 51):
        fitted = _fit_progress(dec_e, dec, float(amplitude))
        if fitted is not None and (best is None or fitted[0] < best[0]):
            best = fitted
    if best is None:
        if rises_after is None:
            return None
        peak_epoch = float(after_e[0])
        return CosineFit(rises_after - peak_epoch, float(rises_after), peak_epoch, math.inf, rises_after)
    rmse, a, b = best
    min_epoch, start_epoch = (1 - a) / b, -a / b
    if rises_after is None and (rmse > COSINE_MAX_RMSE or start_epoch < -1.0):
        return None
    return CosineFit(
        t_max=min_epoch - start_epoch,
        min_epoch=min_epoch,
        start_epoch=start_epoch,
        rmse=rmse,
        rises_after=rises_after,
    )


def _fit_progress(e: np.ndarray, lr: np.ndarray, amplitude: float) -> tuple[float, float, float] | None:
    x = 2 * lr / amplitude - 1
    usable = (x < 0.98) & (x > -0.98)  # the flat ends of the cosine say little about its length
    if usable.sum() < 2 or len(set(e[usable].tolist())) < 2:
        return None
    progress = np.arccos(np.clip(x[usable], -1, 1)) / np.pi
    b, a = np.polyfit(e[usable], progress, 1)
    if b <= 0:
        return None
    model = amplitude * (1 + np.cos(np.pi * np.clip(a + b * e, 0, 1))) / 2
    rmse = float(np.sqrt(np.mean((model - lr) ** 2)) / amplitude)
    return rmse, float(a), float(b)


CHECK = Check(TmaxMismatch, check)
