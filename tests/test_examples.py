"""The shipped examples run through a real ``hpctune worker`` (or ``run --local``): the CNN task on the
accelerated engine, a bring-your-own task module, plain Optuna objectives (with a space: and define-by-run),
and existing scripts tuned as they are (argparse, Hydra, plain text). An example that breaks fails here."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from hpc_tune.config import load_config
from hpc_tune.storage.records import read_trials
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage
from tests.conftest import wait_until, worker_env
from tests.worker.test_loop import start_worker

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, tmp_path: Path, trials: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    task = raw["task"]
    if ".py:" in task:  # make the file path absolute: the copy lives in tmp_path
        raw["task"] = str(EXAMPLES.parent / task)
    raw.update(trials=trials, results=str(tmp_path / "runs"), epochs=min(int(raw["epochs"]), 3))
    cfg = tmp_path / "hpctune.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = subprocess.run(
        [sys.executable, "-m", "hpc_tune", "worker", "-c", str(cfg)],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    records = [
        json.loads(p.read_text())
        for p in sorted((tmp_path / "runs" / raw["study"] / "trials").glob("*.json"))
    ]
    return raw, records


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shapes_cnn.yaml", "byo_task.yaml", "byo_objective.yaml", "demo.yaml"])
def test_example_runs(tmp_path: Path, name: str) -> None:
    raw, records = run_example(name, tmp_path, trials=2)
    assert len(records) == 2
    for record in records:
        assert record["state"] in ("COMPLETE", "PRUNED")
        assert record["epochs"], record
        assert raw["metric"] in record["epochs"][0]  # type: ignore[index]
    complete = [r for r in records if r["state"] == "COMPLETE"]
    assert complete and all(0.0 <= r["value"] <= 1.0 for r in complete)  # type: ignore[operator]


@pytest.mark.slow
def test_python_api_example_launches_local_workers(tmp_path: Path) -> None:
    """examples/python_api/launch_local.py: hpc_tune.launch on submitit's local executor, then the summary."""
    proc = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "python_api" / "launch_local.py"),
            "--results",
            str(tmp_path / "runs"),
            "--trials",
            "4",
        ],
        env=worker_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "launched 2 worker job(s) of digits-api" in proc.stdout
    assert "4/4 trials finished" in proc.stdout
    summary = json.loads((tmp_path / "runs" / "digits-api" / "summary.json").read_text())
    assert summary["budget"]["finished"] == 4 and summary["counts"]["RUNNING"] == 0


# ----------------------------------------------------------------------------------------------------------
# The bring-your-code examples, one folder each. Each test copies its folder to tmp_path and runs the yaml
# there, changed only in trials and epochs: relative paths resolve as they do for a user, and runs/ lands in
# tmp_path. The workers are real `hpctune` processes, the scripts real training runs on the digits data.


def copy_example(folder: str, tmp_path: Path, **overrides: object) -> Path:
    """The example's folder in tmp_path, its hpctune.yaml with ``overrides``; returns the yaml's path."""
    copy = tmp_path / folder
    shutil.copytree(EXAMPLES / folder, copy, ignore=shutil.ignore_patterns("runs", "outputs", "__pycache__"))
    cfg = copy / "hpctune.yaml"
    raw = yaml.safe_load(cfg.read_text())
    raw.update(overrides)
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    return cfg


