"""The study analysis on real Optuna studies built in memory: every warning fires on a study made to trigger
it, with its numbers, and none fires on a clean study; importance, per-phase importance, range widening, and
JSON output. No storage, no records on disk: records are the dicts the collector would have read."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpc_tune import attrs
from hpc_tune.collector.analysis import analyze
from hpc_tune.collector.analysis_model import Analysis, Importance, ImportanceSkipped
from hpc_tune.collector.checks import WARNING_ORDER, Finding
from hpc_tune.collector.checks.context import NumericRange, ranges_of, widened_range
from hpc_tune.collector.checks.tmax_mismatch import fit_cosine_schedule

LR = FloatDistribution(1e-4, 1e-1, log=True)
DROPOUT = FloatDistribution(0.0, 0.5)
DISTS = {"lr": LR, "dropout": DROPOUT}
METRIC = "val_acc"
EPOCHS = 10


def cosine_lr(peak: float, epochs: int, t_max: int | None = None) -> dict[int, float]:
    """hpctune's engine: per-step cosine, lr logged at the end of each epoch (minimum at epoch t_max)."""
    t = t_max or epochs
    return {e: peak * (1 + math.cos(math.pi * e / t)) / 2 for e in range(1, epochs + 1)}


def torch_cosine_lr(peak: float, epochs: int, t_max: int) -> dict[int, float]:
    """torch's CosineAnnealingLR stepped per epoch, lr logged at the start of each epoch."""
    return {e: peak * (1 + math.cos(math.pi * (e - 1) / t_max)) / 2 for e in range(1, epochs + 1)}


class Built:
    """An in-memory Optuna study plus the JSON records the collector would have read for it."""

    def __init__(self, direction: str = "maximize", metric: str = METRIC) -> None:
        self.direction = direction
        self.metric = metric
        self.study = optuna.create_study(direction=direction)
        self.records: dict[int, dict[str, Any]] = {}

    def add(
        self,
        value: float | None = None,
        *,
        params: dict[str, Any],
        state: TrialState = TrialState.COMPLETE,
        dists: dict[str, Any] | None = None,
        curve: dict[int, float] | None = None,
        lrs: dict[int, float] | None = None,
        extra: dict[int, dict[str, Any]] | None = None,
        user_attrs: dict[str, Any] | None = None,
        system_attrs: dict[str, Any] | None = None,
        record: dict[str, Any] | None = None,
    ) -> int:
        number = len(self.study.trials)
        dists = dists or {k: v for k, v in DISTS.items() if k in params}
        self.study.add_trial(
            create_trial(
                state=state,
                value=value if state == TrialState.COMPLETE else None,
                params=params,
                distributions=dists,
                user_attrs=user_attrs,
                system_attrs=system_attrs,
                intermediate_values={e: v for e, v in (curve or {}).items() if math.isfinite(v)},
            )
        )
        if record is not None or curve or lrs or extra:
            epochs_seen = sorted({*(curve or {}), *(lrs or {}), *(extra or {})})
            epochs = []
            for e in epochs_seen:
                row: dict[str, Any] = {"epoch": e}
                if curve and e in curve:
                    row[self.metric] = curve[e] if math.isfinite(curve[e]) else None
                if lrs and e in lrs:
                    row["lr"] = lrs[e]
                row.update((extra or {}).get(e, {}))
                epochs.append(row)
            finite = {e: v for e, v in (curve or {}).items() if math.isfinite(v)}
            sign = 1 if self.direction == "maximize" else -1
            best_epoch = max(finite, key=lambda e: sign * finite[e]) if finite else None
            self.records[number] = {
                "trial": number,
                "state": state.name,
                "epochs": epochs,
                "best": None
                if best_epoch is None
                else {"epoch": best_epoch, self.metric: finite[best_epoch]},
                **(record or {}),
            }
        return number

    def analyze(self, *, with_records: bool = True, **kw: Any) -> Analysis:
        return analyze(
            self.study.get_trials(deepcopy=False),
            direction=self.direction,
            records=self.records if with_records else None,
            metric=self.metric,
            **kw,
        )


def accuracy(lr: float) -> float:
    """A clear learning-rate effect with its optimum inside the range (3e-3, mid-decades of [1e-4, 1e-1])."""
    return 0.9 - 0.05 * (math.log10(lr) - math.log10(3e-3)) ** 2


