"""The replay machinery of benchmarks/search_efficiency.py on a tiny synthetic table: what a search is
charged, when it counts as having found a good configuration, and that asynchronous workers count every
epoch once.

The benchmark's figures are only as good as this bookkeeping: a pruned trial charged its full epochs would
hide the whole point of pruning, and an epoch counted twice by overlapping workers would make parallel
search look worse than it is."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

from benchmarks.search_efficiency import (
    Point,
    Replay,
    Strategy,
    Table,
    epochs_to_target,
    regret_at,
    run_repetition,
    strategies,
)

EPOCHS = 8
FINAL = {  # lr -> final val_acc at full data: 1e-2 is best; 3e-2 is within 0.5 % of it, 1e-3 is not
    1e-3: 0.8946,
    1e-2: 0.9,
    3e-2: 0.8964,
    1e-1: 0.5,
}


def _curve(final: float, epochs: int, late: bool) -> list[float]:
    """Rises to ``final``; a late starter is lowest early, so a median pruner stops it."""
    shape = [(e / epochs) ** (3 if late else 0.5) for e in range(1, epochs + 1)]
    return [round(0.1 + (final - 0.1) * s, 4) for s in shape]


def synthetic_table() -> Table:
    configs: list[dict[str, Any]] = []
    for lr, final in FINAL.items():
        for optimizer in ("adamw", "sgd"):
            penalty = 0.0 if optimizer == "adamw" else 0.2
            late = lr == 1e-3
            full = [_curve(final - penalty, EPOCHS, late), _curve(final - penalty, EPOCHS, late)]
            if lr == 1e-1:
                full[1] = full[1][:3]  # diverges in epoch 4 with seed 1
            configs.append(
                {
                    "params": {"lr": lr, "optimizer": optimizer},
                    "full": full,
                    "short": [_curve(final - penalty, EPOCHS // 4, late)] * 2,
                    "subset": [_curve(final - penalty - 0.05, EPOCHS, late)] * 2,
                }
            )
    return Table.from_dict(
        {
            "direction": "maximize",
            "epochs": EPOCHS,
            "short_epochs": EPOCHS // 4,
            "data_fraction": 0.5,
            "seeds": [0, 1],
            "chance": 0.1,
            "grid": {"lr": list(FINAL), "optimizer": ["adamw", "sgd"]},
            "space": {
                "lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True},
                "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
            },
            "configs": configs,
        }
    )


def aggressive(name: str = "random + median", fidelity: str = "full") -> Strategy:
    return Strategy(
        name,
        lambda rep, worker: optuna.samplers.RandomSampler(seed=100 * rep + worker),
        lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        fidelity,
    )


def config_of(table: Table, lr: float, optimizer: str = "adamw") -> int:
    return table.params.index({"lr": lr, "optimizer": optimizer})


def reported_epochs(study: optuna.Study) -> dict[int, int]:
    return {t.number: len(t.intermediate_values) for t in study.get_trials(deepcopy=False)}


def test_a_pruned_trial_costs_only_the_epochs_it_ran() -> None:
    table = synthetic_table()
    replay = Replay(table, aggressive(), rep=0, workers=1)
    result = replay.run(cap=30 * EPOCHS, enough=30 * EPOCHS)

    pruned = [r for r in result.trials if r.state == "PRUNED"]
    assert pruned, "the median pruner should stop the late starters"
    assert all(r.epochs_run < EPOCHS for r in pruned)
    reported = reported_epochs(replay.workers[0].study)
    for run in result.trials:
        # Diverged trials pay the epoch that produced no value; every other epoch was reported exactly once.
        assert reported[run.number] == run.epochs_run - (1 if run.state == "FAIL" else 0)
    assert result.spent == pytest.approx(sum(r.epochs_run for r in result.trials))
    assert result.spent < EPOCHS * len(result.trials)


def test_a_subset_epoch_costs_its_data_fraction() -> None:
    table = synthetic_table()
    result = Replay(table, aggressive("screening", "subset"), rep=1, workers=1).run(12 * EPOCHS, 12 * EPOCHS)
    assert result.spent == pytest.approx(0.5 * sum(r.epochs_run for r in result.trials))


def test_within_half_a_percent_is_the_target_and_regret_reads_the_pick_at_the_budget() -> None:
    table = synthetic_table()
    assert table.best == pytest.approx(0.9)
    far, near, best = config_of(table, 1e-3), config_of(table, 3e-2), config_of(table, 1e-2)
    assert not table.within_target(far)  # 0.6 % below the best
    assert table.within_target(near)  # 0.4 % below
    points = [Point(10, far), Point(20, near), Point(30, far), Point(40, best)]
    assert epochs_to_target(points, table) == 20
    assert epochs_to_target([Point(10, far)], table) == math.inf
    assert regret_at(points, table, 35) == pytest.approx(0.9 - 0.8946)
    assert regret_at(points, table, 25) == pytest.approx(0.9 - 0.8964)
    assert math.isnan(regret_at(points, table, 5))


def test_a_diverged_seed_counts_as_chance_in_the_truth() -> None:
    table = synthetic_table()
    assert table.truth[config_of(table, 1e-1)] == pytest.approx((0.5 + 0.1) / 2)


def test_the_trap_pays_for_training_its_winner_fully() -> None:
    table = synthetic_table()
    trap = next(s for s in strategies(table) if "trap" in s.name)
    result = Replay(table, trap, rep=2, workers=1).run(20 * EPOCHS, 20 * EPOCHS)
    assert all(r.epochs_run == EPOCHS // 4 for r in result.trials)
    # Every moment's cost is the short trials so far plus one whole training of the winner.
    assert result.points[0].cost >= EPOCHS // 4 + EPOCHS
    assert all((p.cost - EPOCHS) % (EPOCHS // 4) == 0 for p in result.points)


def test_four_asynchronous_workers_count_every_epoch_once() -> None:
    table = synthetic_table()
    replay = Replay(table, aggressive(), rep=3, workers=4)
    result = replay.run(cap=40 * EPOCHS, enough=40 * EPOCHS)

    assert result.max_running == 4
    assert len({r.number for r in result.trials}) == len(result.trials)
    reported = reported_epochs(replay.workers[0].study)  # one storage: every worker's trials
    assert set(reported) == {r.number for r in result.trials}
    for run in result.trials:
        assert reported[run.number] == run.epochs_run - (1 if run.state == "FAIL" else 0)
    assert result.spent == pytest.approx(sum(r.epochs_run for r in result.trials))
    # Costs of the picks only grow: each moment is later than the one before.
    costs = [p.cost for p in result.points]
    assert costs == sorted(costs)


def test_hpctune_phases_run_exactly_their_campaign_with_four_workers() -> None:
    table = synthetic_table()
    phases = next(s for s in strategies(table) if s.campaign is not None)
    assert phases.campaign is not None
    campaign = phases.campaign.model_copy(update={"trials": 9})
    replay = Replay(table, phases, rep=0, workers=4, campaign=campaign)
    result = replay.run(cap=1000 * EPOCHS, enough=1000 * EPOCHS)
    assert result.finished
    assert len(result.trials) == 9
    trials = replay.workers[0].study.get_trials(deepcopy=False)
    by_phase = [sum(1 for t in trials if t.user_attrs.get("phase") == p) for p in (1, 2)]
    assert by_phase == [4, 5]
    # Phase 2 tunes only the optimizer: lr is pinned to phase 1's best.
    assert len({t.params["lr"] for t in trials if t.user_attrs.get("phase") == 2}) == 1


def test_a_repetition_gives_both_figures() -> None:
    table = synthetic_table()
    default = next(s for s in strategies(table) if s.name.startswith("hpctune default"))
    figures = run_repetition(table, default, rep=0, workers=1, cap=40 * EPOCHS, budgets=(5 * EPOCHS,))
    assert figures["epochs_to_target"] > 0
    assert not math.isnan(figures["regret"][5 * EPOCHS])


def test_every_shipped_table_is_a_whole_grid_of_real_curves() -> None:
    """The tables in benchmarks/curves/ are what the figures in docs/strategies.md come from: every grid
    point with every seed at every fidelity, no curve longer than its fidelity runs, every grid value inside
    the range a search samples from (else snapping would bias the search)."""
    import gzip
    import itertools
    import json
    from pathlib import Path

    paths = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "curves").glob("*.json.gz"))
    assert {p.name for p in paths} >= {"digits.json.gz", "shapes.json.gz", "noisy.json.gz"}
    for path in paths:
        with gzip.open(path, "rt") as handle:
            data = json.load(handle)
        grid = data["grid"]
        expected = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
        assert [c["params"] for c in data["configs"]] == expected, path.name
        lengths = {"full": data["epochs"], "short": data["short_epochs"], "subset": data["epochs"]}
        for config in data["configs"]:
            for fidelity, epochs in lengths.items():
                curves = config[fidelity]
                assert len(curves) == len(data["seeds"])
                assert all(1 <= len(c) <= epochs and all(0 <= v <= 1 for v in c) for c in curves)
        for name, values in grid.items():
            spec = data["space"][name]
            if spec["type"] == "categorical":
                assert set(values) <= set(spec["choices"])
            else:
                assert all(spec["low"] <= v <= spec["high"] for v in values), (path.name, name)
        table = Table.from_dict(data, name=path.name)
        assert sum(table.within_target(i) for i in range(len(table.params))) >= 1


def test_the_trap_task_trains_with_hpctunes_engine() -> None:
    from benchmarks.curves.make_tables import TABLES, configurations, train_curve

    spec = TABLES["noisy"]
    assert len(configurations(spec)) == 144
    params = {"lr": 3e-3, "dropout": 0.6, "weight_decay": 0.1, "hidden": 64, "optimizer": "adamw"}
    full = train_curve(spec.task, params, seed=0, epochs=2, data_fraction=1.0, batch_size=64)
    subset = train_curve(spec.task, params, seed=0, epochs=2, data_fraction=0.25, batch_size=64)
    assert len(full) == len(subset) == 2
    assert all(spec.chance < v < 1 for v in full)  # 4 classes: it learns from the first epoch
    assert full != subset


def reps(*epochs: float) -> list[dict[str, Any]]:
    return [{"epochs_to_target": e} for e in epochs]


def test_the_verdict_holds_the_default_to_each_restated_target_per_cell() -> None:
    from benchmarks.search_efficiency import DEFAULT, OPTUNA, verdict

    table = synthetic_table()
    met = {(0, 1): reps(300, 330, 360), (OPTUNA, 1): reps(160, 150, 170), (DEFAULT, 1): reps(100, 90, 110)}
    line = verdict(table, met, [1])[0]
    assert line.startswith(f"{table.name}, 1 worker: all targets met; floor 8 epochs; ")
    assert "never behind Optuna's defaults (epochs 100 vs 160, misses 0% vs 0%): met" in line
    assert "on the Pareto front of (epochs, misses): met" in line
    assert ">= 3x fewer epochs than random (3.30x; the floor allows 41.2x): met" in line
    assert line.endswith("never more epochs than random (100 vs 330): met")
    # Fewer epochs in the median than Optuna's defaults, but more misses: behind them, yet on the front.
    missing = {**met, (DEFAULT, 1): reps(90, 95, math.inf)}
    line = verdict(table, missing, [1])[0]
    assert "1 target(s) NOT met" in line
    assert "never behind Optuna's defaults (epochs 95 vs 160, misses 33% vs 0%): NOT met" in line
    assert "on the Pareto front of (epochs, misses): met" in line
    # Another strategy measured in the cell that does better on both: named, with its figures.
    beaten = {**met, (5, 1): reps(50, 50, 50)}
    line = verdict(table, beaten, [1], names={5: "warm-up 10"})[0]
    assert "on the Pareto front of (epochs, misses) (beaten by warm-up 10: 50, 0%): NOT met" in line
    # More epochs than random, where random is fast: the 3x target is not asked, "never more" is.
    slow = {(0, 4): reps(10), (OPTUNA, 4): reps(20), (DEFAULT, 4): reps(20)}
    line = verdict(table, slow, [4])[0]
    assert ">= 3x fewer than random: not asked, the floor (29 epochs that keeps its 4 workers busy" in line
    assert "leaves random only 0.3x above it: -" in line
    assert line.endswith("never more epochs than random (20 vs 10): NOT met")
    # Random never reaching the target: the ratio says so instead of dividing by infinity.
    lost = {**met, (0, 1): reps(math.inf, math.inf, 300)}
    line = verdict(table, lost, [1])[0]
    assert ">= 3x fewer epochs than random (random never reached the target in the median): met" in line


def test_the_random_hit_rate_is_the_share_of_the_space_that_snaps_into_the_target() -> None:
    from benchmarks.search_efficiency import random_hit_rate

    # lr is log-uniform on [1e-3, 1e-1]; it snaps to 1e-2 or 3e-2 (both within the target with adamw) between
    # the log midpoints 10^-2.5 and 10^((log10(0.03) - 1) / 2); half of the draws pick adamw.
    low, high = -2.5, (math.log10(0.03) - 1) / 2
    expected = (high - low) / 2 * 0.5
    assert random_hit_rate(synthetic_table()) == pytest.approx(expected, abs=0.04)  # 2000 draws: sd 0.01


def test_a_search_that_waits_for_finished_trials_before_pruning_has_a_floor() -> None:
    from benchmarks.search_efficiency import DEFAULT, OPTUNA, gated_floor, verdict

    table = synthetic_table()
    assert gated_floor(table, 0.5, min_complete=5) == EPOCHS  # half the first draws hit
    assert gated_floor(table, 0.31, min_complete=5) == 2 * EPOCHS  # 1 - 0.69^2 = 0.52
    # Rarely hit: 5 trials run fully before any pruning, then the hit must finish too.
    assert gated_floor(table, 0.01, min_complete=5) == 6 * EPOCHS
    assert gated_floor(table, 0.01, min_complete=3) == 4 * EPOCHS

    # Random needs 15 trainings: the 3x target asks for at most 40 epochs. At a 5 % hit rate a search that may
    # prune from the first epoch could get there (8 + 10 misses of half an epoch), the gated one not (6
    # trainings): the verdict says why the default missed.
    results = {(0, 1): reps(120), (OPTUNA, 1): reps(60), (DEFAULT, 1): reps(60)}
    line = verdict(table, results, [1], hit_rate=0.05)[0]
    assert (
        ">= 3x fewer epochs than random (2.00x; the floor allows 9.2x) [waiting for 5 finished random trials "
        "before pruning costs at least 48 epochs here]: NOT met"
    ) in line
    # Within reach (a high hit rate), or no hit rate given: no such reason is claimed.
    assert "waiting for" not in verdict(table, results, [1], hit_rate=0.6)[0]
    assert "waiting for" not in verdict(table, results, [1])[0]


def test_any_search_has_a_floor_set_by_its_random_start_or_its_workers() -> None:
    from benchmarks.search_efficiency import DEFAULT, OPTUNA, search_floor, verdict

    table = synthetic_table()
    full_only = synthetic_table()
    del full_only.curves["subset"]
    # 1 - 0.79^3 = 0.51: the first hit is trial 3 in the median; the two misses cost an epoch each at least,
    # on full data, or an epoch of the table's half-data subset.
    assert search_floor(full_only, 1, 0.21)[0] == EPOCHS + 2
    assert search_floor(table, 1, 0.21)[0] == EPOCHS + 2 * 0.5
    assert "costs at least 1 epoch (0.5 of a full one on its data subset)" in search_floor(table, 1, 0.21)[1]
    assert search_floor(table, 1, 0.6)[0] == EPOCHS
    # Rarely hit: past TPE's 10 random startup trials the sampler may aim, so only those 10 misses count.
    assert search_floor(full_only, 1, 0.01)[0] == EPOCHS + 10
    assert "none of the first 10 hits in the median; each of them costs" in search_floor(table, 1, 0.01)[1]
    assert search_floor(table, 1)[0] == EPOCHS
    # 4 busy workers run an epoch each per round until the hit's last: the 3 after it in that round have not.
    assert search_floor(table, 4)[0] == 4 * EPOCHS - 3
    with pytest.raises(ValueError, match="hit rate"):
        search_floor(table, 1, -0.1)

    # Random search needs 3 trainings with 1 worker and 4 with 4, as on a table whose good region is wide.
    results = {
        (0, 1): reps(3 * EPOCHS),
        (OPTUNA, 1): reps(3 * EPOCHS),
        (DEFAULT, 1): reps(3 * EPOCHS),
        (0, 4): reps(4 * EPOCHS),
        (OPTUNA, 4): reps(4 * EPOCHS),
        (DEFAULT, 4): reps(4 * EPOCHS),
    }
    one, four = verdict(table, results, [1, 4], hit_rate=0.21)
    assert (
        ">= 3x fewer than random: not asked, the floor (9 epochs whose first trials are random draws, as "
        "TPE's are (1 draw in 4.8 is within the target, so the first hit is trial 3 in the median; each miss "
        "before it costs at least 1 epoch (0.5 of a full one on its data subset), the hit 8)) leaves random "
        "only 2.7x above it: -"
    ) in one
    assert (
        ">= 3x fewer than random: not asked, the floor (29 epochs that keeps its 4 workers busy (each trains "
        "in every round until a within-target trial has run its 8 epochs)) leaves random only 1.1x above it"
    ) in four
    # Where random search needs many trainings, the floor does not excuse the default.
    slow = {(0, 4): reps(30 * EPOCHS), (OPTUNA, 4): reps(20 * EPOCHS), (DEFAULT, 4): reps(12 * EPOCHS)}
    assert (
        ">= 3x fewer epochs than random (2.50x; the floor allows 8.3x): NOT met"
        in verdict(table, slow, [4])[0]
    )


def test_the_curve_forecast_stops_a_flat_loser_and_spares_a_climber() -> None:
    """The learning-curve extrapolation measured as a strategy: a curve that has levelled off is forecast
    near its level, one still climbing above its current value; once 5 trials finished, a trial whose most
    optimistic forecast is below the incumbent is stopped, a climber that can still pass it is not."""
    from benchmarks.curve_forecast import CurveForecastPruner, optimistic_forecast

    flat = [0.5 + 0.2 * (1 - 0.5**e) for e in range(1, 9)]  # levels off near 0.7
    climbing = [0.3 + 0.05 * e for e in range(1, 9)]  # 0.35 ... 0.70, still rising
    assert 0.69 < optimistic_forecast(flat, 40) < 0.75
    assert optimistic_forecast(climbing, 40) > 0.8
    assert optimistic_forecast([-v for v in flat], 40, maximize=False) == pytest.approx(
        -optimistic_forecast(flat, 40)
    )

    study = optuna.create_study(direction="maximize", pruner=CurveForecastPruner(40))
    for value in (0.9, 0.85, 0.8, 0.75, 0.7):
        study.add_trial(
            optuna.trial.create_trial(
                value=value, intermediate_values={e: value for e in range(1, 41)}, params={}, distributions={}
            )
        )

    def decision(curve: list[float]) -> bool:
        trial = study.ask()
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
        stop = trial.should_prune()
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return stop

    assert decision(flat)  # levelled off at 0.7 against an incumbent of 0.9
    assert not decision(climbing)  # 0.05 a epoch: it can still pass 0.9
    assert not decision(flat[:2])  # too few epochs to fit a curve


def _partial(study: optuna.Study, curve: list[float], state: optuna.trial.TrialState) -> None:
    study.add_trial(
        optuna.trial.create_trial(
            state=state,
            value=curve[-1] if state == optuna.trial.TrialState.COMPLETE else None,
            intermediate_values=dict(enumerate(curve, 1)),
            params={},
            distributions={},
        )
    )


def test_partial_curves_let_pruning_start_before_five_trials_finish_where_they_agree() -> None:
    """Evidence from running trials, measured as a strategy: five trials that have run half of their 40
    epochs and keep their order from epoch 2 on let a trial below their median be pruned with no trial
    finished; where their order at epoch 2 is reversed by epoch 20, nothing is pruned; curves too short
    (below the horizon) are no evidence."""
    from benchmarks.partial_evidence import PartialEvidencePruner

    running = optuna.trial.TrialState.RUNNING
    levels = (0.5, 0.6, 0.7, 0.8, 0.9)

    def study_with(curves: list[list[float]]) -> optuna.Study:
        study = optuna.create_study(direction="maximize", pruner=PartialEvidencePruner(40, horizon=0.5))
        for curve in curves:
            _partial(study, curve, running)
        return study

    def pruned(study: optuna.Study, curve: list[float]) -> bool:
        trial = study.ask()
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
        return trial.should_prune()

    agreeing = [[level * e / 20 for e in range(1, 21)] for level in levels]
    assert pruned(study_with(agreeing), [0.01 * e for e in range(1, 6)])  # far below the median at epoch 5
    assert not pruned(study_with(agreeing), [0.9 * e / 20 for e in range(1, 6)])  # on the best's track
    # Ranked one way at the start and the other way at epoch 20 (late starters win): no epoch is trusted.
    crossing = [[(1.4 - level) if e < 10 else level for e in range(1, 21)] for level in levels]
    assert not pruned(study_with(crossing), [0.01 * e for e in range(1, 6)])
    short = [curve[:10] for curve in agreeing]  # epoch 10 of 40: below the horizon of half the run
    assert not pruned(study_with(short), [0.01 * e for e in range(1, 6)])


def test_screening_promotes_more_while_the_subset_ranking_disagrees_with_full_training() -> None:
    """Promotion that goes on while the best full result is among the last two promoted: where the subset
    ranks configurations as full training does (the synthetic table), it promotes what top-3 promotes;
    where the subset's ranking is reversed, it promotes more (never past its cap of 9), from the same
    subset trials, and its pick at the end is at least as good."""
    table = synthetic_table()
    listed = strategies(table)
    plain = next(s for s in listed if s.fidelity == "subset" and not s.promote_until_agree)
    more = next(s for s in listed if s.promote_until_agree)
    assert more.promote_top == plain.promote_top == 3 and more.promote_until_agree == 9

    def both(t: Table, rep: int) -> tuple[Replay, Replay]:
        a, b = Replay(t, plain, rep=rep, workers=1), Replay(t, more, rep=rep, workers=1)
        a.run(30 * EPOCHS, 30 * EPOCHS)
        b.run(30 * EPOCHS, 30 * EPOCHS)
        assert [r.config for r in a.runs] == [r.config for r in b.runs]  # the search itself is the same
        return a, b

    for rep in range(3):
        a, b = both(table, rep)
        assert set(a.promoted) == set(b.promoted)
    reversed_table = synthetic_table()
    # The subset now ranks every configuration opposite to its full-data truth.
    reversed_table.curves["subset"] = [
        [_curve(1.0 - truth, EPOCHS, False)] * 2 for truth in reversed_table.truth
    ]
    extended = 0
    for rep in range(3):
        a, b = both(reversed_table, rep)
        assert set(a.promoted) <= set(b.promoted) and len(b.promoted) >= len(a.promoted)
        extended += len(b.promoted) > len(a.promoted)
        regret = [reversed_table.regret(r.points[-1].config) for r in (a, b)]
        assert regret[1] <= regret[0]
    assert extended  # the mechanism fired: more full trainings where the rankings disagree
