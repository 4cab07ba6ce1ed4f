"""Recommendations: widen at an edge, narrow important parameters around the top-k, freeze negligible ones,
raise the pruner's warm-up; and the next study's YAML always loads."""

from __future__ import annotations

from typing import Any

import yaml

from hpc_tune.collector.advice import recommend
from hpc_tune.collector.analysis_model import Analysis, Importance, PruningCost
from hpc_tune.collector.checks import Finding, few_complete, pruning_unreliable
from hpc_tune.collector.checks import best_at_boundary as boundary
from hpc_tune.collector.checks.context import CategoricalRange, NumericRange, ParamRange
from hpc_tune.collector.digest import next_steps
from hpc_tune.collector.next_study import next_study_name, next_yaml
from hpc_tune.collector.summary import (
    SCHEMA_VERSION,
    Budget,
    Counts,
    Pruning,
    Recommendations,
    Summary,
    TopEntry,
)
from hpc_tune.config import Config, parse_config

RANGES: dict[str, ParamRange] = {
    "lr": NumericRange(type="float", low=1e-4, high=1e-1, log=True, step=None),
    "dropout": NumericRange(type="float", low=0.0, high=0.5, log=False, step=None),
    "width": NumericRange(type="int", low=16, high=256, log=False, step=1),
    "opt": CategoricalRange(type="categorical", choices=["adam", "sgd"]),
}


def _top(i: int, params: dict[str, Any], value: float | None = None) -> TopEntry:
    value = 0.9 - i / 100 if value is None else value
    return TopEntry(trial=i, value=value, params=params, epochs=10, best_epoch=None, fidelity=None, seed=None)


def _summary(
    *, warnings: list[Finding] | None = None, importance: dict[str, float] | None = None, n: int = 30
) -> Summary:
    top = [
        _top(i, {"lr": lr, "dropout": d, "width": w, "opt": "adam"})
        for i, (lr, d, w) in enumerate(
            [(0.003, 0.1, 120), (0.004, 0.15, 128), (0.002, 0.12, 110), (0.005, 0.2, 140)]
        )
    ]
    analysis = Analysis(
        ranges=dict(RANGES),
        importance=Importance(evaluator="ped_anova", overall=importance or {}, by_phase={}, n_trials=n),
        warnings=warnings or [],
        rank_correlation=None,
        screening=None,
        pruning_cost=PruningCost(overtaken=[], count=0),
    )
    return Summary(
        schema_version=SCHEMA_VERSION,
        study="digits",
        direction="maximize",
        confirms=None,
        hpctune_study=True,
        metric="val_acc",
        generated_at="2024-01-01T00:00:00+00:00",
        budget=Budget(trials=n, finished=n, retried=0),
        counts=Counts(RUNNING=0, COMPLETE=n, PRUNED=0, FAIL=0, WAITING=0),
        best=top[0],
        top_k=top,
        baseline=None,
        reasons={},
        pruning=Pruning(
            pruned_fraction=0.0, epochs_spent=10 * n, epochs_if_unpruned=10 * n, saved_fraction=0.0
        ),
        quarantined=[],
        confirmation=None,
        analysis=analysis,
        recommendations=Recommendations(
            space={}, changes=[], phases=None, baseline=None, pruner=None, notes=[]
        ),
        trials=[],
    )


def _recommend(summary: Summary, config: Config | None = None) -> Recommendations:
    return recommend(summary.analysis, summary.top_k, confirms=summary.confirms, config=config)


def _boundary(name: str, edge: str, best: float, low: float, high: float) -> boundary.BestAtBoundary:
    spec = RANGES[name]
    assert isinstance(spec, NumericRange)
    at_edge = boundary.AtEdge(
        edge=edge,  # type: ignore[arg-type]
        best=best,
        top_k_near=3,
        low=spec.low,
        high=spec.high,
        log=spec.log,
        suggested_low=low,
        suggested_high=high,
    )
    details = boundary.BestAtBoundaryDetails(params={name: at_edge})
    return boundary.BestAtBoundary(message="", action="", details=details)


def _pruning(reliable_from: int | None) -> pruning_unreliable.PruningUnreliable:
    return pruning_unreliable.PruningUnreliable(
        message="",
        action="",
        details=pruning_unreliable.PruningUnreliableDetails(
            reliable_from=reliable_from,
            pruned_at=[pruning_unreliable.PrunedAt(epoch=2, count=4, spearman=0.3)],
            pruned=4,
            pruned_before_reliable=4,
            suggested_n_warmup_steps=reliable_from,
        ),
    )


def test_a_range_whose_best_is_at_an_edge_is_widened_to_the_suggested_range() -> None:
    rec = _recommend(_summary(warnings=[_boundary("lr", "high", 0.0998, 1e-4, 1.0)]))
    assert rec.space["lr"] == {"type": "float", "low": 1e-4, "high": 1.0, "log": True}
    (change,) = [c for c in rec.changes if c.param == "lr"]
    assert change.kind == "widen" and change.from_ == [1e-4, 1e-1] and change.to == [1e-4, 1.0]


def test_an_important_parameter_is_narrowed_around_the_top_k_with_a_margin_inside_the_old_range() -> None:
    rec = _recommend(_summary(importance={"lr": 0.7, "width": 0.25, "dropout": 0.04, "opt": 0.01}))
    lr = rec.space["lr"]
    # top-k lr in [0.002, 0.005], a factor 2 of margin in log space
    assert lr["low"] == 0.001 and lr["high"] == 0.01 and lr["log"] is True
    width = rec.space["width"]
    assert 16 <= width["low"] < 110 and 140 < width["high"] <= 256
    assert width["high"] - width["low"] < 0.7 * (256 - 16)
    kinds = {c.param: c.kind for c in rec.changes}
    assert kinds["lr"] == "narrow" and kinds["width"] == "narrow"
    # dropout is between negligible and important: left as it was
    assert "dropout" not in kinds and rec.space["dropout"] == {"type": "float", "low": 0.0, "high": 0.5}