def rising_curve(final: float, epochs: int = EPOCHS) -> dict[int, float]:
    """Every trial improves by the same amounts: ranks are the same at every epoch."""
    return {e: final - 0.3 * math.exp(-e / 3) + 0.3 * math.exp(-epochs / 3) for e in range(1, epochs + 1)}


def clean_study(n: int = 30, seed: int = 0) -> Built:
    """~30 complete trials, best inside a log lr range, clear lr effect, stable curves, a cosine whose T_max
    is the epochs run, no pruning, a baseline worse than the best."""
    rng = np.random.default_rng(seed)
    built = Built()
    lrs = 10 ** (-4 + 3 * (np.arange(n) + 0.5) / n)
    dropouts = 0.1 + 0.3 * (np.arange(n) + 0.5) / n  # a noise parameter, kept off its edges
    for lr, dropout in zip(rng.permutation(lrs), rng.permutation(dropouts), strict=True):
        value = accuracy(float(lr)) + float(rng.normal(0, 0.002))
        built.add(
            value,
            params={"lr": float(lr), "dropout": float(dropout)},
            curve=rising_curve(value),
            lrs=cosine_lr(float(lr), EPOCHS),
        )
    base = accuracy(1e-2) - 0.01
    built.add(
        base,
        params={"lr": 1e-2, "dropout": 0.25},
        curve=rising_curve(base),
        lrs=cosine_lr(1e-2, EPOCHS),
        user_attrs={"baseline": True},
    )
    return built


def codes(analysis: Analysis) -> list[str]:
    return [w.code for w in analysis.warnings]


def warning(analysis: Analysis, code: str) -> Any:
    found = [w for w in analysis.warnings if w.code == code]
    assert len(found) == 1, codes(analysis)
    return found[0]