def hpctune(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpc_tune", *args],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def trial_records(cfg: Path) -> dict[int, dict]:
    return read_trials(load_config(cfg).study_dir).records


def study_storage(cfg: Path) -> optuna.storages.BaseStorage:
    """The study's storage, to enqueue trials before any worker starts."""
    loaded = load_config(cfg)
    return open_store(resolve_storage(loaded.config.storage, loaded.study_dir)).storage


def trial_dir(cfg: Path, trial: int) -> Path:
    return load_config(cfg).study_dir / "trials" / f"trial-{trial}"


def assert_finished_well(records: dict[int, dict], metric: str = "val_acc") -> list[dict]:
    """Every trial COMPLETE or PRUNED with its curve; the complete ones valued in [0, 1]. Returns those."""
    for record in records.values():
        assert record["state"] in ("COMPLETE", "PRUNED"), record
        assert record["epochs"] and all(metric in e for e in record["epochs"]), record
    complete = [r for r in records.values() if r["state"] == "COMPLETE"]
    assert complete and all(0.0 <= r["value"] <= 1.0 for r in complete), complete
    return complete


ARGPARSE_GOOD = {"lr": 1e-2, "weight_decay": 1e-4, "batch_size": 32, "hidden": 128}
ARGPARSE_HOPELESS = {"lr": 1e-4, "weight_decay": 1e-6, "batch_size": 128, "hidden": 16}


@pytest.mark.slow
def test_argparse_script_is_tuned_as_it_is_and_a_hopeless_trial_is_pruned(tmp_path: Path) -> None:
    original = (EXAMPLES / "argparse_script" / "train.py").read_bytes()
    # It imports nothing of us; the one variable it reads is the opt-in range test's (hpctune lr-range).
    assert b"hpc_tune" not in original
    assert set(re.findall(rb"HPCTUNE\w*", original)) == {
        b"HPCTUNE_LR_RANGE",
        b"HPCTUNE_LR_RANGE_MIN",
        b"HPCTUNE_LR_RANGE_MAX",
        b"HPCTUNE_LR_RANGE_STEPS",
    }
    cfg = copy_example("argparse_script", tmp_path, trials=5, epochs=4)
    # Three good configurations finish first (the yaml's pruner waits for 3), then one that barely learns
    # in 4 epochs: its prune is certain, not up to the sampler. The fifth trial is the yaml's baseline.
    study = optuna.create_study(
        study_name="argparse-digits", storage=study_storage(cfg), direction="maximize"
    )
    for lr in (1e-2, 2e-2, 3e-2):
        study.enqueue_trial({**ARGPARSE_GOOD, "lr": lr})
    study.enqueue_trial(ARGPARSE_HOPELESS)

    result = hpctune("worker", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    records = trial_records(cfg)
    assert len(records) == 5
    assert_finished_well(records)
    assert all(records[n]["state"] == "COMPLETE" for n in range(3))
    hopeless = records[3]
    assert hopeless["params"] == ARGPARSE_HOPELESS
    assert hopeless["state"] == "PRUNED" and [e["epoch"] for e in hopeless["epochs"]] == [1, 2], hopeless
    # The script's own lines, merged per epoch: val_loss and train_loss were recorded beside val_acc.
    assert all({"train_loss", "val_loss"} <= set(e) for r in records.values() for e in r["epochs"])
    assert (cfg.parent / "train.py").read_bytes() == original


@pytest.mark.slow
def test_argparse_script_resumes_from_its_checkpoint_after_walltime(tmp_path: Path) -> None:
    # 200 epochs of ~10 ms: USR2 lands in the middle of the trial. The script saves each epoch after printing
    # its line, so once epoch 2 is printed, epoch 1's checkpoint is there to resume from.
    cfg = copy_example("argparse_script", tmp_path, trials=1, epochs=200)
    worker = start_worker(cfg, 0)
    stdout = trial_dir(cfg, 0) / "stdout.log"
    assert wait_until(lambda: stdout.is_file() and '"epoch": 2,' in stdout.read_text(), 60, 0.005)
    worker.send_signal(signal.SIGUSR2)  # what SLURM sends signal_grace_s before the time limit
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out.decode()

    result = hpctune("worker", "-c", str(cfg))  # the requeued task: it takes the continuation
    assert result.returncode == 0, result.stderr
    records = trial_records(cfg)
    assert records[0]["state"] == "FAIL" and records[0]["reason"] == "walltime"
    continuation = records[1]
    assert continuation["state"] == "COMPLETE" and continuation["retry_of"] == 0, continuation
    assert [e["epoch"] for e in continuation["epochs"]] == list(range(1, 201))  # every epoch once
    # {resume} was 1, so the yaml passed --resume and the script went on from its checkpoint
    stderr = (trial_dir(cfg, 1) / "stderr.log").read_text()
    resumed_at = int(stderr.split(" at epoch ")[1].split()[0])
    assert 1 < resumed_at <= 200


def test_argparse_example_passes_check_dry_run_as_shipped() -> None:
    result = hpctune("check", "--dry-run", "-c", str(EXAMPLES / "argparse_script" / "hpctune.yaml"))
    assert result.returncode == 0, result.stderr
    assert "dry run: ok, val_acc = " in result.stdout
    assert not (EXAMPLES / "argparse_script" / "runs").exists()  # the dry run's study is thrown away


@pytest.mark.slow
def test_hydra_app_is_tuned_through_dotted_overrides(tmp_path: Path) -> None:
    cfg = copy_example("hydra_style", tmp_path, trials=3, epochs=3)
    result = hpctune("worker", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    records = trial_records(cfg)
    assert len(records) == 3
    complete = assert_finished_well(records)
    assert len(complete) == 3  # the pruner waits for 3 finished trials
    for number, record in records.items():
        assert set(record["params"]) == {
            "optimizer.name",
            "optimizer.lr",
            "optimizer.weight_decay",
            "model.hidden",
            "model.dropout",
        }
        assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3]
        # Hydra got the values (its own record of the overrides) and wrote its output in the trial's folder
        overrides = yaml.safe_load((trial_dir(cfg, number) / ".hydra" / "overrides.yaml").read_text())
        given = dict(o.split("=", 1) for o in overrides)
        assert float(given["optimizer.lr"]) == pytest.approx(record["params"]["optimizer.lr"])
        assert given["optimizer.name"] == record["params"]["optimizer.name"]
        assert given["trainer.max_epochs"] == "3"
    assert not (cfg.parent / "outputs").exists()


def test_plain_text_script_is_read_through_metrics_regex(tmp_path: Path) -> None:
    cfg = copy_example("plain_text", tmp_path, trials=3, epochs=4)
    result = hpctune("worker", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    records = trial_records(cfg)
    assert len(records) == 3
    complete = assert_finished_well(records)
    for record in complete:
        assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3, 4]
        assert all("train_loss" in e for e in record["epochs"])
        assert record["value"] == pytest.approx(record["epochs"][-1]["val_acc"])  # value: last
    log = (trial_dir(cfg, 0) / "stdout.log").read_text()
    assert "training an MLP" in log and "done" in log  # the other lines are kept, not read


def test_define_by_run_objective_asks_for_its_own_parameters(tmp_path: Path) -> None:
    cfg = copy_example("define_by_run", tmp_path, trials=6)
    assert "space" not in yaml.safe_load(cfg.read_text())
    result = hpctune("run", "--local", "--workers", "2", "-c", str(cfg))
    assert result.returncode == 0, result.stderr
    records = trial_records(cfg)
    assert len(records) == 6
    assert_finished_well(records)
    for record in records.values():
        params = record["params"]
        assert ("momentum" in params) == (params["optimizer"] == "sgd")
        assert ("weight_decay" in params) == (params["optimizer"] == "adamw")
        assert {p for p in params if p.startswith("hidden_")} == {
            f"hidden_{i}" for i in range(params["n_layers"])
        }
    assert (load_config(cfg).study_dir / "summary.json").is_file()  # run --local collected the study


def test_every_example_folder_is_run_by_a_test_here() -> None:
    # A new examples/<folder>/hpctune.yaml without a test here could break unnoticed.
    source = Path(__file__).read_text()
    folders = sorted(p.parent.name for p in EXAMPLES.glob("*/hpctune.yaml"))
    assert len(folders) >= 4
    assert not [f for f in folders if f'copy_example("{f}"' not in source]
