"""Shared pieces of the chaos suite: workers as real processes, a plain Optuna objective, and the checks
that every fault must leave the study consistent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hpc_tune.policy.budget import budget_state
from hpc_tune.storage.records import read_trials
from tests.worker.test_loop import start_worker as start_worker  # the chaos tests start workers the same way

# A plain Optuna objective as users write it: suggests, reports every epoch, asks the pruner, returns.
# It knows nothing of hpc_tune; its storage calls go through whatever storage the worker gave the study.
PLAIN_OBJECTIVE = """
import time


def objective(trial):
    lr = trial.suggest_float("lr", 1e-3, 0.3, log=True)
    hidden = trial.suggest_int("hidden", 8, 32, log=True)
    value = 0.0
    for epoch in range(1, {epochs} + 1):
        time.sleep({sleep})
        value = 1.0 - abs(lr - 0.03) - 0.001 * hidden + 0.01 * epoch
        trial.report(value, epoch)
        if trial.should_prune():
            import optuna

            raise optuna.TrialPruned()
    return value
"""
PLAIN_SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
    "hidden": {"type": "int", "low": 8, "high": 32, "log": True},
}


def write_plain_objective(directory: Path, epochs: int = 5, sleep: float = 0.3) -> str:
    path = directory / "plain_objective.py"
    path.write_text(PLAIN_OBJECTIVE.format(epochs=epochs, sleep=sleep))
    return f"{path}:objective"


def finish(procs: list[subprocess.Popen[bytes]], timeout: float = 300) -> list[tuple[int, str]]:
    return [(p.wait(timeout=timeout), p.communicate()[0].decode()) for p in procs]


def running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials that have reported at least one epoch (really in the middle of training)."""
    return [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.intermediate_values
    ]


def assert_nothing_lost(study: optuna.Study, study_dir: Path, total: int) -> None:
    """The chaos suite's invariant: exactly ``total`` finished, nothing RUNNING or WAITING, no FAIL, and
    every trial's JSON complete and in agreement with the study."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert "FAIL" not in states, [(t.number, t.state.name, t.user_attrs.get("reason")) for t in trials]
    state = budget_state(trials, total)
    assert state.finished == total and state.running == 0 and state.waiting == 0, states
    assert len(trials) == total, states
    loaded = read_trials(study_dir)
    assert loaded.quarantined == []
    for t in trials:
        record = loaded.records[t.number]
        assert record["state"] == t.state.name, (t.number, record["state"], t.state.name)
        epochs = [e["epoch"] for e in record["epochs"]]
        assert epochs == sorted(t.intermediate_values), (t.number, epochs, sorted(t.intermediate_values))


def read_json(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())
