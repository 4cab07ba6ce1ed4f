"""Where a running study stands: counts, the trials at work, how fast trials finish, and when it will be done.

``hpctune status`` is looked at while an array runs, often by someone who only has the storage URL, so
the counts, rates and ETA come from the study itself (``study.get_trials``, once per look), nothing from
config files or JSON records; those are pure over the trials and an explicit ``now``, unit-tested with
trials whose start and completion times are set by hand. Only the GPU-hours line reads the study's folder
(hours_projection.py: its records and timelines, where they are), from the same trials.

Throughput is measured over a recent window, not the study's whole life: a study that was resumed, or
whose array was resized, would otherwise be judged by an old pace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs
from hpc_tune.attrs import worker_of
from hpc_tune.policy.budget import FINISHED, counted_trials, counts_by_state
from hpc_tune.policy.reruns import retried_numbers

if TYPE_CHECKING:
    from hpc_tune.collector.hours_projection import HoursProjection
    from hpc_tune.slurm import StudyStatus

__all__ = ["DEFAULT_WINDOW", "MIN_SPAN", "Progress", "RunningTrial", "format_progress", "progress_of"]

DEFAULT_WINDOW = timedelta(hours=1)
# Below this, a rate is noise: one epoch in the first seconds of a study reads as thousands a minute.
MIN_SPAN = timedelta(minutes=1)


@dataclass(frozen=True)
class RunningTrial:
    """A RUNNING trial as the person watching needs it: how far it got and where to find its log."""

    number: int
    epoch: int | None  # the last step reported (the engine's epochs count from 1); None before the first
    epochs_reported: int
    host: str | None
    array_job_id: str | None
    array_task_id: int | None
    started: datetime | None

    @property
    def task(self) -> str | None:
        """``<array job>_<task>``: as squeue, scancel and the log file ``array-<job>_<task>.out`` name it."""
        if self.array_job_id is not None and self.array_task_id is not None:
            return f"{self.array_job_id}_{self.array_task_id}"
        return None if self.array_task_id is None else str(self.array_task_id)


@dataclass(frozen=True)
class Progress:
    """One look at a study. The rates are None until the window holds ``MIN_SPAN`` of the study's life; the
    ETA is None with ``eta_unknown`` saying why, so the view never shows a guess as a number."""

    study: str
    now: datetime
    counts: dict[str, int]  # every TrialState name
    budget: int | None  # trials to finish; None when neither the caller nor the study knows
    finished: int  # finished trials that use budget (a retried FAIL does not: its re-run stands in)
    retried: int
    running: list[RunningTrial]
    window: timedelta  # the recent window asked for
    span: timedelta | None  # the part of it the study existed in: what the rates divide by
    finished_in_window: int
    trials_per_hour: float | None
    epochs_per_min: float | None
    eta: timedelta | None
    eta_unknown: str | None  # why there is no ETA, in words; None when there is one (or the study is done)
    hours: HoursProjection | None = None  # with a study folder, once a trial has started

    @property
    def left(self) -> int | None:
        return None if self.budget is None else max(self.budget - self.finished, 0)

    @property
    def done(self) -> bool:
        """The budget is used and no trial is running or waiting: nothing will change any more."""
        return (
            self.budget is not None
            and self.finished >= self.budget
            and self.counts.get("RUNNING", 0) == 0
            and self.counts.get("WAITING", 0) == 0
        )

    @property
    def array_job_ids(self) -> list[str]:
        """The SLURM arrays the running trials came from: the arrays at work now."""
        return sorted({t.array_job_id for t in self.running if t.array_job_id is not None}, key=_job_key)


def _job_key(job_id: str) -> tuple[int, str]:
    return (int(job_id), "") if job_id.isdigit() else (0, job_id)


def progress_of(
    study: optuna.Study,
    *,
    budget: int | None,
    now: datetime | None = None,
    window: timedelta = DEFAULT_WINDOW,
    study_dir: Path | None = None,
) -> Progress:
    """``budget``: the config's ``trials`` when there is one, else the study's ``trials`` attribute (as
    ``collect`` does). ``now`` is naive local time, as Optuna stamps trials. ``study_dir``: where the trials'
    records and the workers' timelines are (runs/<study>), for the GPU-hours so far and at the budget."""
    trials = study.get_trials(deepcopy=False)
    now = now if now is not None else datetime.now()
    if budget is None:
        recorded = study.user_attrs.get(attrs.TRIALS)
        budget = int(recorded) if recorded else None
    counts = counts_by_state(trials)
    counted = counted_trials(trials)
    finished = [t for t in counted if t.state in FINISHED]
    span = _span(trials, now, window)
    in_window = [
        t for t in finished if t.datetime_complete is not None and t.datetime_complete > now - window
    ]
    measured_s = span.total_seconds() if span is not None and span >= MIN_SPAN else None
    trials_per_hour = len(in_window) / (measured_s / 3600) if measured_s else None
    epochs_per_min = _epochs_in(trials, now, window) / (measured_s / 60) if measured_s else None
    progress = Progress(
        study=study.study_name,
        now=now,
        counts=counts,
        budget=budget,
        finished=len(finished),
        retried=len(retried_numbers(trials)),
        running=[_running(t) for t in trials if t.state == TrialState.RUNNING],
        window=window,
        span=span,
        finished_in_window=len(in_window),
        trials_per_hour=trials_per_hour,
        epochs_per_min=epochs_per_min,
        eta=None,
        eta_unknown=None,
    )
    eta, why = _eta(progress)
    hours = None
    if study_dir is not None:
        from hpc_tune.collector.hours_projection import project_hours

        direction = "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
        hours = project_hours(trials, study_dir, direction, budget=budget, finished=len(finished))
    return replace(progress, eta=eta, eta_unknown=why, hours=hours)


