"""Retry bookkeeping: retries are capped by real failures only, hand-ons are free, a retry resumes from the
newest checkpoint that exists, and the baseline mark survives."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpc_tune import attrs
from hpc_tune.policy.budget import budget_state
from hpc_tune.policy.reruns import HandOn, checkpoint_path, enqueue_rerun, retried_numbers
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage

D = {"x": FloatDistribution(0, 1)}


def study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(storage=open_store(resolve_storage(None, tmp_path)).storage, study_name="b")


def add(s: optuna.Study, state: TrialState, x: float = 0.5, **user_attrs: object) -> FrozenTrial:
    s.add_trial(create_trial(params={"x": x}, distributions=D, state=state, user_attrs=user_attrs))
    return s.get_trials()[-1]


def run_next(s: optuna.Study, state: TrialState) -> FrozenTrial:
    trial = s.ask()
    trial.suggest_float("x", 0, 1)
    s.tell(trial, state=state)
    return s.get_trials()[trial.number]


def test_retried_fail_costs_nothing_and_retry_is_capped(tmp_path: Path) -> None:
    s = study(tmp_path)
    failed = add(s, TrialState.FAIL, 0.3)
    assert enqueue_rerun(s, failed, max_retry=1, study_dir=tmp_path)
    trials = s.get_trials()
    assert retried_numbers(trials) == {0}
    retry = trials[1]
    assert retry.state == TrialState.WAITING and retry.params == {"x": 0.3}
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0  # Optuna's helpers still work
    state = budget_state(trials, total=1)
    assert (state.counted, state.finished, state.waiting) == (1, 0, 1)
    assert not state.exhausted  # the waiting retry must still be asked for
    again = run_next(s, TrialState.FAIL)
    assert again.system_attrs[attrs.FAILURES] == 1
    assert not enqueue_rerun(s, again, max_retry=1, study_dir=tmp_path)  # a retry that fails again is final
    state = budget_state(s.get_trials(), total=1)
    assert state.finished == 1 and state.done


def test_hand_ons_never_count_toward_max_retry(tmp_path: Path) -> None:
    s = study(tmp_path)
    first = add(s, TrialState.FAIL)
    ckpt = checkpoint_path(tmp_path, first.number)
    assert enqueue_rerun(s, first, max_retry=1, study_dir=tmp_path, hand_on=HandOn(ckpt, 4))
    continuation = run_next(s, TrialState.FAIL)  # the continuation then dies: a real failure
    assert continuation.system_attrs[attrs.FAILURES] == 0
    assert (
        continuation.system_attrs[attrs.RESUMED_FROM] == 0
        and continuation.system_attrs[attrs.RESUME_EPOCH] == 4
    )
    assert enqueue_rerun(s, continuation, max_retry=1, study_dir=tmp_path)  # retried despite max_retry: 1
    retry = s.get_trials()[-1]
    assert retry.system_attrs[attrs.FAILURES] == 1 and retry.system_attrs["retry_history"] == [0, 1]
    assert budget_state(s.get_trials(), total=1).counted == 1


def test_retry_of_a_continuation_resumes_from_the_newest_checkpoint_that_exists(tmp_path: Path) -> None:
    s = study(tmp_path)
    first = add(s, TrialState.FAIL)
    original = checkpoint_path(tmp_path, first.number)
    enqueue_rerun(s, first, max_retry=1, study_dir=tmp_path, hand_on=HandOn(original, 3))
    continuation = run_next(s, TrialState.FAIL)
    moved = checkpoint_path(tmp_path, continuation.number)  # the continuation moved the checkpoint here
    moved.parent.mkdir(parents=True)
    moved.write_bytes(b"state")
    enqueue_rerun(s, continuation, max_retry=2, study_dir=tmp_path)
    retry = s.get_trials()[-1]
    assert retry.system_attrs[attrs.RESUME_CHECKPOINT] == str(moved)
    assert retry.system_attrs[attrs.RESUMED_FROM] == 0 and retry.system_attrs[attrs.RESUME_EPOCH] == 3

    # The retry is killed before it moved anything: the continuation's checkpoint is still the newest.
    again = run_next(s, TrialState.FAIL)
    enqueue_rerun(s, again, max_retry=5, study_dir=tmp_path)
    assert s.get_trials()[-1].system_attrs[attrs.RESUME_CHECKPOINT] == str(moved)
    assert not original.exists()  # the moved path is never offered

    # Nothing on disk any more: start over rather than fail on a missing path.
    moved.unlink()
    last = run_next(s, TrialState.FAIL)
    enqueue_rerun(s, last, max_retry=5, study_dir=tmp_path)
    assert attrs.RESUME_CHECKPOINT not in s.get_trials()[-1].system_attrs


def test_the_baseline_stays_the_baseline_through_retries(tmp_path: Path) -> None:
    s = study(tmp_path)
    base = add(s, TrialState.FAIL, 0.1, baseline=True, reason="interrupted")
    enqueue_rerun(s, base, max_retry=1, study_dir=tmp_path)
    retry = s.get_trials()[-1]
    assert retry.user_attrs == {"baseline": True}  # the mark stays, the old reason does not
