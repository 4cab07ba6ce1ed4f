"""The report's utilization figure from workers' timelines written as real workers write them: a row per
array task (a requeued run on its task's row, the concurrent processes of one task on sub-rows), a row per
local worker process, trials in their final state's colour, idle time in its activity's; none for a study
without timelines."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import matplotlib.image

from hpc_tune.collector.collect import summarize
from hpc_tune.collector.html import write_report
from hpc_tune.collector.utilization import COLOURS, MAX_ROWS, bars_of, draw_utilization, rows_of
from hpc_tune.storage.timelines import Segment, WorkerTimeline, read_timelines, timeline_path
from tests.collector.test_html import build_study, figures_of, full_summary

T0 = 1_767_000_000.0  # epoch seconds: a fixed wall clock, so the figure is the same on every run
ONE_GPU = {"kind": "gpu", "count": 1, "ids": ["0"]}
TRIAL_S, WAIT_S, START_S = 120.0, 5.0, 40.0


def _slurm(task: int, restart: int = 0) -> dict[str, Any]:
    return {
        "job_id": str(5000 + 10 * task + restart),
        "array_job_id": "4999",
        "array_task_id": task,
        "global_task_id": task,
        "restart_count": restart,
    }


def _timeline(
    study_dir: Path,
    host: str,
    pid: int,
    slurm: dict[str, Any],
    devices: dict[str, Any],
    start: float,
    trials: list[int],
    last: str = "exiting",
) -> WorkerTimeline:
    """starting, then waiting and one trial per number, then ``last`` (exiting, or handing_on and exiting)."""
    segments = [Segment("starting", start, start + START_S)]
    at = start + START_S
    for number in trials:
        segments.append(Segment("waiting", at, at + WAIT_S))
        segments.append(Segment("trial", at + WAIT_S, at + WAIT_S + TRIAL_S, number))
        at += WAIT_S + TRIAL_S
    if last == "handing_on":
        segments.append(Segment("handing_on", at, at + 8.0))
        at += 8.0
    segments.append(Segment("exiting", at, at + 3.0))
    timeline = WorkerTimeline(host, pid, slurm, devices, segments, path=timeline_path(study_dir, host, pid))
    timeline.save()
    return timeline


def write_timelines(study_dir: Path, trials: int) -> list[WorkerTimeline]:
    """Three array tasks of 1 GPU over ``trials`` trials: task 0 alone; task 1 handed on at its walltime and
    requeued on another node (restart 1); task 2 with two worker processes at once (trials_per_gpu: 2)."""
    slots = [[n for n in range(trials) if n % 4 == k] for k in range(4)]
    half = len(slots[1]) // 2
    return [
        _timeline(study_dir, "node-a", 101, _slurm(0), ONE_GPU, T0, slots[0]),
        _timeline(study_dir, "node-b", 201, _slurm(1), ONE_GPU, T0 + 2, slots[1][:half], "handing_on"),
        _timeline(study_dir, "node-c", 301, _slurm(1, 1), ONE_GPU, T0 + 600 + half * 125, slots[1][half:]),
        _timeline(study_dir, "node-d", 401, _slurm(2), ONE_GPU, T0 + 5, slots[2]),
        _timeline(study_dir, "node-d", 402, _slurm(2), ONE_GPU, T0 + 6, slots[3]),
    ]


def test_rows_are_array_tasks_requeued_runs_share_theirs_and_concurrent_processes_get_sub_rows(
    tmp_path: Path,
) -> None:
    written = write_timelines(tmp_path, 16)
    rows = rows_of(read_timelines(tmp_path))
    assert [r.label for r in rows] == [
        "task 0 · 1 GPU",
        "task 1 · 1 GPU",
        "task 2 · 1 GPU · process 1",
        "task 2 · 1 GPU · process 2",
    ]
    assert [[t.pid for t in r.timelines] for r in rows] == [[101], [201, 301], [401], [402]]
    assert rows[2].group == rows[3].group != rows[1].group
    # Every segment but the zero-length ones is a bar on its process's row, in time order per row.
    bars = bars_of(rows, {})
    by_row = {i: [b for b in bars if b.row == i] for i in range(len(rows))}
    for i, row in enumerate(rows):
        segments = [s for t in row.timelines for s in t.segments if s.end > s.start]
        assert [(b.start, b.end) for b in by_row[i]] == [(s.start, s.end) for s in segments]
    assert {b.colour for b in by_row[1]} == {"starting", "waiting", "trial", "handing_on", "exiting"}
    assert sum(len(t.segments) for t in written) == len(bars)


def test_local_workers_get_a_row_each_and_trials_take_their_final_states_colour(tmp_path: Path) -> None:
    cores = {"kind": "cpu", "count": 2, "ids": []}
    _timeline(tmp_path, "vm", 7, {}, cores, T0, [0, 2, 4])
    _timeline(tmp_path, "vm", 8, {}, cores, T0 + 1, [1, 3, 5])
    rows = rows_of(read_timelines(tmp_path))
    assert [r.label for r in rows] == ["vm pid 7 · 2 CPU cores", "vm pid 8 · 2 CPU cores"]
    states = {0: "COMPLETE", 1: "PRUNED", 2: "FAIL", 3: "COMPLETE", 4: "RUNNING"}  # trial 5: not known
    trial_bars = [b for b in bars_of(rows, states) if b.colour not in ("starting", "waiting", "exiting")]
    assert [(b.row, b.colour) for b in trial_bars] == [
        (0, "COMPLETE"),
        (0, "FAIL"),
        (0, "RUNNING"),
        (1, "PRUNED"),
        (1, "COMPLETE"),
        (1, "trial"),
    ]
    assert len({COLOURS[c] for c in ("COMPLETE", "PRUNED", "FAIL", "starting", "waiting", "exiting")}) == 6


def test_the_report_embeds_the_figure_with_the_studys_own_states(tmp_path: Path) -> None:
    study_dir = tmp_path / "demo"
    study, loaded = build_study(study_dir, 24)
    write_timelines(study_dir, 24)
    summary = full_summary(study, loaded, confirmed=False)
    files = write_report(summary, study.get_trials(deepcopy=False), loaded.records, study_dir)

    figures = figures_of(files.html.read_text(encoding="utf-8"))
    assert "utilization" in figures and figures["utilization"] is not None
    png = (study_dir / "plots" / "utilization.png").read_bytes()
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert pixels.shape[0] > 150 and pixels.shape[1] > 400
    colours = {tuple(int(c * 255) for c in px[:3]) for px in pixels.reshape(-1, pixels.shape[-1])[::7]}
    # build_study prunes every 4th trial: both states show (the study's truth, not a record's guess).
    for state in ("COMPLETE", "PRUNED", "starting", "waiting"):
        rgb = tuple(int(COLOURS[state][i : i + 2], 16) for i in (1, 3, 5))
        assert any(max(abs(a - b) for a, b in zip(rgb, c, strict=True)) <= 2 for c in colours), state
    assert "4 rows, 5 worker processes" in files.html.read_text(encoding="utf-8")


def test_a_study_without_timelines_has_no_such_figure_and_no_note(tmp_path: Path) -> None:
    study_dir = tmp_path / "demo"
    study, loaded = build_study(study_dir, 12, records=False)
    (study_dir / "plots").mkdir(parents=True)
    (study_dir / "plots" / "utilization.png").write_bytes(b"stale")
    files = write_report(
        summarize(study, loaded), study.get_trials(deepcopy=False), loaded.records, study_dir
    )
    text = files.html.read_text(encoding="utf-8")
    assert "utilization" not in figures_of(text) and "Utilization" not in text
    assert not (study_dir / "plots" / "utilization.png").exists()


def test_many_tasks_are_sampled_evenly_and_the_caption_says_so(tmp_path: Path) -> None:
    tasks = MAX_ROWS + 36
    for task in range(tasks):
        _timeline(tmp_path, f"n{task}", 1000 + task, _slurm(task), ONE_GPU, T0 + task, [task])
    study, loaded = build_study(tmp_path / "big", tasks, records=False)
    plot = draw_utilization(summarize(study, loaded), {}, read_timelines(tmp_path))
    assert plot.png is not None, plot.note
    assert plot.caption.startswith(
        f"{MAX_ROWS} of {tasks} rows shown (downsampled), {tasks} worker processes"
    )


def test_a_timeline_that_cannot_be_drawn_is_a_note(tmp_path: Path) -> None:
    timeline = _timeline(tmp_path, "vm", 9, {}, ONE_GPU, T0, [0])
    timeline.segments[1].end = "later"  # type: ignore[assignment]
    study, loaded = build_study(tmp_path / "s", 2, records=False)
    plot = draw_utilization(summarize(study, loaded), {}, [timeline])
    assert plot.png is None and plot.note is not None and "could not be drawn" in plot.note
