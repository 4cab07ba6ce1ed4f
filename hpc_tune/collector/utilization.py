"""The report's utilization figure: what each array task's devices did over the study's wall clock.

The device-hours line says how much of the allocation sat idle; only a picture over time says when and where:
a slow start on one node, a tail of workers waiting for the last trials, a task requeued at its walltime, the
processes of one GPU (``slurm.trials_per_gpu``) taking turns. It is drawn from the workers' own timelines
(hpc_tune.storage.timelines), so a study hpctune did not run has none and the report simply has no such
figure. A row is an array task (its ``global_task_id``: a split array's tasks stay apart, and a requeued run
comes back to the row of its task), a worker process for local runs; the processes of one task that overlap
in time get a sub-row each, while runs that follow one another (requeues) share one, so the rows show
concurrency, not pids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")  # as plots.py: headless, and the report embeds PNG bytes anyway

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from hpc_tune.collector.figures import OPTIONAL_TITLES, Plot  # noqa: E402
from hpc_tune.collector.plots import Unavailable, draw_plot  # noqa: E402
from hpc_tune.collector.summary import Summary  # noqa: E402
from hpc_tune.storage.timelines import WorkerTimeline  # noqa: E402

__all__ = ["COLOURS", "MAX_ROWS", "UTILIZATION", "Bar", "Row", "bars_of", "draw_utilization", "rows_of"]

UTILIZATION = "utilization"
MAX_ROWS = 64  # beyond this a row is a few pixels high: an even sample of the tasks is shown
_TOLERANCE_S = 1.0  # a requeued run starting within a second of the last one's end is still a later run

# Trials by their final state (plots.py's palette), idle time in muted tones that recede behind them.
COLOURS = {
    "COMPLETE": "#55a868",
    "PRUNED": "#dd8452",
    "FAIL": "#c44e52",
    "RUNNING": "#4c72b0",
    "trial": "#8da0cb",  # a trial whose state neither the study nor its record says
    "starting": "#c8c8c8",
    "waiting": "#e6dfc8",
    "handing_on": "#d9c7e3",
    "exiting": "#c3cfdb",
}
_IDLE = ("starting", "waiting", "handing_on", "exiting")
_FINAL = ("COMPLETE", "PRUNED", "FAIL", "RUNNING")


@dataclass
class Row:
    """One row of the figure: the runs of one process slot of one task, in time order."""

    label: str
    group: tuple[int, str]  # rows of one task share it: a line separates tasks, not sub-rows
    timelines: list[WorkerTimeline] = field(default_factory=list)


@dataclass(frozen=True)
class Bar:
    row: int
    start: float  # epoch seconds
    end: float
    colour: str  # a key of COLOURS


def _task_key(timeline: WorkerTimeline) -> tuple[int, str]:
    """Array tasks by their index in the whole request, then plain SLURM jobs, then local processes."""
    slurm = timeline.slurm
    for key in ("global_task_id", "array_task_id"):
        value = slurm.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return (0, f"{value:012d}")
    if slurm.get("job_id") is not None:
        return (1, str(slurm["job_id"]))
    return (2, f"{timeline.segments[0].start:020.6f} {timeline.host}-{timeline.pid}")


def _plural(n: int, what: str, suffix: str = "s") -> str:
    return f"{n} {what}{suffix if n != 1 else ''}"


def _devices_text(devices: Mapping[str, Any]) -> str | None:
    kind, count = devices.get("kind"), devices.get("count")
    if kind not in ("gpu", "cpu") or not isinstance(count, int) or count <= 0:
        return None
    return _plural(count, "GPU" if kind == "gpu" else "CPU core")


def _name(timeline: WorkerTimeline) -> str:
    slurm = timeline.slurm
    task = slurm.get("global_task_id", slurm.get("array_task_id"))
    if isinstance(task, int) and not isinstance(task, bool):
        return f"task {task}"
    if slurm.get("job_id") is not None:
        return f"job {slurm['job_id']}"
    return f"{timeline.host} pid {timeline.pid}"


def rows_of(timelines: Sequence[WorkerTimeline]) -> list[Row]:
    """The figure's rows, top to bottom. A task's processes go to the first of its sub-rows whose last run
    ended before they started (interval packing), so requeued runs share a row and concurrent ones do not."""
    by_task: dict[tuple[int, str], list[WorkerTimeline]] = {}
    for timeline in timelines:
        if timeline.segments:
            by_task.setdefault(_task_key(timeline), []).append(timeline)
    rows: list[Row] = []
    for key in sorted(by_task):
        lanes: list[list[WorkerTimeline]] = []
        for timeline in sorted(by_task[key], key=lambda t: (t.segments[0].start, t.pid)):
            begins = timeline.segments[0].start + _TOLERANCE_S
            free = next((lane for lane in lanes if lane[-1].segments[-1].end <= begins), None)
            if free is None:
                lanes.append([timeline])
            else:
                free.append(timeline)
        first = lanes[0][0]
        label = " · ".join(p for p in (_name(first), _devices_text(first.devices)) if p)
        for index, lane in enumerate(lanes, start=1):
            rows.append(Row(label if len(lanes) == 1 else f"{label} · process {index}", key, lane))
    return rows


def bars_of(rows: Sequence[Row], states: Mapping[int, str]) -> list[Bar]:
    """Every segment of every row as a bar: a trial in its final state's colour, idle time in its activity's;
    zero-length segments (an activity begun and ended in the same instant) are left out."""
    bars = []
    for index, row in enumerate(rows):
        for timeline in row.timelines:
            for segment in timeline.segments:
                if segment.end <= segment.start:
                    continue
                if segment.activity == "trial":
                    state = states.get(segment.trial) if segment.trial is not None else None
                    colour = state if state in _FINAL else "trial"
                else:
                    colour = segment.activity if segment.activity in _IDLE else "waiting"
                bars.append(Bar(index, segment.start, segment.end, colour))
    return bars


def _states(summary: Summary, records: Mapping[int, Mapping[str, Any]]) -> dict[int, str]:
    """The study's state of each trial (the truth: a killed worker's record still says RUNNING), else its
    record's."""
    states = {n: str(r.get("state")) for n, r in records.items() if r.get("state") in _FINAL}
    states.update({row.trial: row.state for row in summary.trials if row.state in _FINAL})
    return states


