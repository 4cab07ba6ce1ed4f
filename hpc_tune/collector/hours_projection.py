"""GPU-hours (CPU core-hours) so far and at the budget, for ``hpctune status``: what the study has cost while
it runs, and what it will have cost when its budget is used, in time to stop or to shrink it.

The hours are ``collect``'s own (device_hours.py over the same rows and records), so the two commands never
disagree about what was spent. The projection is deliberately simple, and said in the status line as "about":

    per finished trial = hours of the trials that ended (COMPLETE, PRUNED, FAIL: a retried failure's and a
                         hand-on's too, which is what it cost to get those trials finished) / finished trials
                         that use budget
    at the budget      = so far
                         + per finished trial x the trials still to start (budget - finished - running)
                         + for each running trial, max(per finished trial - its hours so far, 0)

A running trial is taken to cost what an average finished one did (its remaining share), never less than it
has already cost. Pruning and failures are priced in at the rate they happened so far. Idle hours (from the
workers' timelines) are shown beside it, not projected: the study's tail depends on how its last trials
line up. Before the first finished trial there is no rate, and so no projection.

It costs one read of the study's folder per refresh (its trial records and worker timelines, the files
``collect`` reads) and none of the storage: the trials are the ones the refresh already fetched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from hpc_tune.collector.collect import trial_row  # collect's join of a trial and its record
from hpc_tune.collector.device_hours import device_hours
from hpc_tune.policy.reruns import retried_numbers
from hpc_tune.storage.records import read_trials
from hpc_tune.storage.timelines import read_timelines

__all__ = ["HoursProjection", "format_hours_projection", "project_hours"]

_ENDED = ("COMPLETE", "PRUNED", "FAIL")


@dataclass(frozen=True)
class HoursProjection:
    """Hours so far and, once a trial has finished, at the budget; ``why_not`` says why there is no
    projection (no finished trial yet, no budget)."""

    unit: str  # GPU-hours, CPU core-hours, or trial-hours for trials without recorded devices
    so_far: float  # every started trial's hours, a running one's until now (collect's total)
    idle: float | None  # hours the workers held while no trial ran; None without worker timelines
    per_finished: float | None
    budget: int | None
    projected: float | None
    why_not: str | None


def project_hours(
    trials: Sequence[FrozenTrial],
    study_dir: Path,
    direction: str,
    *,
    budget: int | None,
    finished: int,
) -> HoursProjection | None:
    """``finished``: the finished trials that use budget (``Progress.finished``). None before any trial
    started: there is nothing to count yet, not even a unit."""
    records = read_trials(study_dir).records
    retried = retried_numbers(trials)
    rows = [trial_row(t, records.get(t.number), retried) for t in trials]
    hours = device_hours(trials, rows, records, direction, read_timelines(study_dir))
    if hours is None:
        return None
    idle = round(sum(hours.idle.values()), 6) if hours.idle is not None else None
    base = HoursProjection(hours.unit, hours.total, idle, None, budget, None, None)
    if finished == 0:
        return _without(base, "projection after the first finished trial")
    ended = sum(v for state, v in hours.by_state.items() if state in _ENDED)
    rate = ended / finished
    if budget is None:
        return _without(base, "no projection without a budget", rate)
    row_of = {r.trial: r for r in rows}
    running = [t for t in trials if t.state == TrialState.RUNNING]
    remaining = 0.0
    for trial in running:
        spent = device_hours([trial], [row_of[trial.number]], records, direction)
        remaining += max(rate - (spent.total if spent is not None else 0.0), 0.0)
    to_start = max(budget - finished - len(running), 0)
    projected = hours.total + rate * to_start + remaining
    return HoursProjection(hours.unit, hours.total, idle, rate, budget, round(projected, 6), None)


def _without(base: HoursProjection, why: str, rate: float | None = None) -> HoursProjection:
    return HoursProjection(base.unit, base.so_far, base.idle, rate, base.budget, None, why)


def _h(value: float) -> str:
    """As collect's line: 3 significant digits, whole hours from 100 on."""
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def format_hours_projection(p: HoursProjection) -> str:
    """``GPU-hours: 3.2 so far (+1.1 idle); about 9.6 at the budget of 40 trials``: the idle hours are on
    top of the trials' (the workers held them too), and only the trials' hours are projected."""
    line = f"{p.unit}: {_h(p.so_far)} so far"
    if p.idle is not None:
        line += f" (+{_h(p.idle)} idle)"
    if p.projected is not None:
        return f"{line}; about {_h(p.projected)} at the budget of {p.budget} trials"
    return f"{line}; {p.why_not}"
