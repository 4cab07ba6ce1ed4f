"""GPU-hours (CPU core-hours) of a study: what users came to save, counted from what the trials held.

Each hpctune trial records the devices of its task and ``device_seconds`` (its duration times their count:
hpc_tune.slurm.allocation). The collector adds them up by state and says where they went: lost to failures,
handed on at the walltime, saved by pruning (the epochs a pruned trial did not run, at its own seconds per
epoch), and how many were spent before the search was first within 1 % of its final best, which is what a
user would have paid had they known when to stop. A study whose trials recorded no devices (a foreign one,
or an older hpctune's) is counted in trial-hours from Optuna's own start and end times.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs
from hpc_tune.collector.summary import DeviceHours, TrialRow
from hpc_tune.policy.ranking import ranked_trials
from hpc_tune.slurm.allocation import device_share
from hpc_tune.storage.timelines import WorkerTimeline

NEAR_BEST = 0.01  # "within 1 % of the final best"


def _devices(record: Mapping[str, Any] | None) -> tuple[str | None, int | None]:
    devices = (record or {}).get("devices")
    if not isinstance(devices, dict):
        return None, None
    kind, count = devices.get("kind"), devices.get("count")
    if kind in ("gpu", "cpu") and isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return kind, count
    return None, None


def _seconds(trial: FrozenTrial, row: TrialRow) -> float:
    """The record's duration, else Optuna's (until now for a running trial; Optuna's times are naive)."""
    if row.duration_s is not None:
        return float(row.duration_s)
    if trial.datetime_start is None:
        return 0.0
    return max(0.0, ((trial.datetime_complete or datetime.now()) - trial.datetime_start).total_seconds())


def device_hours(
    trials: Sequence[FrozenTrial],
    rows: Sequence[TrialRow],
    records: Mapping[int, Mapping[str, Any]],
    direction: str,
    timelines: Sequence[WorkerTimeline] = (),
    study_attrs: Mapping[str, Any] | None = None,
) -> DeviceHours | None:
    """The study's device-hours; None when no trial has started yet. ``study_attrs``: the study's user
    attributes, where workers record the trials walltime admission did not start."""
    row_of = {r.trial: r for r in rows}
    started = [t for t in trials if t.datetime_start is not None or row_of[t.number].duration_s]
    if not started:
        return None
    kinds = [_devices(records.get(t.number))[0] for t in started]
    kind = "gpu" if "gpu" in kinds else "cpu" if "cpu" in kinds else None
    unit = {"gpu": "GPU-hours", "cpu": "CPU core-hours", None: "trial-hours"}[kind]
    hours: dict[int, float] = {}
    estimated = 0
    for trial in started:
        record = records.get(trial.number)
        row = row_of[trial.number]
        recorded = (record or {}).get("device_seconds")
        _, count = _devices(record)
        if isinstance(recorded, int | float) and not isinstance(recorded, bool) and count is not None:
            hours[trial.number] = float(recorded) / 3600
            continue
        if count is None:
            estimated += kind is not None
            count = 1
        hours[trial.number] = _seconds(trial, row) * count / 3600
    by_state: dict[str, float] = {}
    for trial in started:
        by_state[trial.state.name] = by_state.get(trial.state.name, 0.0) + hours[trial.number]
    failed = [t for t in started if t.state == TrialState.FAIL]
    handed = sum(hours[t.number] for t in failed if row_of[t.number].reason == "walltime")
    lost = sum(hours[t.number] for t in failed) - handed
    killed = [t for t in failed if row_of[t.number].reason == attrs.WALLTIME_KILLED]
    return DeviceHours(
        unit=unit,  # type: ignore[arg-type]
        total=round(sum(hours.values()), 6),
        by_state={k: round(v, 6) for k, v in sorted(by_state.items())},
        lost_to_failures=round(lost, 6),
        handed_on=round(handed, 6),
        saved_by_pruning=round(_saved_by_pruning(started, row_of, records, hours), 6),
        until_near_best=_until_near_best(trials, hours, direction),
        estimated_trials=estimated,
        walltime_kills=len(killed),
        killed_by_walltime=round(sum(hours[t.number] for t in killed), 6),
        **_refusals(study_attrs or {}),
        **_allocation(timelines),
    )


def _refusals(study_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The refusals workers recorded (worker/admission.py), and the device-hours each left unburnt."""
    found = [
        v for k, v in study_attrs.items() if k.startswith(attrs.ADMISSION_REFUSAL) and isinstance(v, dict)
    ]
    saved = sum(float(v.get("saved_device_s") or 0.0) for v in found) / 3600
    return {"admission_refusals": len(found), "saved_by_admission": round(saved, 6)}


def _allocation(timelines: Sequence[WorkerTimeline]) -> dict[str, Any]:
    """Allocated and idle hours from the workers' own timelines (none: nothing is said)."""
    allocated, idle = 0.0, {}
    for timeline in timelines:
        # A worker of a task that runs several (slurm.trials_per_gpu) holds its share: the task's GPUs are
        # billed once, not once per worker.
        count = device_share(timeline.devices)
        if not timeline.segments or count is None:
            continue
        allocated += (timeline.segments[-1].end - timeline.segments[0].start) * count / 3600
        for segment in timeline.segments:
            if segment.activity != "trial":
                spent = max(0.0, segment.end - segment.start) * count / 3600
                idle[segment.activity] = idle.get(segment.activity, 0.0) + spent
    if allocated <= 0:
        return {}
    return {
        "allocated": round(allocated, 6),
        "idle": {k: round(v, 6) for k, v in sorted(idle.items())},
        "idle_share": round(sum(idle.values()) / allocated, 6),
    }


def _saved_by_pruning(
    trials: Sequence[FrozenTrial],
    row_of: Mapping[int, TrialRow],
    records: Mapping[int, Mapping[str, Any]],
    hours: Mapping[int, float],
) -> float:
    longest = max((row_of[t.number].epochs for t in trials if t.state == TrialState.COMPLETE), default=0)
    saved = 0.0
    for trial in trials:
        row = row_of[trial.number]
        if trial.state != TrialState.PRUNED or row.epochs <= 0:
            continue
        scheduled = ((records.get(trial.number) or {}).get("fidelity") or {}).get("epochs") or longest
        if isinstance(scheduled, int) and scheduled > row.epochs:
            saved += hours[trial.number] / row.epochs * (scheduled - row.epochs)
    return saved


def _until_near_best(
    trials: Sequence[FrozenTrial], hours: Mapping[int, float], direction: str
) -> float | None:
    """Hours of every trial up to the moment the incumbent first came within NEAR_BEST of the final best: a
    trial that was running then counts for the share of its hours before that moment."""
    ranked = [t for t in ranked_trials(list(trials), direction) if t.datetime_complete is not None]
    if not ranked:
        return None
    best = float(ranked[0].value)  # type: ignore[arg-type]
    near = [t for t in ranked if abs(float(t.value) - best) <= NEAR_BEST * abs(best)]  # type: ignore[arg-type]
    moment = min(t.datetime_complete for t in near)  # type: ignore[type-var]
    now = datetime.now()
    spent = 0.0
    for trial in trials:
        start, end = trial.datetime_start, trial.datetime_complete
        if start is None or trial.number not in hours:
            continue
        if end is not None and end <= moment:  # the trial that got there included
            spent += hours[trial.number]
            continue
        if start >= moment:
            continue
        wall = ((end or now) - start).total_seconds()
        spent += hours[trial.number] * ((moment - start).total_seconds() / wall if wall > 0 else 1.0)
    return round(spent, 6)


def _h(value: float) -> str:
    """Hours with 3 significant digits: a study of minutes and one of a thousand GPU-hours both read."""
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def format_hours(hours: DeviceHours) -> str:
    """One line of ``collect``'s terminal view."""
    states = ", ".join(f"{state} {_h(value)}" for state, value in hours.by_state.items())
    line = f"{hours.unit}: {_h(hours.total)} ({states})"
    if hours.lost_to_failures:
        line += f"; {_h(hours.lost_to_failures)} lost to failures"
    if hours.handed_on:
        line += f"; {_h(hours.handed_on)} in trials handed on at the walltime"
    if hours.walltime_kills:
        line += f"; {hours.walltime_kills} trial(s) killed by walltime ({_h(hours.killed_by_walltime)})"
    if hours.saved_by_pruning:
        line += f"; pruning saved {_h(hours.saved_by_pruning)}"
    if hours.admission_refusals:
        line += (
            f"; walltime admission saved {_h(hours.saved_by_admission)} "
            f"({hours.admission_refusals} trial(s) not started)"
        )
    if hours.until_near_best is not None:
        line += f"; {_h(hours.until_near_best)} until within 1 % of the best"
    if hours.allocated and hours.idle is not None and hours.idle_share is not None:
        shown = {k: v for k, v in hours.idle.items() if v >= 0.01 * hours.allocated}
        parts = ", ".join(f"{k} {_h(v)}" for k, v in shown.items())
        line += f"; workers held {_h(hours.allocated)}, idle {hours.idle_share:.0%}"
        line += f" ({parts})" if parts else ""
    if hours.estimated_trials:
        line += f" ({hours.estimated_trials} trial(s) without recorded devices counted as one)"
    return line
