"""Plain Optuna objectives without `space:` (define-by-run), and seeds for every kind of task. Real workers on
the embedded store; the CLI through its console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpc_tune import attrs
from hpc_tune.config import load_config
from hpc_tune.policy.suggest import distribution
from hpc_tune.storage.records import read_trials
from hpc_tune.worker.loop import run_worker
from tests.conftest import worker_env, write_config
from tests.worker.test_loop import load

HPCTUNE = str(Path(sys.executable).parent / "hpctune")

# Conditional: momentum exists only for sgd; the killer line fails the first run of trial 0 by killing its
# worker (once), so that its retry must come back with the same parameters though no space: lists them.
OBJECTIVE = """
import os, random, sys
import numpy as np

def objective(trial):
    optimizer = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    if optimizer == "sgd":
        trial.suggest_float("momentum", 0.8, 0.99)
    marker = os.path.join(os.path.dirname(__file__), "killed-once")
    if trial.number == 0 and os.environ.get("KILL_FIRST") and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)
    for step in range(1, 3):
        trial.report(lr * step, step)
    return lr
"""


def define_by_run(tmp_path: Path, **overrides: object) -> Path:
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    config = write_config(tmp_path, **{"task": "objective.py:objective", "trials": 6, **overrides})
    data = yaml.safe_load(config.read_text())
    del data["space"]  # write_config always writes one; a user with a plain objective does not
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def test_objective_without_space_records_its_own_parameters_conditionals_included(tmp_path: Path) -> None:
    cfg = define_by_run(tmp_path)
    assert run_worker(load_config(cfg)).by_state == {"COMPLETE": 6}
    study, study_dir = load(cfg)
    records = read_trials(study_dir).records
    for trial in study.trials:
        assert records[trial.number]["params"] == trial.params
        assert ("momentum" in trial.params) == (trial.params["optimizer"] == "sgd")
        assert [e["epoch"] for e in records[trial.number]["epochs"]] == [1, 2]
    check = subprocess.run(
        [HPCTUNE, "check", "-c", str(cfg)], env=worker_env(), capture_output=True, text=True
    )
    assert check.returncode == 0 and "parameters defined by the objective" in check.stdout, check.stderr
    collect = subprocess.run(
        [HPCTUNE, "collect", "t-digits", "-c", str(cfg)], env=worker_env(), capture_output=True, text=True
    )
    assert collect.returncode == 0, collect.stderr
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["best"]["params"] == study.best_trial.params


def test_baseline_and_retries_without_space_keep_their_parameters(tmp_path: Path) -> None:
    baseline = {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9}
    cfg = define_by_run(tmp_path, trials=3, baseline=baseline)
    result = subprocess.run(
        [HPCTUNE, "run", "--local", "--workers", "1", "-c", str(cfg)],
        env=worker_env(KILL_FIRST="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    trials = load(cfg)[0].trials
    killed = trials[0]
    assert killed.state == TrialState.FAIL and killed.params == baseline
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state == TrialState.COMPLETE and retry.params == baseline
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


def test_objective_disagreeing_with_space_stops_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    cfg = write_config(
        tmp_path,
        task="objective.py:objective",
        space={"lr": {"type": "float", "low": 1e-4, "high": 1e-1}},  # not log: the objective's is
    )
    result = subprocess.run(
        [HPCTUNE, "worker", "-c", str(cfg)], env=worker_env(), capture_output=True, text=True
    )
    assert result.returncode == 4
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: the objective asks for a parameter differently from space: (Cannot set")
    assert len(load(cfg)[0].trials) == 1  # not the whole budget


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"task": "hpc_tune.tasks.digits"}, "Error: space: is required for a build() task"),
        ({"sampler": {"type": "grid"}}, "Error: sampler grid needs space: (the parameters must be known"),
        ({"phases": [["lr"], ["optimizer"]]}, "Error: phases needs space: (the parameters must be known"),
    ],
)
def test_what_needs_a_space_says_so_in_one_line(tmp_path: Path, overrides: dict, message: str) -> None:
    cfg = define_by_run(tmp_path, **overrides)
    result = subprocess.run(
        [HPCTUNE, "check", "-c", str(cfg)], env=worker_env(), capture_output=True, text=True
    )
    assert result.returncode != 0
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


SEEDED = """
import random
import numpy as np

def objective(trial):
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    return random.random() + float(np.random.rand())
"""


def _enqueue_with_seed(cfg: Path, params: dict, seed: int | None) -> None:
    study, _ = load(cfg)
    distributions = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    system = {} if seed is None else {attrs.SEED: seed}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING, params=params, distributions=distributions, system_attrs=system
        )
    )


def test_objective_rngs_are_seeded_per_trial_seed(tmp_path: Path) -> None:
    (tmp_path / "seeded.py").write_text(SEEDED)
    cfg = define_by_run(tmp_path, task="seeded.py:objective", trials=3)
    optuna.create_study(study_name="t-digits", storage=_storage(cfg), direction="maximize")
    for seed in (None, 5, None):  # None: train.seed (0)
        _enqueue_with_seed(cfg, {"lr": 0.01}, seed)
    run_worker(load_config(cfg))
    study, study_dir = load(cfg)
    first, other, again = study.trials
    assert first.value == again.value != other.value
    assert [read_trials(study_dir).records[n]["seed"] for n in range(3)] == [0, 5, 0]


@pytest.mark.slow
def test_engine_uses_the_trial_seed(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, trials=3, epochs=1, pruner={"type": "none"})
    optuna.create_study(study_name="t-digits", storage=_storage(cfg), direction="maximize")
    params = {"lr": 0.01, "hidden": 16, "optimizer": "adamw"}
    study, _ = load(cfg)
    space = load_config(cfg).config.space
    assert space is not None
    distributions = {name: distribution(space[name]) for name in params}
    for seed in (None, 5, None):
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=params,
                distributions=distributions,
                system_attrs={} if seed is None else {attrs.SEED: seed},
            )
        )
    run_worker(load_config(cfg))
    first, other, again = load(cfg)[0].trials
    assert first.value == pytest.approx(again.value)
    assert first.value != other.value or first.intermediate_values != other.intermediate_values


def _storage(cfg: Path) -> optuna.storages.BaseStorage:
    from hpc_tune.storage.store import open_store
    from hpc_tune.storage.url import resolve_storage

    loaded = load_config(cfg)
    return open_store(resolve_storage(loaded.config.storage, loaded.study_dir)).storage
