from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpc_tune.budget import budget_state, enqueue_retry, retried_numbers
from hpc_tune.storage import open_storage, resolve_storage

D = {"x": FloatDistribution(0, 1)}


def study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(storage=open_storage(resolve_storage(None, tmp_path)), study_name="b")


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


def test_retried_fail_costs_nothing_and_retry_is_capped(tmp_path: Path) -> None:
    s = study(tmp_path)
    failed = add(s, TrialState.FAIL, 0.3)
    assert enqueue_retry(s, s._storage.get_trial(failed._trial_id), max_retry=1)
    trials = s.get_trials()
    assert retried_numbers(trials) == {0}
    retry = trials[1]
    assert retry.state == TrialState.WAITING and retry.system_attrs["failed_trial"] == 0
    state = budget_state(trials, total=1)
    assert (state.counted, state.finished, state.waiting) == (1, 0, 1)
    assert not state.exhausted  # the waiting retry must still be asked for
    trial = s.ask()
    assert trial.suggest_float("x", 0, 1) == 0.3  # same params
    s.tell(trial, state=TrialState.FAIL)
    again = s._storage.get_trial(trial._trial_id)
    assert not enqueue_retry(s, again, max_retry=1)  # a retry that fails again is a real FAIL
    state = budget_state(s.get_trials(), total=1)
    assert state.finished == 1 and state.done
