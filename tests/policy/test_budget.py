from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpc_tune.policy.budget import budget_state
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage

D = {"x": FloatDistribution(0, 1)}


def study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(storage=open_store(resolve_storage(None, tmp_path)).storage, study_name="b")


def add(s: optuna.Study, state: TrialState, x: float = 0.5) -> optuna.trial.FrozenTrial:
    s.add_trial(
        create_trial(
            params={"x": x}, distributions=D, state=state, value=x if state == TrialState.COMPLETE else None
        )
    )
    return s.trials[-1]


def test_finished_states_count_and_running_reserve(tmp_path: Path) -> None:
    s = study(tmp_path)
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        add(s, state)
    s.ask()  # RUNNING: reserved, not finished
    state = budget_state(s.get_trials(), total=4)
    assert (state.counted, state.finished, state.running, state.waiting) == (4, 3, 1, 0)
    assert state.exhausted and not state.done
