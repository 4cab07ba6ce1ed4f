"""Grids across workers: every point exactly once, and a clean end when the grid is used up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from optuna.trial import TrialState

from tests.conftest import worker_env, write_config
from tests.worker.test_loop import load

GRID_SPACE = {
    "lr": {"type": "categorical", "choices": [0.01, 0.05, 0.1]},
    "hidden": {"type": "int", "low": 8, "high": 16, "step": 8},
}


def test_an_exhausted_grid_ends_the_workers_cleanly_and_runs_each_point_once(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path, trials=10, epochs=2, space=GRID_SPACE, sampler={"type": "grid"}, pruner={"type": "none"}
    )
    cmd = [sys.executable, "-m", "hpc_tune", "run", "--local", "--workers", "2", "-c", str(cfg)]
    env = worker_env(HPCTUNE_FAULT="sleep@1:0.3")  # test-only: trials overlap, so the workers race for points
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "study t-digits: 6/10 finished" in result.stdout  # the grid has 6 points; nothing crashed
    study, _ = load(cfg)
    points = [(t.params["lr"], t.params["hidden"]) for t in study.trials]
    assert sorted(points) == sorted((lr, h) for lr in (0.01, 0.05, 0.1) for h in (8, 16))
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
