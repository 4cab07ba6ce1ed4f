"""The range test of a command task: the script's own sweep under ``HPCTUNE_LR_RANGE=1``, read from its
``{"lr": ..., "loss": ...}`` lines, stopped by hpctune when it diverges; and the shipped argparse example,
which runs its range test under the variable and trains as before without it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from hpc_tune.cli import cli
from hpc_tune.config import load_config
from hpc_tune.errors import LrRangeError
from hpc_tune.lr_range.command import read_point
from hpc_tune.lr_range.result import read_result
from hpc_tune.lr_range.run import range_test
from tests.conftest import write_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}

# A script that follows the protocol with a known curve (falling fastest at 1e-2, lowest at 1e-1, then
# exploding) and never stops by itself: only hpctune's stop rules (or trial_timeout_s) end it.
FAKE = """
import json, math, os
assert os.environ["HPCTUNE_LR_RANGE"] == "1"
low, high = float(os.environ["HPCTUNE_LR_RANGE_MIN"]), float(os.environ["HPCTUNE_LR_RANGE_MAX"])
steps = int(os.environ["HPCTUNE_LR_RANGE_STEPS"])
nan_above = float(os.environ.get("NAN_ABOVE", "inf"))
print("starting the sweep", flush=True)
k = 0
while True:
    lr = low * (high / low) ** (k / (steps - 1))
    x = math.log10(lr)
    loss = 2.3 - 2.0 / (1 + math.exp(-3 * (x + 2))) + (50 * (x + 1) ** 2 if x > -1 else 0)
    print(json.dumps({"lr": lr, "loss": float("nan") if lr > nan_above else loss}), flush=True)
    k += 1
"""


def _fake(tmp_path: Path, **env: str) -> Path:
    (tmp_path / "fake.py").write_text(FAKE)
    task = {"command": "python fake.py --lr {lr}", "trial_timeout_s": 60, "env": env}
    return write_config(tmp_path, task=task, space=SPACE)


def test_protocol_lines_are_read_and_others_ignored() -> None:
    assert read_point('{"lr": 0.001, "loss": 2.3}\n') == (0.001, 2.3)
    lr, loss = read_point('{"lr": 0.5, "loss": NaN}') or (0.0, 0.0)
    assert lr == 0.5 and loss != loss  # NaN: a non-finite point, not an ignored line
    assert read_point('{"lr": 0.5, "loss": null}') is not None
    for other in ('{"epoch": 1, "val_acc": 0.9}', "lr 0.1 loss 2.0", '{"lr": -1, "loss": 2}', "{not json}"):
        assert read_point(other) is None


def test_the_script_is_stopped_once_its_loss_diverged(tmp_path: Path) -> None:
    loaded = load_config(_fake(tmp_path))
    found = range_test(loaded, steps=100)
    (run,) = found.result.runs
    assert run.stopped == "diverged" and len(run.lr) < 100
    assert run.label == "the script's optimizer" and found.result.device is None
    assert run.lr[0] == pytest.approx(1e-5)  # HPCTUNE_LR_RANGE_MIN: the space's low / 100
    suggestion = found.result.suggestion
    assert suggestion is not None and suggestion.contains(1e-2) and suggestion.high < 1e-1
    logs = loaded.study_dir / "lr-range" / "run-0"
    assert (logs / "stdout.log").read_text().startswith("starting the sweep\n")


def test_a_non_finite_loss_stops_the_script_and_stays_out_of_the_suggestion(tmp_path: Path) -> None:
    found = range_test(load_config(_fake(tmp_path, NAN_ABOVE="0.05")), steps=100)
    (run,) = found.result.runs
    assert run.stopped == "nonfinite" and run.loss[-1] is None and run.lr[-1] > 0.05
    assert all(v is not None for v in run.loss[:-1])
    assert found.result.suggestion is not None and found.result.suggestion.high <= 0.05


def test_a_script_that_does_not_answer_the_protocol_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text('import sys\nprint(\'{"epoch": 1, "val_acc": 0.5}\')\n')
    cfg = write_config(tmp_path, task={"command": "python plain.py --lr {lr}"}, space=SPACE)
    with pytest.raises(LrRangeError):
        range_test(load_config(cfg), steps=20)
    result = CliRunner().invoke(cli, ["lr-range", "-c", str(cfg)], catch_exceptions=False)
    assert result.exit_code == 9 and result.stdout == ""
    assert result.stderr.startswith('Error: the command exited 0 with 0 {"lr": ..., "loss": ...} lines')
    assert "HPCTUNE_LR_RANGE=1" in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.slow
def test_the_argparse_example_runs_its_range_test_under_the_variable(tmp_path: Path) -> None:
    folder = tmp_path / "argparse_script"
    leave_out = shutil.ignore_patterns("runs", "__pycache__")
    shutil.copytree(EXAMPLES / "argparse_script", folder, ignore=leave_out)
    cfg = folder / "hpctune.yaml"
    raw = yaml.safe_load(cfg.read_text())
    raw["space"]["batch_size"] = {"type": "categorical", "choices": [64]}  # one run: one script start
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = CliRunner().invoke(cli, ["lr-range", "-c", str(cfg), "--steps", "60"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("the script's optimizer, batch 64: steepest descent at ")
    found = read_result(load_config(cfg).study_dir)
    assert found is not None and found.suggestion is not None
    (run,) = found.runs
    # The sweep ends at 10 (the space's high x 100), far too high for AdamW: hpctune stopped the script.
    assert run.stopped == "diverged" and len(run.lr) < 60
    assert found.suggestion.contains(0.01)  # the digits table's best AdamW lr
    assert (load_config(cfg).study_dir / "lr-range.png").is_file()
