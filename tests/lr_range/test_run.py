"""``hpctune lr-range`` on the built-in engine tasks: the suggestion against the shipped learning-curve
tables (benchmarks/curves/, every configuration trained for real), the files it writes, what the CLI prints,
and bad input as one ``Error:`` line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from hpc_tune.cli import cli
from hpc_tune.config import load_config
from hpc_tune.lr_range.result import LrRangeResult, read_result
from hpc_tune.lr_range.run import range_test
from hpc_tune.lr_range.suggest import RunRange
from tests.conftest import write_config

CURVES = Path(__file__).resolve().parents[2] / "benchmarks" / "curves"
STEPS = 60  # 6.5 to 8 decades of lr: enough for the rule, a second or two per digits run


pytestmark = pytest.mark.usefixtures("two_torch_threads")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False, prog_name="hpctune")
    return result.exit_code, result.stdout, result.stderr


def table(name: str) -> dict[str, Any]:
    return json.loads(gzip.decompress((CURVES / f"{name}.json.gz").read_bytes()))


def table_lrs(curves: dict[str, Any], optimizer: str, **fixed: Any) -> tuple[float, list[float]]:
    """The table's best lr for ``optimizer`` (by its best configuration's mean best val_acc over seeds) and
    the lrs that train within 0.1 of it."""
    best: dict[float, float] = {}
    for config in curves["configs"]:
        params = config["params"]
        if params["optimizer"] != optimizer or any(params[k] != v for k, v in fixed.items()):
            continue
        value = sum(max(seed) for seed in config["full"]) / len(config["full"])
        best[params["lr"]] = max(best.get(params["lr"], 0.0), value)
    top = max(best, key=lambda lr: best[lr])
    return top, sorted(lr for lr, v in best.items() if v >= best[top] - 0.1)


def reading(result: LrRangeResult, optimizer: str) -> RunRange:
    (found,) = [r for run, r in zip(result.runs, result.readings, strict=True) if run.optimizer == optimizer]
    return found


def test_digits_suggests_a_range_around_the_tables_best_lr(tmp_path: Path) -> None:
    curves = table("digits")
    # The table's own space (lr 1e-4 .. 0.3, AdamW and SGD) and batch: the sweep runs 1e-6 .. 30.
    cfg = write_config(tmp_path, space=curves["space"], train={"batch_size": 64, "compile": "off"})
    found = range_test(load_config(cfg), steps=STEPS)
    result, suggestion = found.result, found.result.suggestion
    assert suggestion is not None and [r.optimizer for r in result.runs] == ["adamw", "sgd"]
    for run in result.runs:  # 30 is far too high for both: each run diverged before its last step
        assert run.stopped in ("diverged", "nonfinite") and len(run.lr) < STEPS, run.label
    best_adamw, good_adamw = table_lrs(curves, "adamw")
    assert best_adamw == 0.01
    adamw = reading(result, "adamw")
    assert adamw.low is not None and adamw.high is not None
    assert adamw.low <= best_adamw <= adamw.high
    assert good_adamw[0] <= adamw.low and adamw.high <= good_adamw[-1]
    best_sgd, _ = table_lrs(curves, "sgd")
    sgd = reading(result, "sgd")
    assert sgd.low is not None and sgd.high is not None and sgd.low <= best_sgd <= sgd.high
    assert suggestion.contains(best_adamw) and suggestion.contains(best_sgd)
    assert suggestion.low <= adamw.low and suggestion.high >= sgd.high  # one range over both optimizers
    assert read_result(load_config(cfg).study_dir) == result
    assert (result.device, result.precision) == ("cpu", "fp32")


@pytest.mark.slow
def test_shapes_suggests_a_range_around_the_tables_best_lr(tmp_path: Path) -> None:
    curves = table("shapes")
    space = {**curves["space"], "optimizer": {"type": "categorical", "choices": ["adamw"]}}
    cfg = write_config(
        tmp_path,
        task="hpc_tune.tasks.shapes_cnn",
        space=space,
        baseline={"channels": 8},  # the table's smallest CNN: a few seconds on two cores
        train={"batch_size": 64, "compile": "off"},
    )
    result = range_test(load_config(cfg), steps=STEPS).result
    best, good = table_lrs(curves, "adamw", channels=8)
    assert best == 0.01
    suggestion = result.suggestion
    assert suggestion is not None and suggestion.contains(best)
    assert good[0] <= suggestion.low and suggestion.high <= good[-1]


def test_the_cli_prints_the_space_line_and_writes_the_json_and_the_figure(tmp_path: Path) -> None:
    space = {
        "lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
        "hidden": {"type": "int", "low": 8, "high": 32, "log": True},
    }
    cfg = write_config(tmp_path, space=space)
    code, out, err = invoke("lr-range", "-c", str(cfg), "--steps", "40")
    assert code == 0, err
    study_dir = load_config(cfg).study_dir
    result = read_result(study_dir)
    assert result is not None and result.suggestion is not None and result.steps == 40
    assert (result.start_lr, result.end_lr) == (pytest.approx(1e-5), pytest.approx(30.0))
    lines = out.splitlines()
    assert lines[0].startswith("AdamW, batch 64: steepest descent at ")  # the task's own optimizer
    assert "in hpctune.yaml's space:" in lines
    line = lines[lines.index("in hpctune.yaml's space:") + 1]
    assert yaml.safe_load(line) == {
        "lr": {"type": "float", "low": result.suggestion.low, "high": result.suggestion.high, "log": True}
    }
    assert f"figure: {study_dir / 'lr-range.png'}" in lines
    assert f"result: {study_dir / 'lr-range.json'}" in lines
    assert (study_dir / "lr-range.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads((study_dir / "lr-range.json").read_text())
    assert written["suggestion"]["high"] == result.suggestion.high


def test_bad_input_is_one_error_line(tmp_path: Path) -> None:
    no_lr = write_config(tmp_path, space={"hidden": {"type": "int", "low": 8, "high": 32}})
    code, out, err = invoke("lr-range", "-c", str(no_lr))
    assert code == 2 and out == ""
    assert err.startswith("Error: the space has no learning rate to test") and err.endswith(" (space)\n")
    assert err.count("\n") == 1

    unknown = write_config(tmp_path, task="hpc_tune.tasks.nope")
    code, _, err = invoke("lr-range", "-c", str(unknown))
    assert (code, err) == (4, "Error: task module 'hpc_tune.tasks.nope' not found (hpc_tune.tasks.nope)\n")

    (tmp_path / "objective_task.py").write_text("def objective(trial):\n    return 0.0\n")
    objective = write_config(tmp_path, task="objective_task.py:objective")
    code, _, err = invoke("lr-range", "-c", str(objective))
    assert code == 4 and err.startswith("Error: the learning-rate range test needs the engine")
    assert err.endswith("(objective_task.py:objective)\n") and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing written


def test_a_users_build_task_is_range_tested_through_the_engine(tmp_path: Path) -> None:
    """examples/byo_task.py's ``build()`` (a moons MLP): the same command on a user's own task module."""
    task = Path(__file__).resolve().parents[2] / "examples" / "byo_task.py"
    space = {
        "lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
        "hidden": {"type": "int", "low": 8, "high": 128, "log": True},
    }
    cfg = write_config(tmp_path, task=f"{task}:build", space=space, study="byo")
    code, out, err = invoke("lr-range", "-c", str(cfg), "--steps", "40")
    assert code == 0, err
    result = read_result(load_config(cfg).study_dir)
    assert result is not None and result.suggestion is not None and len(result.runs) == 1
    assert "byo_task.py" in result.task
    assert result.suggestion.low < result.suggestion.high
    assert (load_config(cfg).study_dir / "lr-range.png").is_file()
    assert "in hpctune.yaml's space:" in out
