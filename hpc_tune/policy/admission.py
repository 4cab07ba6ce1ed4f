"""Walltime-aware admission: is there time left in this task for the next trial to finish?

A trial of a kind that cannot hand on at an epoch boundary (an objective, a script that saves no
checkpoint) and that is still running at SLURM's time limit is killed, and every GPU-second it ran is lost.
Before a worker takes such a trial it estimates how long the trial will take from what the study's finished
trials took, and leaves the rest of its task's time to nobody rather than to a trial that cannot finish.

The estimate is deliberately pessimistic, so that a refusal is rare and right:
- finished trials of the same fidelity (screening or promoted) only, never a continuation (which ran only
  part of a trial) nor a trial voided over the budget;
- COMPLETE trials give their whole duration, scaled to the epochs the next trial runs; only while none has
  completed do pruned ones stand in, their seconds per epoch times the epochs (their start-up is spread over
  few epochs, which overestimates: it errs on the side of not starting);
- the 90th percentile of those, plus a margin of 10 % (at least 5 s) for telling the study and writing the
  record.
A trial estimated to need more than the task's whole time limit is admitted anyway: no task could run it,
and refusing would only requeue tasks that refuse again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs
from hpc_tune.policy.ranking import is_promoted

QUANTILE = 0.9
MARGIN_SHARE = 0.1
MARGIN_MIN_S = 5.0


@dataclass(frozen=True)
class TrialEstimate:
    """How long the next trial is expected to take, and from how many finished trials."""

    seconds: float
    from_trials: int
    basis: str  # "complete" (whole durations) or "pruned" (seconds per epoch)

    @property
    def needed_s(self) -> float:
        """The estimate with the margin for telling the study and writing the record."""
        return self.seconds + max(MARGIN_MIN_S, MARGIN_SHARE * self.seconds)


@dataclass(frozen=True)
class Admission:
    """Whether a worker takes the next trial, and the figures it decided on (for its log and the study)."""

    admit: bool
    why: str
    estimate: TrialEstimate | None = None
    left_s: float | None = None


def _duration_s(trial: FrozenTrial) -> float | None:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return None
    return max(0.0, (trial.datetime_complete - trial.datetime_start).total_seconds())


def _quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile: a value some trial really took, never an interpolation below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def estimate_trial(trials: Sequence[FrozenTrial], *, promoted: bool, epochs: int) -> TrialEstimate | None:
    """The next trial's expected seconds, for a trial of ``epochs`` epochs promoted from screening
    (``promoted``) or not; None without a finished trial of the same kind to estimate from."""
    complete: list[float] = []
    pruned: list[float] = []
    for trial in trials:
        if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) or is_promoted(trial) != promoted:
            continue
        if attrs.RESUMED_FROM in trial.system_attrs or trial.system_attrs.get(attrs.VOID):
            continue
        seconds = _duration_s(trial)
        if seconds is None:
            continue
        steps = len(trial.intermediate_values)
        if trial.state == TrialState.COMPLETE:
            # An objective that reports no epochs: its whole duration is the estimate.
            complete.append(seconds * epochs / steps if steps else seconds)
        elif steps:
            pruned.append(seconds / steps * epochs)
    if complete:
        return TrialEstimate(_quantile(complete, QUANTILE), len(complete), "complete")
    if pruned:
        return TrialEstimate(_quantile(pruned, QUANTILE), len(pruned), "pruned")
    return None


def decide_admission(estimate: TrialEstimate | None, left_s: float, limit_s: float) -> Admission:
    """Take the trial, or leave the task's remaining time unused because the trial could not finish in it."""
    if estimate is None:
        return Admission(True, "no finished trial to estimate from yet", None, left_s)
    needed = estimate.needed_s
    if needed > limit_s:
        return Admission(
            True,
            f"a trial needs ~{needed:.0f} s, more than the task's whole time limit ({limit_s:.0f} s): "
            "no task could finish it, so it is started anyway (raise slurm.time)",
            estimate,
            left_s,
        )
    if needed <= left_s:
        return Admission(True, f"~{needed:.0f} s needed, {left_s:.0f} s left", estimate, left_s)
    return Admission(
        False,
        f"the next trial needs ~{needed:.0f} s (90th percentile of {estimate.from_trials} finished "
        f"trial(s), plus a margin) and the task has {max(0.0, left_s):.0f} s left before its time limit",
        estimate,
        left_s,
    )
