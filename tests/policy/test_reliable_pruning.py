"""The pruner with ``n_warmup_steps: auto``: it prunes only from the epoch the study's own completed trials
show to be reliable, so slow starters that win late survive, where a fixed short warm-up kills them."""

from __future__ import annotations

import math

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpc_tune.config import parse_config
from hpc_tune.config.lint import lint
from hpc_tune.policy.reliable_pruning import ReliableEpochPruner, reliable_epoch
from hpc_tune.policy.strategy import make_pruner

EPOCHS = 12


def curve(x: float, epoch: int) -> float:
    """x > 0.6 starts slowly and wins late (final about 0.95, ahead from epoch 8); the others rise fast and
    end at 0.80-0.86."""
    if x > 0.6:
        return (0.93 + 0.02 * x) * (1 - math.exp(-epoch / 3))
    return (0.8 + 0.1 * x) * (1 - 0.5**epoch)


def complete_trial(x: float) -> optuna.trial.FrozenTrial:
    values = {e: curve(x, e) for e in range(1, EPOCHS + 1)}
    return create_trial(
        params={"x": x},
        distributions={"x": FloatDistribution(0.0, 1.0)},
        value=values[EPOCHS],
        intermediate_values=values,
    )


def test_the_reliable_epoch_is_where_early_ranks_start_to_agree_with_the_final_ones() -> None:
    xs = [0.05, 0.2, 0.35, 0.5, 0.65, 0.8, 0.95, 0.1, 0.7, 0.9]
    trials = [complete_trial(x) for x in xs]
    epoch = reliable_epoch(trials)
    # early on the fast starters lead, so the ranking is inverted; by the end the slow starters lead
    assert epoch is not None and 6 <= epoch <= EPOCHS
    rho_before = reliable_epoch(trials, threshold=0.99)
    assert rho_before is not None and rho_before >= epoch


def test_no_reliable_epoch_with_too_few_trials_or_when_even_the_last_epoch_disagrees() -> None:
    assert reliable_epoch([complete_trial(x) for x in (0.1, 0.9, 0.5)]) is None
    shuffled = [
        create_trial(
            params={"x": x},
            distributions={"x": FloatDistribution(0.0, 1.0)},
            value=final,
            intermediate_values={e: 1.0 - final + 0.01 * e for e in range(1, EPOCHS + 1)},
        )
        for x, final in zip((0.1, 0.3, 0.5, 0.7, 0.9, 0.2), (0.9, 0.8, 0.7, 0.6, 0.5, 0.85), strict=True)
    ]
    assert reliable_epoch(shuffled) is None


def run(pruner: optuna.pruners.BasePruner) -> optuna.Study:
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.RandomSampler(seed=3), pruner=pruner
    )
    # the same first trials for both pruners: a mix of slow and fast starters
    for x in (0.1, 0.9, 0.3, 0.7, 0.5, 0.8):
        study.enqueue_trial({"x": x})

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        for epoch in range(1, EPOCHS + 1):
            trial.report(curve(x, epoch), epoch)
            if epoch < EPOCHS and trial.should_prune():
                raise optuna.TrialPruned()
        return curve(x, EPOCHS)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=30)
    return study


def slow(study: optuna.Study, state: TrialState) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if t.params["x"] > 0.6 and t.state == state]


def test_auto_warm_up_keeps_the_late_winners_a_fixed_short_warm_up_prunes() -> None:
    fixed = run(optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2))
    pruner = ReliableEpochPruner(optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0))
    auto = run(pruner)
    reliable = pruner.reliable_from(auto)
    assert reliable is not None and 2 < reliable < EPOCHS
    # the fixed warm-up judges at epoch 2, where the slow starters trail: it prunes eventual winners there
    assert slow(fixed, TrialState.PRUNED) and all(t.last_step == 2 for t in slow(fixed, TrialState.PRUNED))
    # auto prunes only from the reliable epoch, and then only what would have finished below every
    # slow starter it kept
    pruned = [t for t in auto.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.last_step >= reliable for t in pruned)
    kept = slow(auto, TrialState.COMPLETE)
    assert len(kept) > len(slow(fixed, TrialState.COMPLETE))
    assert all(
        curve(t.params["x"], EPOCHS) < min(k.value for k in kept) for t in slow(auto, TrialState.PRUNED)
    )


def test_auto_from_the_config() -> None:
    config = parse_config(
        {
            "study": "s",
            "epochs": EPOCHS,
            "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
            "pruner": {"type": "median", "n_warmup_steps": "auto"},
        }
    )
    assert isinstance(make_pruner(config), ReliableEpochPruner)
    assert not [f for f in lint(config) if f.key == "pruner.n_warmup_steps"]
    patient = config.model_copy(update={"pruner": config.pruner.model_copy(update={"type": "patience"})})
    assert isinstance(make_pruner(patient), optuna.pruners.PatientPruner)
