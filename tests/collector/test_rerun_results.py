"""summarize_confirmation, pooled_sd and format_confirmation on studies built with real Optuna trials."""

from __future__ import annotations

import math
import statistics

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpc_tune import attrs
from hpc_tune.collector.rerun_results import (
    format_confirmation,
    load_confirmation,
    pooled_sd,
    summarize_confirmation,
)
from hpc_tune.collector.summary import Confirmation, ConfirmedConfig

LR = {"lr": FloatDistribution(1e-4, 1.0, log=True)}


def study_with(values: list[float | None], states: list[TrialState] | None = None) -> optuna.Study:
    """An original study: trial i has lr = (i + 1) / 100 and value ``values[i]``."""
    study = optuna.create_study(direction="maximize")
    for i, value in enumerate(values):
        state = states[i] if states else TrialState.COMPLETE
        study.add_trial(
            create_trial(
                state=state,
                value=value if state == TrialState.COMPLETE else None,
                params={"lr": (i + 1) / 100},
                distributions=LR,
            )
        )
    return study


def confirm_runs(
    original: optuna.Study, runs: dict[int, list[float | None]], study: optuna.Study | None = None
) -> list[FrozenTrial]:
    """The confirmation trials: for source n, one trial per entry (None: a failed run), seeds 1, 2, ..."""
    confirm = study or optuna.create_study(direction="maximize")
    for source, values in runs.items():
        for seed, value in enumerate(values, start=1):
            confirm.add_trial(
                create_trial(
                    state=TrialState.COMPLETE if value is not None else TrialState.FAIL,
                    value=value,
                    params=original.trials[source].params,
                    distributions=LR,
                    user_attrs={attrs.CONFIRMS_TRIAL: source},
                    system_attrs={attrs.SEED: seed},
                )
            )
    return confirm.trials


def by_source(summary: Confirmation) -> dict[int, ConfirmedConfig]:
    return {c.source_trial: c for c in summary.configs}


def test_single_seed_winner_that_was_noise_is_not_the_pick() -> None:
    original = study_with([0.90, 0.80, 0.70])
    # Trial 0 won with one lucky seed; trial 1 is better on average.
    summary = summarize_confirmation(
        original.trials,
        confirm_runs(original, {0: [0.70, 0.72, 0.74], 1: [0.79, 0.81, 0.80], 2: [0.73, 0.75, 0.74]}),
        "maximize",
        "val_acc",
        study="s-confirm",
    )
    configs = by_source(summary)
    assert summary.pick == 1
    assert summary.single_winner_not_mean_winner is True
    assert summary.ranking_changed is True
    assert [c.source_trial for c in summary.configs] == [1, 2, 0]  # best mean first
    assert (configs[0].rank_single, configs[0].rank_mean) == (1, 3)
    assert (configs[1].rank_single, configs[1].rank_mean) == (2, 1)
    assert configs[1].mean == pytest.approx(0.80)
    assert configs[1].sd == pytest.approx(statistics.stdev([0.79, 0.81, 0.80]))
    assert configs[1].values == [0.79, 0.81, 0.80] and configs[1].n == 3
    assert configs[0].single_value == 0.90 and configs[0].params == {"lr": 0.01}
    assert summary.study == "s-confirm" and summary.seeds == 3 and summary.metric == "val_acc"


def test_confirmed_winner_keeps_its_rank() -> None:
    original = study_with([0.90, 0.80])
    summary = summarize_confirmation(
        original.trials, confirm_runs(original, {0: [0.88, 0.86], 1: [0.79, 0.81]}), "maximize"
    )
    assert summary.pick == 0
    assert summary.ranking_changed is False
    assert summary.single_winner_not_mean_winner is False


def test_minimize_ranks_the_lowest_mean_first() -> None:
    original = study_with([0.10, 0.20])
    summary = summarize_confirmation(
        original.trials, confirm_runs(original, {0: [0.30, 0.32], 1: [0.21, 0.19]}), "minimize"
    )
    assert summary.pick == 1
    assert by_source(summary)[0].rank_single == 1
    assert summary.single_winner_not_mean_winner is True