def _span(trials: Sequence[FrozenTrial], now: datetime, window: timedelta) -> timedelta | None:
    """The window, cut to when the study's first trial started: a study 10 minutes old that finished 5
    trials runs at 30 an hour, not 5."""
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    if not starts:
        return None
    span = now - max(now - window, min(starts))
    return span if span > timedelta(0) else None


def _epochs_in(trials: Sequence[FrozenTrial], now: datetime, window: timedelta) -> float:
    """Epochs run within the window. Optuna keeps no time per epoch, so a trial's epochs are taken as spread
    evenly over its run (start to completion, or to now while it runs) and the window's share counted."""
    begin = now - window
    total = 0.0
    for t in trials:
        epochs = len(t.intermediate_values)
        if not epochs or t.datetime_start is None:
            continue
        end = t.datetime_complete or now
        if end <= begin:
            continue
        run = (end - t.datetime_start).total_seconds()
        if run <= 0:
            total += epochs
            continue
        inside = (min(end, now) - max(t.datetime_start, begin)).total_seconds()
        total += epochs * max(min(inside / run, 1.0), 0.0)
    return total


def _eta(p: Progress) -> tuple[timedelta | None, str | None]:
    if p.budget is None:
        return None, "no budget: the study has no 'trials' attribute and no config was given"
    if p.done or (p.left == 0):
        return None, None
    if p.finished == 0:
        return None, "no trial finished yet"
    if p.counts["RUNNING"] == 0:
        return None, "no trial is running"
    if p.trials_per_hour is None:
        return None, "too early to measure the throughput"
    if not p.trials_per_hour:
        return None, f"no trial finished in the last {_duration(p.window)}"
    assert p.left is not None
    return timedelta(hours=p.left / p.trials_per_hour), None


def _running(t: FrozenTrial) -> RunningTrial:
    worker = worker_of(t)
    # The task id SLURM knows (not global_task_id): squeue, scancel and the log file name use it.
    task = worker.get("array_task_id")
    array_job = worker.get("array_job_id")
    steps = t.intermediate_values
    return RunningTrial(
        number=t.number,
        epoch=max(steps) if steps else None,
        epochs_reported=len(steps),
        host=None if worker.get("host") is None else str(worker["host"]),
        array_job_id=None if array_job is None else str(array_job),
        array_task_id=None if task is None else int(task),
        started=t.datetime_start,
    )


