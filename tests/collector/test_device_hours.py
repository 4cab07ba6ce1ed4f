"""GPU-hours (CPU core-hours) in ``collect``: counted from what real workers recorded, and where they went."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpc_tune.collector.collect import collect, format_table, summarize
from hpc_tune.config import load_config
from hpc_tune.storage.records import LoadedTrials, read_trials
from hpc_tune.storage.timelines import read_timelines
from hpc_tune.worker.loop import Worker
from tests.conftest import worker_env, write_config
from tests.worker.test_loop import load


def test_a_real_workers_trials_are_counted_in_the_core_hours_of_their_task(tmp_path: Path) -> None:
    """A worker in a task of 2 CPU cores (and hidden GPUs): every trial records its devices and twice its
    duration, and collect adds them up by state into summary.json, its terminal line and the report."""
    cfg = write_config(tmp_path, trials=4, epochs=2)
    env = worker_env(SLURM_CPUS_PER_TASK="2", CUDA_VISIBLE_DEVICES="")
    report = Worker(load_config(cfg), environ=env, worker_index=0).run()
    assert report.trials_run == 4
    study, study_dir = load(cfg)
    records = read_trials(study_dir).records
    assert len(records) == 4
    for record in records.values():
        assert record["devices"] == {"kind": "cpu", "count": 2, "ids": []}
        assert record["device_seconds"] == pytest.approx(2 * record["duration_s"], abs=0.002)
    collected = collect(study, study_dir)
    hours = collected.summary.device_hours
    assert hours is not None and hours.unit == "CPU core-hours" and hours.estimated_trials == 0
    expected = sum(r["device_seconds"] for r in records.values()) / 3600
    assert hours.total == pytest.approx(expected, abs=1e-4)
    assert sum(hours.by_state.values()) == pytest.approx(hours.total, abs=1e-3)
    assert hours.until_near_best is not None and 0 < hours.until_near_best <= hours.total + 1e-4
    written = json.loads(collected.summary_path.read_text())["device_hours"]
    assert written["unit"] == "CPU core-hours" and written["total"] == hours.total
    assert "CPU core-hours: " in format_table(collected.summary)
    # The worker's timeline: starting, then waiting and one trial segment per trial, then exiting; what no
    # trial used is the idle share.
    (timeline,) = read_timelines(study_dir)
    activities = [s.activity for s in timeline.segments]
    assert activities[0] == "starting" and activities[-1] == "exiting"
    assert [s.trial for s in timeline.segments if s.activity == "trial"] == [0, 1, 2, 3]
    pairs = zip(timeline.segments[:-1], timeline.segments[1:], strict=True)
    assert all(a.end <= b.start + 1e-6 for a, b in pairs)  # one after the other, no overlap
    assert hours.allocated is not None and hours.idle is not None and hours.idle_share is not None
    assert set(hours.idle) == {"starting", "waiting", "exiting"}
    held = (timeline.segments[-1].end - timeline.segments[0].start) * 2 / 3600
    assert hours.allocated == pytest.approx(held, abs=1e-4)
    assert hours.allocated >= hours.total - 1e-3  # the trials ran inside the worker's time
    # Each figure is rounded to 1e-6 hours: compared in hours, not as a share of a study of seconds.
    assert hours.idle_share * hours.allocated == pytest.approx(sum(hours.idle.values()), abs=1e-5)
    html = (study_dir / "report.html").read_text()
    assert '<p id="device-hours">CPU core-hours: ' in html


def _trial(
    number: int,
    state: TrialState,
    value: float | None,
    start: datetime,
    minutes: float,
    epochs: int,
    **attrs: str,
) -> optuna.trial.FrozenTrial:
    trial = create_trial(
        state=state,
        value=value,
        params={"lr": 0.01},
        distributions={"lr": FloatDistribution(1e-4, 1.0, log=True)},
        intermediate_values={e: 0.1 * e for e in range(1, epochs + 1)},
        user_attrs=dict(attrs),
    )
    trial.number = number
    trial.datetime_start = start
    trial.datetime_complete = start + timedelta(minutes=minutes)
    return trial


def test_hours_lost_handed_on_saved_and_spent_until_near_the_best() -> None:
    """Four trials of tasks with 2 GPUs each, an hour apart: the figures are the arithmetic of their records.
    Trial 1 is within 1 % of the best (trial 3), so the hours until near the best are trials 0 and 1 plus the
    share of the pruned trial 2 that had run when trial 1 ended."""
    t0 = datetime(2026, 12, 1, 8, 0)
    trials = [
        _trial(0, TrialState.COMPLETE, 0.80, t0, 60, 10),
        _trial(1, TrialState.COMPLETE, 0.895, t0 + timedelta(minutes=60), 60, 10),
        _trial(2, TrialState.PRUNED, None, t0 + timedelta(minutes=90), 30, 2),  # pruned after 2 of 10 epochs
        _trial(3, TrialState.COMPLETE, 0.90, t0 + timedelta(minutes=120), 60, 10),
        _trial(4, TrialState.FAIL, None, t0 + timedelta(minutes=180), 15, 1, reason="oom"),
        _trial(5, TrialState.FAIL, None, t0 + timedelta(minutes=195), 30, 3, reason="walltime"),
    ]
    gpus = {"kind": "gpu", "count": 2, "ids": ["0", "1"]}
    records = {
        t.number: {
            "devices": gpus,
            "duration_s": (t.datetime_complete - t.datetime_start).total_seconds(),  # type: ignore[operator]
            "device_seconds": 2 * (t.datetime_complete - t.datetime_start).total_seconds(),  # type: ignore[operator]
            "fidelity": {"data_fraction": 1.0, "epochs": 10},
            "epochs": [{"epoch": e} for e in range(1, len(t.intermediate_values) + 1)],
        }
        for t in trials
    }
    study = optuna.create_study(direction="maximize")
    for t in trials:
        study.add_trial(t)
    summary = summarize(study, LoadedTrials(records, []), trials=study.get_trials())
    hours = summary.device_hours
    assert hours is not None and hours.unit == "GPU-hours"
    assert hours.total == pytest.approx(2 * (60 + 60 + 30 + 60 + 15 + 30) / 60)
    assert hours.by_state == pytest.approx({"COMPLETE": 6.0, "PRUNED": 1.0, "FAIL": 1.5})
    assert hours.lost_to_failures == pytest.approx(0.5) and hours.handed_on == pytest.approx(1.0)
    assert hours.saved_by_pruning == pytest.approx(1.0 / 2 * 8)  # 0.5 GPU-hours an epoch, 8 epochs not run
    # Trial 1 ended at 10:00; trial 2 (09:30-10:00) had ended too: 2 + 2 + 1 GPU-hours.
    assert hours.until_near_best == pytest.approx(5.0)
    assert "GPU-hours: 8.5 (" in format_table(summary) and "pruning saved 4;" in format_table(summary)


def test_a_foreign_study_is_counted_in_trial_hours_from_optunas_times() -> None:
    t0 = datetime(2026, 12, 1, 8, 0)
    study = optuna.create_study(direction="minimize")
    for number, minutes in enumerate((30, 90)):
        study.add_trial(_trial(number, TrialState.COMPLETE, 1.0 - number * 0.1, t0, minutes, 3))
    hours = summarize(study, LoadedTrials({}, []), trials=study.get_trials()).device_hours
    assert hours is not None and hours.unit == "trial-hours" and hours.total == pytest.approx(2.0)