def test_one_seed_has_no_sd_and_failed_runs_do_not_count() -> None:
    original = study_with([0.9, 0.8])
    summary = summarize_confirmation(
        original.trials, confirm_runs(original, {0: [0.85, None], 1: [None, None]}), "maximize"
    )
    configs = by_source(summary)
    assert configs[0].n == 1 and configs[0].sd is None and configs[0].mean == 0.85
    assert configs[1].n == 0 and configs[1].mean is None and configs[1].rank_mean is None
    assert summary.pick == 0
    assert [c.source_trial for c in summary.configs] == [0, 1]  # no mean: last
    assert pooled_sd(summary) is None  # no configuration with two runs
    assert pooled_sd(None) is None
    assert "pick: trial 0 (best mean, also the single-seed winner)" in format_confirmation(summary)


def test_pooled_sd_weights_each_configuration_by_its_degrees_of_freedom() -> None:
    original = study_with([0.9, 0.8, 0.7])
    a, b = [0.80, 0.84, 0.82], [0.70, 0.76]
    summary = summarize_confirmation(
        original.trials, confirm_runs(original, {0: a, 1: b, 2: [0.5]}), "maximize"
    )
    expected = math.sqrt((2 * statistics.variance(a) + 1 * statistics.variance(b)) / 3)
    assert pooled_sd(summary) == pytest.approx(expected)


def test_no_run_finished_yet_means_no_pick() -> None:
    original = study_with([0.9])
    summary = summarize_confirmation(original.trials, confirm_runs(original, {0: [None]}), "maximize")
    assert summary.pick is None and summary.single_winner_not_mean_winner is False
    assert "pick: none yet" in format_confirmation(summary)


def test_trials_that_confirm_nothing_are_ignored() -> None:
    original = study_with([0.9])
    confirm = optuna.create_study(direction="maximize")
    confirm.add_trial(
        create_trial(state=TrialState.COMPLETE, value=5.0, params={"lr": 0.5}, distributions=LR)
    )
    summary = summarize_confirmation(original.trials, confirm.trials, "maximize")
    assert summary.configs == [] and summary.pick is None


def test_format_names_the_single_winner_and_its_rank_by_mean() -> None:
    original = study_with([0.90, 0.80])
    summary = summarize_confirmation(
        original.trials,
        confirm_runs(original, {0: [0.70, 0.72], 1: [0.80, 0.82]}),
        "maximize",
        "val_acc",
        study="s-confirm",
    )
    text = format_confirmation(summary)
    assert text.splitlines()[0] == (
        "confirmation s-confirm: 2 configuration(s) x 2 new seed(s), val_acc (maximize)"
    )
    assert "0.81 ± 0.01414" in text
    assert text.splitlines()[-1] == (
        "pick: trial 1 (best mean); the single-seed winner, trial 0, ranks 2 by mean"
    )


def test_load_confirmation_finds_the_linked_study_on_the_same_storage() -> None:
    storage = optuna.storages.InMemoryStorage()
    original = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for value in (0.9, 0.8):
        original.add_trial(
            create_trial(state=TrialState.COMPLETE, value=value, params={"lr": 0.1}, distributions=LR)
        )
    assert load_confirmation(storage, original) is None  # no link yet
    original.set_user_attr(attrs.CONFIRMATION_STUDY, "s-confirm")
    assert load_confirmation(storage, original) is None  # linked, but the study is gone
    confirm = optuna.create_study(study_name="s-confirm", storage=storage, direction="maximize")
    confirm_runs(original, {1: [0.85, 0.87]}, confirm)
    found = load_confirmation(storage, original)
    assert found is not None and found.study == "s-confirm"
    assert [(c.source_trial, c.n) for c in found.configs] == [(1, 2)]
