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


# Asks for its parameters itself, with ranges of its own (a log float, an int, a categorical), as Optuna code
# does. Trial 0's first run is killed before it asks for anything, so that its retry must get the point from
# what was pinned, not from parameters the failed trial never had.
GRID_OBJECTIVE = """
import os

def objective(trial):
    marker = os.path.join(os.path.dirname(__file__), "killed-once")
    if trial.number == 0 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)
    lr = trial.suggest_float("lr", 1e-5, 1.0, log=True)
    layers = trial.suggest_int("layers", 1, 8)
    optimizer = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    for step in (1, 2):
        trial.report(lr * layers * step, step)
    return lr * layers + (optimizer == "sgd")
"""

OBJECTIVE_GRID_SPACE = {
    "lr": {"type": "categorical", "choices": [0.001, 0.01, 0.1]},
    "layers": {"type": "int", "low": 1, "high": 2},
    "optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
}


def test_an_objective_that_suggests_its_own_ranges_runs_the_grid_of_space_once_each(tmp_path: Path) -> None:
    (tmp_path / "objective.py").write_text(GRID_OBJECTIVE)
    cfg = write_config(
        tmp_path,
        task="objective.py:objective",
        trials=20,
        space=OBJECTIVE_GRID_SPACE,
        sampler={"type": "grid"},
        pruner={"type": "none"},
    )
    cmd = [sys.executable, "-m", "hpc_tune", "run", "--local", "--workers", "2", "-c", str(cfg)]
    result = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "study t-digits: 12/20 finished" in result.stdout  # 3 × 2 × 2 points, then the grid is used up
    study, _ = load(cfg)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    points = sorted((t.params["lr"], t.params["layers"], t.params["optimizer"]) for t in done)
    assert points == sorted((lr, n, o) for lr in (0.001, 0.01, 0.1) for n in (1, 2) for o in ("adam", "sgd"))
    # The study holds the objective's own distributions, as with Optuna's GridSampler.
    assert {type(d).__name__ for d in done[0].distributions.values()} == {
        "FloatDistribution",
        "IntDistribution",
        "CategoricalDistribution",
    }
    assert done[0].distributions["lr"].log
    killed = study.trials[0]
    assert killed.state == TrialState.FAIL and killed.params == {}
    retry = next(t for t in study.trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.system_attrs["fixed_params"] == killed.system_attrs["fixed_params"]
    assert retry.params == killed.system_attrs["fixed_params"]
    check = subprocess.run(
        [sys.executable, "-m", "hpc_tune", "check", "--dry-run", "-c", str(cfg)],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_grid_parameter_the_objective_never_asks_for_stops_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "objective.py").write_text(GRID_OBJECTIVE.replace("trial.number == 0", "False"))
    space = {**OBJECTIVE_GRID_SPACE, "dropout": {"type": "categorical", "choices": [0.0, 0.5]}}
    cfg = write_config(
        tmp_path, task="objective.py:objective", trials=24, space=space, sampler={"type": "grid"}
    )
    cmd = [sys.executable, "-m", "hpc_tune", "worker", "-c", str(cfg)]
    result = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: the objective never asked for 'dropout', which space: lists"), lines
    assert "Traceback" not in result.stderr
    assert len(load(cfg)[0].trials) == 1  # not the whole grid