def only_builtin_json(obj: Any) -> None:
    """No numpy scalars, no NaN, string keys: what json.dumps(allow_nan=False) and a JSON round trip keep."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, str), k
            only_builtin_json(v)
    elif isinstance(obj, list):
        for v in obj:
            only_builtin_json(v)
    else:
        assert obj is None or type(obj) in (bool, int, float, str), (type(obj), obj)
        if isinstance(obj, float):
            assert math.isfinite(obj)


# ------------------------------------------------------------------------------------------- the clean study
@pytest.mark.parametrize("with_records", [True, False])
def test_clean_study_raises_no_warning(with_records: bool) -> None:
    analysis = clean_study().analyze(with_records=with_records)
    assert analysis.warnings == []
    assert analysis.rank_correlation is not None
    assert analysis.rank_correlation.reliable_from == 1
    assert analysis.rank_correlation.pruned_at == {}
    assert analysis.screening is None
    assert analysis.pruning_cost.model_dump() == {"overtaken": [], "count": 0}
    assert set(analysis.ranges) == {"lr", "dropout"}


def test_output_is_plain_json_and_warnings_come_in_their_order() -> None:
    built = Built()
    for i in range(6):  # few complete, best at the top of lr, a baseline that wins, failures, pruning
        lr = 10 ** (-3 + 0.4 * i)
        built.add(0.5 + 0.05 * i, params={"lr": lr, "dropout": 0.2}, curve=rising_curve(0.5 + 0.05 * i))
    built.add(0.99, params={"lr": 0.099, "dropout": 0.2}, user_attrs={"baseline": True})
    built.add(
        params={"lr": 0.09, "dropout": 0.1}, state=TrialState.FAIL, user_attrs={"reason": "nonfinite_loss"}
    )
    built.add(params={"lr": 0.02, "dropout": 0.1}, state=TrialState.PRUNED, curve={1: float("nan"), 2: 0.3})
    analysis = built.analyze()
    found = codes(analysis)
    assert {"baseline_beats_tuned", "best_at_boundary", "few_complete", "failures"} <= set(found)
    assert found == sorted(found, key=WARNING_ORDER.index)
    assert all(isinstance(w, Finding) for w in analysis.warnings)
    only_builtin_json(analysis.model_dump())
    dumped = analysis.model_dump(mode="json")
    assert json.loads(json.dumps(dumped, allow_nan=False)) == dumped == analysis.model_dump()


# ------------------------------------------------------------------------------------------------- ranges
def test_ranges_are_the_latest_recorded_distributions() -> None:
    built = Built()
    built.add(
        0.5,
        params={"lr": 1e-3, "layers": 2, "opt": "sgd"},
        dists={
            "lr": FloatDistribution(1e-4, 1e-2, log=True),
            "layers": IntDistribution(1, 4),
            "opt": CategoricalDistribution(["sgd", "adam"]),
        },
    )
    built.add(0.6, params={"lr": 1e-3}, dists={"lr": LR})
    ranges = {name: spec.model_dump() for name, spec in ranges_of(built.study.get_trials()).items()}
    assert ranges == {
        "layers": {"type": "int", "low": 1, "high": 4, "log": False, "step": 1},
        "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "step": None},
        "opt": {"type": "categorical", "choices": ["sgd", "adam"]},
    }


# --------------------------------------------------------------------------------------------- importance
def random_study(n: int, seed: int, phase: Any = None, effect: str = "lr") -> Built:
    rng = np.random.default_rng(seed)
    built = Built()
    for _ in range(n):
        lr = float(10 ** rng.uniform(-4, -1))
        dropout = float(rng.uniform(0, 0.5))
        signal = accuracy(lr) if effect == "lr" else 0.9 - 0.4 * abs(dropout - 0.2)
        built.add(
            signal + float(rng.normal(0, 0.002)),
            params={"lr": lr, "dropout": dropout},
            user_attrs=None if phase is None else {attrs.PHASE: phase},
        )
    return built


@pytest.mark.parametrize("kind", ["ped_anova", "fanova"])
def test_importance_ranks_the_influential_parameter_first(kind: str) -> None:
    analysis = random_study(60, seed=1).analyze(importance=kind)
    importance = analysis.importance
    assert isinstance(importance, Importance)
    assert importance.evaluator == kind and importance.n_trials == 60
    assert list(importance.overall) == ["lr", "dropout"]
    assert importance.overall["lr"] > importance.overall["dropout"]
    assert sum(importance.overall.values()) == pytest.approx(1.0, abs=1e-4)
    assert importance.by_phase == {}


def test_importance_per_phase_among_that_phases_trials() -> None:
    built = Built()
    rng = np.random.default_rng(2)
    for _ in range(20):  # phase 1 tunes lr, dropout pinned to its baseline
        lr = float(10 ** rng.uniform(-4, -1))
        built.add(accuracy(lr), params={"lr": lr, "dropout": 0.3}, user_attrs={attrs.PHASE: 1})
    for _ in range(20):  # phase 2 tunes dropout, lr pinned to phase 1's best; lr is noise-free here
        dropout = float(rng.uniform(0, 0.5))
        built.add(
            0.9 - 0.4 * abs(dropout - 0.2),
            params={"lr": 3e-3, "dropout": dropout},
            user_attrs={attrs.PHASE: 2},
        )
    importance = built.analyze().importance
    assert isinstance(importance, Importance)
    assert importance.by_phase["1"] == {"lr": 1.0}  # dropout took one value in phase 1: not assessed
    assert importance.by_phase["2"] == {"dropout": 1.0}
    assert set(importance.overall) == {"lr", "dropout"}


def test_importance_is_skipped_with_too_few_trials_or_nothing_varying() -> None:
    built = Built()
    for i in range(3):
        built.add(0.5 + i / 10, params={"lr": 10 ** (-3 + i / 2), "dropout": 0.2})
    skipped = built.analyze().importance
    assert isinstance(skipped, ImportanceSkipped) and "3 complete" in skipped.skipped
    fixed = Built()
    for i in range(5):
        fixed.add(0.5 + i / 10, params={"lr": 1e-3, "dropout": 0.2})
    assert fixed.analyze().importance.model_dump() == {"skipped": "no parameter took more than one value"}


# ---------------------------------------------------------------------------------------- best_at_boundary
def test_best_at_the_high_edge_of_a_log_range_suggests_one_more_decade() -> None:
    built = clean_study()
    built.add(
        0.95, params={"lr": 0.09, "dropout": 0.25}, curve=rising_curve(0.95), lrs=cosine_lr(0.09, EPOCHS)
    )
    w = warning(built.analyze(), "best_at_boundary")
    lr = w.details.params["lr"]
    assert (lr.edge, lr.best, lr.top_k_near) == ("high", 0.09, 1)
    assert (lr.suggested_low, lr.suggested_high) == (1e-4, 1.0)
    assert "dropout" not in w.details.params
    assert "lr=0.09" in w.message and "[0.0001, 1]" in w.action


def test_most_of_the_top_k_at_the_low_edge_of_a_linear_range_fires_without_the_best() -> None:
    built = clean_study()
    best_lrs = [2e-3, 3e-3, 4e-3, 5e-3, 2.5e-3]
    dropouts = [0.25, 0.01, 0.0, 0.02, 0.3]  # 3 of the top 5 within 5 % of 0; the best is not
    for i, (lr, dropout) in enumerate(zip(best_lrs, dropouts, strict=True)):
        built.add(
            0.96 - i * 0.001,
            params={"lr": lr, "dropout": dropout},
            curve=rising_curve(0.96 - i * 0.001),
            lrs=cosine_lr(lr, EPOCHS),
        )
    details = warning(built.analyze(), "best_at_boundary").details.params
    assert set(details) == {"dropout"}
    assert details["dropout"].model_dump() == {
        "edge": "low",
        "best": 0.25,
        "top_k_near": 3,
        "low": 0.0,
        "high": 0.5,
        "log": False,
        "suggested_low": 0.0,  # a non-negative range is not widened below 0
        "suggested_high": 0.5,
    }


def test_the_edge_of_a_log_range_is_measured_in_decades() -> None:
    # 2e-4 is 10 % of the decades of [1e-4, 1e-1] but only 0.1 % of its linear width: not at the edge.
    built = clean_study()
    built.add(
        0.95, params={"lr": 2e-4, "dropout": 0.25}, curve=rising_curve(0.95), lrs=cosine_lr(2e-4, EPOCHS)
    )
    assert "best_at_boundary" not in codes(built.analyze())
    built.add(
        0.97, params={"lr": 1.3e-4, "dropout": 0.25}, curve=rising_curve(0.97), lrs=cosine_lr(1.3e-4, EPOCHS)
    )
    lr = warning(built.analyze(), "best_at_boundary").details.params["lr"]
    assert (lr.edge, lr.suggested_low, lr.suggested_high) == ("low", 1e-5, 1e-1)


@pytest.mark.parametrize(
    ("spec", "edge", "expected"),
    [
        ({"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "step": None}, "low", (1e-5, 1e-1)),
        ({"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "step": None}, "high", (1e-4, 1.0)),
        ({"type": "int", "low": 8, "high": 256, "log": True, "step": 1}, "low", (1, 256)),
        ({"type": "int", "low": 8, "high": 256, "log": True, "step": 1}, "high", (8, 2560)),
        ({"type": "int", "low": 1, "high": 64, "log": True, "step": 1}, "low", (1, 64)),  # log ints stay >= 1
        ({"type": "float", "low": -1.0, "high": 1.0, "log": False, "step": None}, "low", (-2.0, 1.0)),
        ({"type": "float", "low": -1.0, "high": 1.0, "log": False, "step": None}, "high", (-1.0, 2.0)),
        ({"type": "float", "low": 0.2, "high": 0.6, "log": False, "step": None}, "low", (0.0, 0.6)),
        ({"type": "float", "low": 0.1, "high": 0.9, "log": False, "step": None}, "high", (0.1, 1.0)),
        ({"type": "float", "low": 0.5, "high": 1.5, "log": False, "step": 0.25}, "low", (0.0, 1.5)),
        ({"type": "float", "low": 1.0, "high": 2.0, "log": False, "step": 0.3}, "high", (1.0, 2.6)),
        ({"type": "int", "low": 10, "high": 20, "log": False, "step": 1}, "low", (5, 20)),
        ({"type": "int", "low": 10, "high": 13, "log": False, "step": 1}, "high", (10, 15)),
        ({"type": "int", "low": 2, "high": 20, "log": False, "step": 2}, "low", (0, 20)),
    ],
)
def test_widened_ranges(spec: dict[str, Any], edge: str, expected: tuple[float, float]) -> None:
    low, high = widened_range(NumericRange.model_validate(spec), edge)  # type: ignore[arg-type]
    assert (low, high) == pytest.approx(expected)
    assert low < high
    assert type(low) is type(spec["low"]) and type(high) is type(spec["high"])


# ------------------------------------------------------------------------------------------- mostly_pruned
def test_mostly_pruned_counts_finished_trials_without_retried_ones() -> None:
    built = Built()
    built.add(0.8, params={"lr": 1e-3, "dropout": 0.2}, curve=rising_curve(0.8))
    for i in range(19):
        built.add(params={"lr": 10 ** (-3 + i / 10), "dropout": 0.2}, state=TrialState.PRUNED, curve={1: 0.1})
    failed = built.add(
        params={"lr": 1e-2, "dropout": 0.2}, state=TrialState.FAIL, user_attrs={"reason": "walltime"}
    )
    built.add(
        params={"lr": 1e-2, "dropout": 0.2},
        state=TrialState.PRUNED,
        curve={1: 0.1},
        system_attrs={"failed_trial": failed, "retry_history": [failed]},
    )
    w = warning(built.analyze(), "mostly_pruned")
    assert w.details.model_dump() == {"pruned": 20, "finished": 21, "fraction": round(20 / 21, 4)}
    assert "20 of 21" in w.message
    assert "failures" not in codes(built.analyze())  # the hand-on FAIL was re-run: not a failure


# --------------------------------------------------------------------------------------------- all_similar
def test_all_similar_fires_when_no_parameter_matters_and_the_spread_is_tiny() -> None:
    rng = np.random.default_rng(0)
    built = Built()
    for _ in range(20):
        lr = float(10 ** rng.uniform(-3.5, -1.5))
        built.add(
            0.9 + float(rng.normal(0, 1e-4)), params={"lr": lr, "dropout": float(rng.uniform(0.05, 0.45))}
        )
    w = warning(built.analyze(), "all_similar")
    d = w.details
    values = sorted((t.value for t in built.study.trials), reverse=True)
    assert d.n == 20 and d.top == values[0] and d.median == pytest.approx(float(np.median(values)))
    assert d.relative_spread < 0.01
    assert all(t.p_adjusted >= 0.05 for t in d.tests.values())
    assert set(d.tests) == {"lr", "dropout"}


def test_all_similar_uses_the_seed_to_seed_sd_when_confirmation_ran() -> None:
    built = clean_study()
    values = sorted((t.value for t in built.study.trials), reverse=True)
    spread = values[0] - float(np.median(values))
    assert "all_similar" not in codes(built.analyze(confirmation_sd=spread / 3))
    d = warning(built.analyze(confirmation_sd=spread), "all_similar").details
    assert d.confirmation_sd == spread and d.top == values[0]


def test_an_interior_optimum_is_an_effect_even_with_a_tiny_spread() -> None:
    # A metric near its ceiling: 0.1 % between best and median, but lr clearly matters (non-monotonically).
    built = Built()
    for i in range(30):
        lr = 10 ** (-4 + 3 * (i + 0.5) / 30)
        built.add(
            0.99 - 0.0005 * (math.log10(lr) + 2.5) ** 2,
            params={"lr": lr, "dropout": 0.1 + (i * 7 % 30) / 100},
        )
    assert "all_similar" not in codes(built.analyze())


# ------------------------------------------------------------------------------------ baseline_beats_tuned
def test_baseline_beats_tuned_uses_the_baselines_standing_run() -> None:
    built = Built(direction="minimize", metric="val_loss")
    for i in range(12):
        built.add(0.5 + i / 100, params={"lr": 10 ** (-3.5 + i / 6), "dropout": 0.1 + i / 40})
    first = built.add(
        params={"lr": 1e-3, "dropout": 0.2}, state=TrialState.FAIL, user_attrs={"baseline": True}
    )
    rerun = built.add(
        0.42,
        params={"lr": 1e-3, "dropout": 0.2},
        user_attrs={"baseline": True},
        system_attrs={"failed_trial": first, "retry_history": [first]},
    )
    w = warning(built.analyze(), "baseline_beats_tuned")
    assert w.details.model_dump() == {
        "baseline_trial": rerun,
        "baseline_value": 0.42,
        "best_trial": 0,
        "best_value": 0.5,
    }
    assert "0.42" in w.message and "0.5" in w.message


# ---------------------------------------------------------------------------------------------- tmax_mismatch
def schedule_study(lr_curves: list[dict[int, float]], state: TrialState = TrialState.COMPLETE) -> Built:
    built = clean_study()
    for i, lrs in enumerate(lr_curves):
        epochs = max(lrs)
        value = 0.85 + i / 1000
        built.add(
            value if state == TrialState.COMPLETE else None,
            state=state,
            params={"lr": 3e-3, "dropout": 0.2},
            curve=rising_curve(value, epochs),
            lrs=lrs,
        )
    return built


def test_tmax_longer_than_the_run_is_found_from_the_lr_curve() -> None:
    w = warning(schedule_study([torch_cosine_lr(3e-3, 22, t_max=24)]).analyze(), "tmax_mismatch")
    assert "T_max ≈ 24 with 22 epochs run" in w.message
    (found,) = w.details.trials
    assert (found.t_max, found.epochs_run, found.source, found.rises_after) == (
        24.0,
        22,
        "lr_curve",
        None,
    )
    w = warning(schedule_study([cosine_lr(3e-3, 22, t_max=30)]).analyze(), "tmax_mismatch")
    assert w.details.trials[0].t_max == pytest.approx(30, abs=0.5)


def test_tmax_shorter_than_the_run_restarts_the_lr() -> None:
    w = warning(schedule_study([torch_cosine_lr(3e-3, 22, t_max=10)]).analyze(), "tmax_mismatch")
    (found,) = w.details.trials
    assert found.rises_after == 11 and found.t_max == pytest.approx(10, abs=0.1)
    assert "rises again after epoch 11" in w.message


@pytest.mark.parametrize(
    "lrs",
    [
        torch_cosine_lr(3e-3, 22, t_max=22),  # right T_max, lr logged at the start of the epoch
        cosine_lr(3e-3, 5),  # a short run
        {e: 3e-3 for e in range(1, 23)},  # no schedule
        {e: 3e-3 * (1 - (e - 1) / 30) for e in range(1, 23)},  # linear decay: not a cosine
        {e: 3e-3 * 0.1 ** (e // 8) for e in range(1, 23)},  # steps: not a cosine
    ],
)
def test_right_or_other_schedules_raise_no_tmax_warning(lrs: dict[int, float]) -> None:
    assert "tmax_mismatch" not in codes(schedule_study([lrs]).analyze())


def test_a_pruned_trial_never_raises_tmax_mismatch() -> None:
    built = schedule_study([torch_cosine_lr(3e-3, 22, t_max=24)], state=TrialState.PRUNED)
    assert "tmax_mismatch" not in codes(built.analyze())


def test_a_reported_tmax_is_compared_with_the_epochs_run() -> None:
    built = clean_study()
    built.add(
        0.85, params={"lr": 3e-3, "dropout": 0.2}, curve=rising_curve(0.85, 20), user_attrs={"t_max": 30}
    )
    w = warning(built.analyze(), "tmax_mismatch")
    assert w.details.model_dump()["trials"] == [
        {"trial": 31, "epochs_run": 20, "t_max": 30, "source": "reported"}
    ]
    assert "T_max ≈ 30 with 20 epochs run" in w.message


def test_cosine_fit_recovers_tmax_in_both_logging_conventions() -> None:
    end_of_epoch = cosine_lr(1e-2, 30, t_max=36)
    fit = fit_cosine_schedule(list(end_of_epoch), list(end_of_epoch.values()))
    assert fit is not None and fit.min_epoch == pytest.approx(36, abs=0.3) and fit.rises_after is None
    start_of_epoch = torch_cosine_lr(1e-2, 40, t_max=50)
    fit = fit_cosine_schedule(list(start_of_epoch), list(start_of_epoch.values()))
    assert fit is not None and fit.t_max == pytest.approx(50, abs=0.1) and fit.rises_after is None


# ------------------------------------------------------------------------------ rank correlation / pruning
def noisy_start_study(reliable_from: int, pruned_at: list[int], *, flip: bool = False) -> Built:
    """Complete trials whose epochs before ``reliable_from`` rank them at random (or backwards, ``flip``),
    and in the right order from then on."""
    rng = np.random.default_rng(4)
    built = Built()
    finals = np.linspace(0.6, 0.9, 20)
    for i, final in enumerate(rng.permutation(finals)):
        early = rng.permutation(finals) if not flip else None
        curve = {}
        for e in range(1, EPOCHS + 1):
            if e < reliable_from:
                curve[e] = float(1.5 - final if flip else early[i]) - 0.3 + 0.01 * e  # type: ignore[index]
            else:
                curve[e] = float(final) - 0.01 * (EPOCHS - e)
        built.add(float(final), params={"lr": 10 ** (-3.5 + i / 10), "dropout": 0.1 + i / 100}, curve=curve)
    for j, epoch in enumerate(pruned_at):
        built.add(
            params={"lr": 10 ** (-3 + j / 20), "dropout": 0.2},
            state=TrialState.PRUNED,
            curve={e: 0.3 + 0.01 * e for e in range(1, epoch + 1)},
        )
    return built


def test_pruning_before_the_ranking_settles_is_flagged_with_its_numbers() -> None:
    analysis = noisy_start_study(reliable_from=6, pruned_at=[3, 3, 3, 2, 8]).analyze()
    corr = analysis.rank_correlation
    assert corr is not None
    assert corr.reliable_from == 6
    assert corr.pruned_at == {"2": 1, "3": 3, "8": 1}
    at3 = next(e for e in corr.by_epoch if e.epoch == 3)
    assert at3.n == 20 and at3.spearman is not None and at3.spearman < 0.8
    assert all(e.spearman == 1.0 for e in corr.by_epoch if e.epoch >= 6)
    w = warning(analysis, "pruning_unreliable")
    assert w.details.reliable_from == 6 and w.details.suggested_n_warmup_steps == 6
    assert w.details.pruned_before_reliable == 4 and w.details.pruned == 5
    assert {"epoch": 3, "count": 3, "spearman": at3.spearman} in w.details.model_dump()["pruned_at"]
    assert f"at epoch 3, where pruning happened (3 trials), Spearman {at3.spearman:.2f}" in w.message
    assert "reliable from epoch 6" in w.message and "n_warmup_steps to 6" in w.action


def test_a_negative_early_correlation_is_unreliable_too() -> None:
    analysis = noisy_start_study(reliable_from=4, pruned_at=[2, 2, 3], flip=True).analyze()
    assert analysis.rank_correlation is not None
    early = [e for e in analysis.rank_correlation.by_epoch if e.epoch < 4]
    assert all(e.spearman == -1.0 for e in early)
    assert warning(analysis, "pruning_unreliable").details.reliable_from == 4


def test_pruning_after_the_ranking_settled_is_fine() -> None:
    analysis = noisy_start_study(reliable_from=3, pruned_at=[5, 6, 7, 4]).analyze()
    assert "pruning_unreliable" not in codes(analysis)
    assert analysis.rank_correlation is not None and analysis.rank_correlation.reliable_from == 3


def test_pruned_trials_that_were_ahead_of_the_eventual_best_are_the_pruning_cost() -> None:
    built = clean_study()
    best = max(built.study.trials, key=lambda t: t.value)
    ahead = best.intermediate_values[3] + 0.05
    behind = best.intermediate_values[4] - 0.05
    built.add(params={"lr": 3e-3, "dropout": 0.2}, state=TrialState.PRUNED, curve={1: 0.1, 2: 0.2, 3: ahead})
    built.add(
        params={"lr": 3e-3, "dropout": 0.2}, state=TrialState.PRUNED, curve={e: behind for e in range(1, 5)}
    )
    cost = built.analyze().pruning_cost
    assert cost.model_dump() == {
        "overtaken": [
            {
                "trial": 31,
                "epoch": 3,
                "value": ahead,
                "best_trial": best.number,
                "best_value_at_epoch": best.intermediate_values[3],
            }
        ],
        "count": 1,
    }


# ------------------------------------------------------------------------------------ screening_unreliable
def screening_study(full_values: list[float]) -> Built:
    built = clean_study()
    sources = [
        built.add(0.80 + i / 100, params={"lr": 10 ** (-3 + i / 10), "dropout": 0.2}) for i in range(5)
    ]
    for source, value in zip(sources, full_values, strict=False):
        built.add(value, params=built.study.trials[source].params, user_attrs={attrs.PROMOTED_FROM: source})
    return built


def test_screening_ranking_reversed_at_full_fidelity_is_flagged() -> None:
    analysis = screening_study([0.95, 0.94, 0.93, 0.92]).analyze()
    assert analysis.screening is not None and analysis.screening.model_dump() == {"spearman": -1.0, "n": 4}
    w = warning(analysis, "screening_unreliable")
    assert w.details.screening_winner == 34 and w.details.promoted_winner == 31
    assert "Spearman -1.00" in w.message and "4 promoted trials" in w.message


def test_screening_that_survives_full_fidelity_is_fine() -> None:
    analysis = screening_study([0.91, 0.92, 0.93, 0.94, 0.95]).analyze()
    assert analysis.screening is not None and analysis.screening.model_dump() == {"spearman": 1.0, "n": 5}
    assert "screening_unreliable" not in codes(analysis)


# -------------------------------------------------------------------------------------- validation_overfit
def test_best_validation_trial_that_generalizes_worst_is_flagged() -> None:
    built = Built()
    vals = [0.94, 0.945, 0.95, 0.955, 0.9635, 0.964, 0.9645, 0.965, 0.9655, 0.966]
    for i, val in enumerate(vals):  # the held-out metric follows validation with a small, steady gap...
        test = val - 0.0005 if i < 9 else 0.9626  # ...except the best's: 96.60 % -> 96.26 %
        curve = rising_curve(val)
        extra = {e: {"test_acc": curve[e] - (val - test), "test_loss": 0.1} for e in curve}
        built.add(val, params={"lr": 10 ** (-3.5 + i / 5), "dropout": 0.1 + i / 40}, curve=curve, extra=extra)
    w = warning(built.analyze(), "validation_overfit")
    d = w.details
    assert d.held_out_key == "test_acc" and d.best_trial == 9
    assert d.tuning_value == 0.966 and d.held_out_value == pytest.approx(0.9626)
    assert d.held_out_rank == 6 and d.gap == pytest.approx(0.0034)
    assert d.median_gap_top_k == pytest.approx(0.0005)
    assert d.top_k_by_held_out == [8, 7, 6, 5, 4]
    assert "ranks 6 of 10 by test_acc" in w.message


def test_held_out_metric_that_agrees_raises_nothing() -> None:
    built = clean_study()
    for trial in built.study.trials:
        for row in built.records[trial.number]["epochs"]:
            row["test_acc"] = row[METRIC] - 0.002
    assert built.analyze().warnings == []


# --------------------------------------------------------------------------------- few_complete, failures
def test_few_complete_trials_for_the_parameters() -> None:
    built = Built()
    for i in range(5):
        built.add(0.5 + i / 100, params={"lr": 10 ** (-3 + i / 5), "dropout": 0.1 + i / 20})
    w = warning(built.analyze(), "few_complete")
    assert w.details.model_dump() == {"complete": 5, "params": 2, "needed": 10}


def test_failures_by_reason_with_early_divergence_point_at_the_lr_range() -> None:
    built = clean_study()
    built.add(
        params={"lr": 0.08, "dropout": 0.2}, state=TrialState.FAIL, user_attrs={"reason": "nonfinite_loss"}
    )
    built.add(
        params={"lr": 0.05, "dropout": 0.2}, state=TrialState.FAIL, record={"reason": "nonfinite_value"}
    )
    built.add(  # no reason of its own, but its curve went non-finite in epoch 2
        params={"lr": 0.03, "dropout": 0.2},
        state=TrialState.FAIL,
        curve={1: 0.2, 2: float("nan")},
        extra={2: {"val_loss": None}},
    )
    built.add(params={"lr": 1e-3, "dropout": 0.2}, state=TrialState.FAIL, user_attrs={"reason": "oom"})
    retried = built.add(
        params={"lr": 1e-3, "dropout": 0.2}, state=TrialState.FAIL, user_attrs={"reason": "walltime"}
    )
    built.add(0.8, params={"lr": 1e-3, "dropout": 0.2}, system_attrs={"retry_history": [retried]})
    w = warning(built.analyze(), "failures")
    d = w.details
    assert d.by_reason == {"nonfinite_loss": 1, "nonfinite_value": 1, "oom": 1, "unknown": 1}
    assert d.diverged_early == 3 and d.lr_param == "lr" and d.diverged_lr_min == 0.03
    assert "4 trial(s) failed" in w.message and "3 diverged early" in w.message
    assert "upper bound of lr (now 0.1) below 0.03" in w.action


def test_a_confirmation_study_reports_its_failures_but_no_search_analysis() -> None:
    built = clean_study(n=4)
    built.add(None, params={"lr": 0.09, "dropout": 0.2}, state=TrialState.FAIL, user_attrs={"reason": "oom"})
    plain = built.analyze()
    assert "few_complete" in codes(plain) and isinstance(plain.importance, Importance)
    confirming = built.analyze(study_attrs={"confirms": "digits"})
    assert codes(confirming) == ["failures"]
    assert isinstance(confirming.importance, ImportanceSkipped)
    assert "confirmation study" in confirming.importance.skipped
    assert confirming.ranges == plain.ranges


def test_a_fraction_at_its_hard_limit_is_flagged_but_not_widened() -> None:
    built = Built()
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "keep": FloatDistribution(0.0, 1.0)}
    for i in range(12):
        keep = 0.999 if i == 0 else 0.2 + 0.05 * i
        built.add(
            0.9 + 0.01 * keep,
            params={"lr": 3e-3, "keep": keep},
            dists=dists,
            curve=rising_curve(0.9 + 0.01 * keep),
        )
    w = warning(built.analyze(), "best_at_boundary")
    keep = w.details.params["keep"]
    assert (keep.edge, keep.suggested_low, keep.suggested_high) == ("high", 0.0, 1.0)
    assert "widen" not in w.action and "keep already reaches a hard limit" in w.action
