"""A task file that imports a module beside it runs the same however its worker starts: the ``hpctune``
console script from another directory (what an array task runs), ``run --local`` (``python -m``), and a real
SLURM array task, submitted by ``hpctune submit`` or by ``sbatch jobs/*.sh`` typed by hand. Before, only
the ``python -m`` way put a directory on the import path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.conftest import worker_env, write_config
from tests.launchers.test_slurm_e2e import TEST_SLURM, hpctune, wait_for_study_jobs
from tests.worker.test_loop import load

HPCTUNE = str(Path(sys.executable).parent / "hpctune")


def project(tmp_path: Path, study: str, **overrides: object) -> Path:
    tasks = tmp_path / "proj" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "helpers.py").write_text("def score(lr):\n    return 1.0 - abs(lr - 0.03)\n")
    (tasks / "objective.py").write_text(
        "from helpers import score  # a sibling module, as training scripts have\n\n\n"
        "def objective(trial):\n"
        "    value = score(trial.suggest_float('lr', 1e-3, 0.3, log=True))\n"
        "    trial.report(value, 1)\n"
        "    return value\n"
    )
    return write_config(
        tmp_path / "proj",
        study=study,
        task="tasks/objective.py:objective",
        space={"lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True}},
        trials=2,
        **overrides,
    )


def assert_completed(cfg: Path, total: int) -> None:
    trials = load(cfg)[0].get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * total


def test_console_script_worker_from_another_directory(tmp_path: Path) -> None:
    cfg = project(tmp_path, "imports-worker")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [HPCTUNE, "worker", "-c", str(cfg)], cwd=elsewhere, env=worker_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert_completed(cfg, 2)


def test_run_local_from_another_directory(tmp_path: Path) -> None:
    cfg = project(tmp_path, "imports-local")
    result = subprocess.run(
        [HPCTUNE, "run", "--local", "--workers", "1", "-c", str(cfg)],
        cwd=tmp_path,
        env=worker_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert_completed(cfg, 2)


@pytest.mark.slurm
@pytest.mark.parametrize("how", ["submit", "sbatch by hand"])
def test_slurm_array_task(tmp_path: Path, slurm_cluster, how: str) -> None:  # type: ignore[no-untyped-def]
    study = "imports-" + tmp_path.name[-8:].replace("_", "-")
    cfg = project(tmp_path, study, slurm=TEST_SLURM)
    if how == "submit":
        result = hpctune("submit", "-c", str(cfg), "--array", "0", env=worker_env(), cwd=tmp_path)
    else:  # what the README says to type, from the project folder
        rendered = hpctune("render", "-c", str(cfg), "--array", "0", env=worker_env(), cwd=tmp_path)
        assert rendered.returncode == 0, rendered.stderr
        result = subprocess.run(
            ["bash", "-c", "sbatch jobs/*.sh"],
            cwd=cfg.parent,
            env=worker_env(),
            capture_output=True,
            text=True,
        )
    assert result.returncode == 0, result.stderr
    wait_for_study_jobs(study, timeout=240)
    assert_completed(cfg, 2)
