"""The admission rule: how long the next trial is expected to take, and whether the time left suffices."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpc_tune import attrs
from hpc_tune.policy.admission import MARGIN_MIN_S, decide_admission, estimate_trial

START = datetime(2026, 1, 1, 12, 0, 0)


def finished(
    seconds: float, *, state: TrialState = TrialState.COMPLETE, epochs: int = 10, promoted: bool = False
) -> FrozenTrial:
    trial = create_trial(
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        intermediate_values={e: 0.5 for e in range(1, epochs + 1)},
        user_attrs={attrs.PROMOTED_FROM: 0} if promoted else None,
    )
    trial.datetime_start = START
    trial.datetime_complete = START + timedelta(seconds=seconds)
    return trial


def test_the_estimate_is_the_90th_percentile_of_complete_trials_of_the_same_fidelity() -> None:
    trials = [finished(s) for s in (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)]
    trials.append(finished(1000, promoted=True))  # another fidelity: not a sample
    estimate = estimate_trial(trials, promoted=False, epochs=10)
    assert estimate is not None and estimate.basis == "complete" and estimate.from_trials == 10
    assert estimate.seconds == 90  # nearest rank: a duration some trial really took
    promoted = estimate_trial(trials, promoted=True, epochs=10)
    assert promoted is not None and promoted.seconds == 1000 and promoted.from_trials == 1


def test_a_trial_of_other_length_is_scaled_to_the_next_ones_epochs() -> None:
    estimate = estimate_trial([finished(30, epochs=10)], promoted=False, epochs=20)
    assert estimate is not None and estimate.seconds == pytest.approx(60)


def test_pruned_trials_stand_in_only_while_none_completed() -> None:
    pruned = [finished(4, state=TrialState.PRUNED, epochs=2)]
    only_pruned = estimate_trial(pruned, promoted=False, epochs=10)
    assert only_pruned is not None and only_pruned.basis == "pruned" and only_pruned.seconds == 20
    with_complete = estimate_trial([*pruned, finished(12)], promoted=False, epochs=10)
    assert with_complete is not None and with_complete.basis == "complete" and with_complete.seconds == 12


def test_failed_running_and_continued_trials_are_no_samples() -> None:
    failed = finished(500, state=TrialState.FAIL)
    continued = finished(5)
    continued._system_attrs[attrs.RESUMED_FROM] = 3  # ran only the epochs after its checkpoint
    running = create_trial(state=TrialState.RUNNING)
    assert estimate_trial([failed, continued, running], promoted=False, epochs=10) is None


def test_the_decision_takes_the_margin_and_the_whole_limit_into_account() -> None:
    estimate = estimate_trial([finished(100)], promoted=False, epochs=10)
    assert estimate is not None and estimate.needed_s == pytest.approx(110)  # 10 % margin
    assert decide_admission(estimate, left_s=111, limit_s=3600).admit
    refused = decide_admission(estimate, left_s=109, limit_s=3600)
    assert not refused.admit and "needs ~110 s" in refused.why and "109 s left" in refused.why
    # Longer than the whole limit: no task could finish it, refusing would only requeue tasks forever.
    assert decide_admission(estimate, left_s=10, limit_s=100).admit
    # Nothing to estimate from: take it.
    assert decide_admission(None, left_s=0, limit_s=100).admit
    small = estimate_trial([finished(1)], promoted=False, epochs=10)
    assert small is not None and small.needed_s == pytest.approx(1 + MARGIN_MIN_S)
