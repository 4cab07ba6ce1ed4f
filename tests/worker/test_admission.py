"""Walltime-aware admission on a real worker and a real study: a trial of a kind that cannot hand on is not
started when the finished trials say it cannot end before the task's time limit, and a trial SLURM kills at
the limit is counted as killed by walltime.

The deadline of the admission test is given to the worker directly, as a caller that knows it would: a real
SLURM time limit is at least a minute and its signals come up to a minute early, which would make the test
wait minutes. The squeue side of the deadline is proven on the real SLURM in tests/slurm/test_walltime.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpc_tune import attrs
from hpc_tune.collector.collect import collect, format_table
from hpc_tune.config import load_config
from hpc_tune.slurm.walltime import TimeLimit
from hpc_tune.worker.admission import can_hand_on
from hpc_tune.worker.loop import Worker
from tests.conftest import wait_until, worker_env, write_config
from tests.worker.test_loop import load

SPACE = {"x": {"type": "float", "low": 0.0, "high": 1.0}}


def objective_task(tmp_path: Path, seconds: float) -> str:
    task = tmp_path / "slow.py"
    task.write_text(
        "import time\n\n\n"
        "def objective(trial):\n"
        "    x = trial.suggest_float('x', 0.0, 1.0)\n"
        f"    time.sleep({seconds})  # the trial's work\n"
        "    return x\n"
    )
    return f"{task}:objective"


def test_a_worker_ends_its_task_rather_than_start_a_trial_that_cannot_finish(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, task=objective_task(tmp_path, 1.0), space=SPACE, trials=30, epochs=1)
    env = worker_env(SLURM_CPUS_PER_TASK="2", CUDA_VISIBLE_DEVICES="")
    left = 9.0
    wall_deadline = time.time() + left
    limit = TimeLimit(deadline=time.monotonic() + left, limit_s=3600)
    worker = Worker(load_config(cfg), environ=env, worker_index=0, time_limit=limit)
    report = worker.run()
    assert report.stopped_by == "admission" and report.wants_requeue
    study, study_dir = load(cfg)
    trials = study.get_trials(deepcopy=False)
    assert 1 <= report.trials_run == len(trials) < 30
    assert all(t.state == TrialState.COMPLETE for t in trials)
    # No trial was still running at the limit: the last one ended before it.
    assert max(t.datetime_complete.timestamp() for t in trials) <= wall_deadline  # type: ignore[union-attr]
    (key,) = [k for k in study.user_attrs if k.startswith(attrs.ADMISSION_REFUSAL)]
    refusal = study.user_attrs[key]
    assert refusal["from_trials"] == len(trials)
    assert refusal["needed_s"] > refusal["left_s"] >= 0
    assert refusal["saved_device_s"] == pytest.approx(refusal["left_s"] * 2, abs=0.01)  # 2 CPU cores
    assert refusal["worker"]["pid"] == worker.worker_id["pid"]
    hours = collect(study, study_dir, report=False).summary.device_hours
    assert hours is not None and hours.admission_refusals == 1
    assert hours.saved_by_admission == pytest.approx(refusal["saved_device_s"] / 3600, abs=1e-5)
    assert hours.walltime_kills == 0
    assert "walltime admission saved" in format_table(collect(study, study_dir, report=False).summary)


def test_kinds_that_hand_on_are_never_refused(tmp_path: Path) -> None:
    limit = TimeLimit(deadline=time.monotonic(), limit_s=3600)  # no time left at all
    for name in ("engine", "objective", "off"):
        (tmp_path / name).mkdir()
    engine = write_config(tmp_path / "engine", trials=1, epochs=1)
    assert Worker(load_config(engine), environ=worker_env(), time_limit=limit).admission is None
    objective = write_config(tmp_path / "objective", task=objective_task(tmp_path, 0), space=SPACE)
    assert Worker(load_config(objective), environ=worker_env(), time_limit=limit).admission is not None
    off = write_config(
        tmp_path / "off",
        task=objective_task(tmp_path, 0),
        space=SPACE,
        worker={"walltime_admission": False},
    )
    assert Worker(load_config(off), environ=worker_env(), time_limit=limit).admission is None


@pytest.mark.parametrize(
    ("command", "resumes", "hands_on"),
    [
        ("python train.py --lr {x}", None, False),
        ("python train.py --lr {x} --ckpt {checkpoint}", None, True),
        (["python", "train.py", "--resume={resume}"], None, True),
        ("python train.py --lr {x}", True, True),
        ("python train.py --ckpt {checkpoint}", False, False),
    ],
)
def test_a_command_hands_on_when_it_names_its_checkpoint(
    tmp_path: Path, command: object, resumes: bool | None, hands_on: bool
) -> None:
    task: dict[str, object] = {"command": command}
    if resumes is not None:
        task["resumes"] = resumes
    config = load_config(write_config(tmp_path, task=task, space=SPACE)).config
    assert can_hand_on("command", config) is hands_on


def test_a_trial_killed_at_the_time_limit_is_counted_as_killed_by_walltime(tmp_path: Path) -> None:
    """USR2 (the walltime signal), then SLURM's SIGTERM at the limit while an objective still runs."""
    cfg = write_config(tmp_path, task=objective_task(tmp_path, 120), space=SPACE, trials=2, epochs=1)
    worker = subprocess.Popen(
        [sys.executable, "-m", "hpc_tune", "worker", "-c", str(cfg)],
        env=worker_env(SLURM_CPUS_PER_TASK="1", CUDA_VISIBLE_DEVICES=""),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        record = tmp_path / "runs" / "t-digits" / "trials" / "trial-0.json"
        assert wait_until(record.is_file, timeout=60)
        worker.send_signal(signal.SIGUSR2)
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=60)[0].decode()
    finally:
        worker.kill()
    assert worker.returncode == 143, output
    study, study_dir = load(cfg)
    first = study.trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs[attrs.REASON] == attrs.WALLTIME_KILLED
    summary = collect(study, study_dir, report=False).summary
    hours = summary.device_hours
    assert hours is not None and hours.walltime_kills == 1
    assert hours.killed_by_walltime == pytest.approx(hours.by_state["FAIL"], abs=1e-6)
    assert hours.killed_by_walltime <= hours.lost_to_failures + 1e-9
    assert "1 trial(s) killed by walltime" in format_table(summary)
    assert datetime.now() >= first.datetime_complete  # type: ignore[operator]
