"""Fail fast: when the first trials all fail for the same reason, the workers stop with that reason instead
of spending the budget on the same mistake, and the command exits non-zero."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from optuna.trial import TrialState

from tests.conftest import worker_env, write_config
from tests.worker.test_loop import load

HPCTUNE = str(Path(sys.executable).parent / "hpctune")
SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True}}


def broken_task(tmp_path: Path, **overrides: object) -> Path:
    task = tmp_path / "broken.py"
    task.write_text(
        "def objective(trial):\n"
        "    trial.suggest_float('lr', 1e-3, 0.3, log=True)\n"
        "    raise ValueError('the metric is called val_accuracy here')\n"
    )
    return write_config(tmp_path, **{"task": f"{task}:objective", "space": SPACE, "trials": 20, **overrides})


def test_run_local_stops_when_the_first_trials_fail_alike(tmp_path: Path) -> None:
    cfg = broken_task(tmp_path)
    cmd = [HPCTUNE, "run", "--local", "--workers", "2", "-c", str(cfg)]
    result = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "the first 3 trials all failed (exception:ValueError)" in errors[0], (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    trials = load(cfg)[0].get_trials(deepcopy=False)
    assert 3 <= len(trials) <= 4  # the first three, and at most one that was already running
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def test_one_worker_exits_4_with_the_reason(tmp_path: Path) -> None:
    cfg = broken_task(tmp_path)
    result = subprocess.run(
        [HPCTUNE, "worker", "-c", str(cfg)], env=worker_env(), capture_output=True, text=True
    )
    assert result.returncode == 4, result.stdout + result.stderr
    assert (
        result.stderr.strip().splitlines()[-1].startswith("Error: the first 3 trials all failed (exception:")
    )
    assert len(load(cfg)[0].trials) == 3


def test_fail_fast_can_be_switched_off(tmp_path: Path) -> None:
    cfg = broken_task(
        tmp_path, trials=5, worker={"heartbeat_interval": 1, "grace_period": 3, "fail_fast_trials": 0}
    )
    result = subprocess.run(
        [HPCTUNE, "worker", "-c", str(cfg)], env=worker_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [t.state for t in load(cfg)[0].trials] == [TrialState.FAIL] * 5
