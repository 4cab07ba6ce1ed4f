"""`hpctune check --dry-run`: one short real trial catches what would fail every trial of an array, in one
line, without touching the study's own storage or results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpc_tune.config import load_config
from hpc_tune.errors import TaskError
from hpc_tune.worker.dry_run import dry_run
from tests.conftest import worker_env, write_config

HPCTUNE = str(Path(sys.executable).parent / "hpctune")
SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True}}
SCRIPT = """
import argparse, json
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, required=True)
p.add_argument("--epochs", type=int, required=True)
a = p.parse_args()
print("epochs", a.epochs)
for e in range(1, a.epochs + 1):
    print(json.dumps({"epoch": e, "METRIC": a.lr * e}))
"""


def command_study(
    tmp_path: Path, metric: str = "val_acc", args: str = "--lr {lr} --epochs {epochs}", **kw: object
) -> Path:
    (tmp_path / "train.py").write_text(SCRIPT.replace("METRIC", metric))
    return write_config(tmp_path, task={"command": f"python train.py {args}", **kw}, space=SPACE, epochs=50)


def check(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HPCTUNE, "check", "--dry-run", "-c", str(cfg)], env=worker_env(), capture_output=True, text=True
    )


def test_dry_run_of_a_command_runs_one_epoch_and_leaves_no_trace(tmp_path: Path) -> None:
    cfg = command_study(tmp_path)
    result = check(cfg)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("dry run: ok, val_acc = ")
    assert " after 1 epoch " in result.stdout  # {epochs} was 1, not the study's 50
    assert not (tmp_path / "runs").exists()  # the study's results (and its store) untouched


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"metric": "val_accuracy"},
            "Error: the dry run never reported 'val_acc' (it reported val_accuracy)",
        ),
        (
            {"args": "--learning-rate {lr} --epochs {epochs}"},
            "Error: the dry run failed (exit:2): train.py: error:",
        ),
        (
            {"metrics_regex": r"acc=(?P<val_acc>\S+)"},
            "Error: the dry run never reported 'val_acc' (no metric line on stdout)",
        ),
    ],
)
def test_dry_run_mistakes_are_one_line(tmp_path: Path, kwargs: dict, message: str) -> None:
    result = check(command_study(tmp_path, **kwargs))
    assert result.returncode == 4
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_dry_run_of_the_engine_and_of_an_objective(tmp_path: Path) -> None:
    engine_dir, objective_dir = tmp_path / "engine", tmp_path / "objective"
    engine_dir.mkdir()
    objective_dir.mkdir()
    engine = dry_run(load_config(write_config(engine_dir)))
    assert engine.epochs == 1 and 0.0 <= engine.value <= 1.0
    (objective_dir / "o.py").write_text(
        "def objective(trial):\n    return trial.suggest_float('x', 0, 1) * 0\n"
    )
    loaded = load_config(
        write_config(
            objective_dir, task="o.py:objective", space={"x": {"type": "float", "low": 0.0, "high": 1.0}}
        )
    )
    assert dry_run(loaded).value == 0.0
    (objective_dir / "nan.py").write_text("def objective(trial):\n    return float('nan')\n")
    loaded = load_config(write_config(objective_dir, task="nan.py:objective"))
    with pytest.raises(TaskError, match="the dry run's 'val_acc' is missing or not finite"):
        dry_run(loaded)