# --- text ---------------------------------------------------------------------------------------------------


def format_progress(progress: Progress, slurm: StudyStatus | None) -> str:
    """The status view. ``slurm``: the study's jobs as squeue shows them, already cut to the current arrays
    (``StudyStatus.current``); None leaves the SLURM line out (no config, or no squeue here)."""
    p = progress
    c = p.counts
    of_budget = f"/{p.budget}" if p.budget is not None else ""
    lines = [
        f"study {p.study}: {p.finished}{of_budget} finished (COMPLETE {c['COMPLETE']}, PRUNED {c['PRUNED']}, "
        f"FAIL {c['FAIL']}, RUNNING {c['RUNNING']}, WAITING {c['WAITING']}; {p.retried} retried)",
        f"throughput: {_throughput(p)}; {_eta_text(p)}",
    ]
    if p.hours is not None:
        from hpc_tune.collector.hours_projection import format_hours_projection

        lines.append(format_hours_projection(p.hours))
    if slurm is not None:
        lines.append(_slurm_line(slurm))
    # Last: on a terminal too small for many running trials, only the end of this table is cut off.
    if p.running:
        lines.append(_running_table(p))
    return "\n".join(lines)


def _throughput(p: Progress) -> str:
    if p.span is None:
        return "no trial started yet"
    if p.trials_per_hour is None or p.epochs_per_min is None:
        return f"too early to measure (first trial started {_duration(p.span)} ago)"
    return (
        f"{p.trials_per_hour:.1f} trials/h, {p.epochs_per_min:.2f} epochs/min "
        f"over the last {_duration(p.span)}"
    )


def _eta_text(p: Progress) -> str:
    if p.done:
        return "done: budget used, nothing running"
    if p.eta is not None:
        return f"ETA {_duration(p.eta)} ({p.left} trial{'s' if p.left != 1 else ''} left)"
    if p.eta_unknown is None:  # budget used, the last trials still running (or retries waiting)
        return "budget used; the last trials are still to finish"
    return f"ETA unknown ({p.eta_unknown})"


def _running_table(p: Progress) -> str:
    rows = [("trial", "epoch", "host", "task", "running for")]
    for t in sorted(p.running, key=lambda r: r.number):
        rows.append(
            (
                str(t.number),
                str(t.epoch) if t.epoch is not None else "-",
                t.host or "-",
                t.task or "-",
                _duration(p.now - t.started) if t.started is not None else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"running ({len(p.running)}):"]
    for row in rows:
        cells = [
            row[0].rjust(widths[0]),
            row[1].rjust(widths[1]),
            *(v.ljust(w) for v, w in zip(row[2:], widths[2:], strict=True)),
        ]
        lines.append(("  " + "  ".join(cells)).rstrip())
    return "\n".join(lines)


def _slurm_line(s: StudyStatus) -> str:
    if not s.tasks:
        return f"slurm: no job named {s.job_name} in squeue"
    arrays = sorted({t.array_job_id for t in s.array_tasks}, key=_job_key)
    active = [t for t in s.array_tasks if t.active]
    parts = []
    for state in sorted({t.state for t in active}, key=lambda st: (st != "RUNNING", st)):
        tasks = [t for t in active if t.state == state]
        reasons = sorted({t.reason for t in tasks if t.reason and t.reason != "None"})
        parts.append(f"{state} {len(tasks)}" + (f" ({', '.join(reasons)})" if reasons else ""))
    tasks_text = ", ".join(parts) if parts else "no task pending or running"
    head = (
        f"array{'s' if len(arrays) > 1 else ''} {', '.join(arrays)}: {tasks_text}" if arrays else "no array"
    )
    collectors = [t for t in s.collectors if t.active]
    if collectors:
        states = ", ".join(
            f"{t.state}" + (f" ({t.reason})" if t.reason and t.reason != "None" else "") for t in collectors
        )
        tail = f"collector {states}"
    else:
        tail = "no collector queued"
    return f"slurm: {head}; {tail}"


def _duration(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