def _sample(rows: list[Row]) -> list[Row]:
    if len(rows) <= MAX_ROWS:
        return rows
    picked = np.unique(np.linspace(0, len(rows) - 1, MAX_ROWS).round().astype(int))
    return [rows[i] for i in picked]


def _figure(
    summary: Summary, records: Mapping[int, Mapping[str, Any]], timelines: Sequence[WorkerTimeline]
) -> tuple[Figure, str]:
    every = rows_of(timelines)
    if not every:
        raise Unavailable("no worker timeline has a segment yet")
    rows = _sample(every)
    bars = bars_of(rows, _states(summary, records))
    fig, ax = plt.subplots(figsize=(10, min(2.0 + 0.32 * len(rows), 24)))
    for colour in COLOURS:
        mine = [b for b in bars if b.colour == colour]
        idle = colour in _IDLE
        for row in sorted({b.row for b in mine}):
            spans = [
                (mdates.date2num(datetime.fromtimestamp(b.start)), (b.end - b.start) / 86400)
                for b in mine
                if b.row == row
            ]
            # Idle bars are thinner: the eye reads the trials first, then the gaps between them.
            height = 0.5 if idle else 0.8
            ax.broken_barh(spans, (row - height / 2, height), facecolors=COLOURS[colour], linewidth=0)
    for i in range(1, len(rows)):
        if rows[i].group != rows[i - 1].group:
            ax.axhline(i - 0.5, color="#dddddd", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [r.label for r in rows], fontsize="small")
    ax.set_ylim(len(rows) - 0.5, -0.5)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("wall clock")
    ax.grid(axis="x", alpha=0.3)
    shown = [c for c in COLOURS if any(b.colour == c for b in bars)]
    names = {"trial": "trial (state unknown)", "handing_on": "handing on"}
    ax.legend(
        handles=[Patch(color=COLOURS[c], label=names.get(c, c)) for c in shown],
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=min(len(shown), 9),
        fontsize="small",
        frameon=False,
    )
    processes = sum(len(r.timelines) for r in every)
    count = f"{len(rows)} of {len(every)} rows shown (downsampled)" if len(rows) < len(every) else None
    caption = f"{count or _plural(len(every), 'row')}, {_plural(processes, 'worker process', 'es')}"
    hours = summary.device_hours
    if hours is not None and hours.allocated and hours.idle_share is not None:
        caption += f"; idle {hours.idle_share:.0%} of the {hours.allocated:.3g} {hours.unit} the workers held"
    return fig, caption


def draw_utilization(
    summary: Summary, records: Mapping[int, Mapping[str, Any]], timelines: Sequence[WorkerTimeline]
) -> Plot:
    """The figure, or a note in its place (as every figure of the report: one that fails costs nothing)."""
    return draw_plot(UTILIZATION, OPTIONAL_TITLES[UTILIZATION], lambda: _figure(summary, records, timelines))