def test_a_negligible_parameter_is_frozen_at_the_best_value() -> None:
    rec = _recommend(_summary(importance={"lr": 0.9, "opt": 0.005, "dropout": 0.05, "width": 0.045}))
    assert rec.space["opt"] == {"type": "categorical", "choices": ["adam"]}
    assert {"param": "opt", "kind": "freeze"}.items() <= [c for c in rec.changes if c.param == "opt"][
        0
    ].model_dump().items()


def test_with_too_few_trials_nothing_is_narrowed_or_frozen_and_a_note_says_why() -> None:
    summary = _summary(importance={"lr": 0.9, "opt": 0.001}, n=6)
    summary.analysis.warnings = [
        few_complete.FewComplete(
            message="", action="", details=few_complete.FewCompleteDetails(complete=6, params=4, needed=10)
        )
    ]
    rec = _recommend(summary)
    assert rec.changes == []
    assert any("too few" in n for n in rec.notes)


def test_the_pruner_warm_up_is_raised_to_the_reliable_epoch() -> None:
    warning = _pruning(12)
    rec = _recommend(_summary(warnings=[warning]))
    assert rec.pruner is not None and rec.pruner.model_dump() == {"n_warmup_steps": 12}
    hyperband = parse_config(
        {
            "study": "s",
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
            "pruner": {"type": "hyperband"},
        }
    )
    pruner = _recommend(_summary(warnings=[warning]), hyperband).pruner
    assert pruner is not None and pruner.model_dump() == {"min_resource": 12}
    never = _pruning(None)
    pruner = _recommend(_summary(warnings=[never])).pruner
    assert pruner is not None and pruner.model_dump() == {"type": "none"}


def test_phases_are_ordered_by_importance() -> None:
    config = parse_config(
        {
            "study": "s",
            "space": {name: {"type": "float", "low": 0.0, "high": 1.0} for name in ("a", "b", "c")},
            "phases": [["a"], ["b", "c"]],
            "baseline": {"b": 0.5, "c": 0.5},
        }
    )
    summary = _summary(importance={"a": 0.1, "b": 0.5, "c": 0.4})
    summary.analysis.ranges = {}
    summary.best = _top(3, {"a": 0.25, "b": 0.7, "c": 0.1}, 0.9)
    summary.top_k = [summary.best, *summary.top_k]
    rec = _recommend(summary, config)
    assert rec.phases == [["b", "c"], ["a"]]
    # phase 1 now pins a, which had no baseline value: the best trial's is used
    assert rec.baseline == {"b": 0.5, "c": 0.5, "a": 0.25}


def test_next_yaml_keeps_the_users_file_applies_the_changes_and_loads() -> None:
    raw = {
        "study": "digits",
        "task": "hpc_tune.tasks.digits",
        "trials": 30,
        "epochs": 10,
        "space": {
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "width": {"type": "int", "low": 16, "high": 256},
            "opt": {"type": "categorical", "choices": ["adam", "sgd"]},
        },
        "pruner": {"type": "median", "n_startup_trials": 4},
    }
    config = parse_config(raw)
    summary = _summary(
        warnings=[_boundary("dropout", "low", 0.0, 0.0, 0.75), _pruning(5)],
        importance={"lr": 0.7, "width": 0.25, "dropout": 0.04, "opt": 0.01},
    )
    rec = _recommend(summary, config)
    text = next_yaml(summary, rec, yaml.safe_dump(raw, sort_keys=False), source="runs/digits/summary.json")
    assert text.startswith("# Made by `hpctune next digits`")
    assert "# widen dropout" in text and "# freeze opt" in text
    doc = yaml.safe_load(text)
    loaded = parse_config(doc)
    assert loaded.study == "digits-2" and loaded.trials == 30
    assert loaded.pruner.n_warmup_steps == 5 and loaded.pruner.n_startup_trials == 4
    assert loaded.space is not None and loaded.space["dropout"].high == 0.75
    assert loaded.space["opt"].choices == ["adam"]


def test_next_yaml_of_a_study_hpctune_did_not_make_asks_for_the_task() -> None:
    summary = _summary()
    text = next_yaml(summary, _recommend(summary))
    doc = yaml.safe_load(text)
    assert doc["task"] == "REPLACE_ME.py" and doc["metric"] == "val_acc" and doc["epochs"] == 10
    assert doc["space"]["lr"] == {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
    assert "set task:" in text


def test_next_study_names_count_up() -> None:
    assert next_study_name("digits") == "digits-2"
    assert next_study_name("digits-2") == "digits-3"


def test_a_range_at_a_hard_limit_is_not_recorded_as_widened() -> None:
    summary = _summary(warnings=[_boundary("dropout", "high", 0.5, 0.0, 0.5)])
    rec = _recommend(summary)
    assert rec.space["dropout"] == {"type": "float", "low": 0.0, "high": 0.5}
    assert [c for c in rec.changes if c.param == "dropout"] == []


def test_the_next_step_counts_the_pruner_change_among_the_recommended_ones() -> None:
    summary = _summary(warnings=[_pruning(12)])
    summary.recommendations = _recommend(summary)
    assert summary.recommendations.pruner is not None
    why = dict(next_steps(summary))["hpctune next digits -o next.yaml"]
    assert why == f"a next study with the {len(summary.recommendations.changes) + 1} recommended change(s)"
