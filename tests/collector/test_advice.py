"""Recommendations: widen at an edge, narrow important parameters around the top-k, freeze negligible ones,
raise the pruner's warm-up; and the next study's YAML always loads."""

from __future__ import annotations

from typing import Any

import yaml

from hpc_tune.collector.advice import recommend
from hpc_tune.collector.next_study import next_study_name, next_yaml
from hpc_tune.config import parse_config

RANGES = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "step": None, "choices": None},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5, "log": False, "step": None, "choices": None},
    "width": {"type": "int", "low": 16, "high": 256, "log": False, "step": 1, "choices": None},
    "opt": {
        "type": "categorical",
        "low": None,
        "high": None,
        "log": False,
        "step": None,
        "choices": ["adam", "sgd"],
    },
}


def _summary(
    *, warnings: list[dict[str, Any]] | None = None, importance: dict[str, float] | None = None, n: int = 30
) -> dict[str, Any]:
    top = [
        {
            "trial": i,
            "value": 0.9 - i / 100,
            "epochs": 10,
            "params": {"lr": lr, "dropout": d, "width": w, "opt": "adam"},
        }
        for i, (lr, d, w) in enumerate(
            [(0.003, 0.1, 120), (0.004, 0.15, 128), (0.002, 0.12, 110), (0.005, 0.2, 140)]
        )
    ]
    return {
        "study": "digits",
        "direction": "maximize",
        "metric": "val_acc",
        "budget": {"trials": n},
        "best": top[0],
        "top_k": top,
        "confirmation": None,
        "analysis": {
            "ranges": RANGES,
            "importance": {"evaluator": "ped_anova", "overall": importance or {}, "n_trials": n},
            "warnings": warnings or [],
        },
    }


def _boundary(name: str, edge: str, best: float, low: float, high: float) -> dict[str, Any]:
    return {
        "code": "best_at_boundary",
        "message": "",
        "action": "",
        "details": {
            "params": {
                name: {
                    "edge": edge,
                    "best": best,
                    "top_k_near": 3,
                    "suggested_low": low,
                    "suggested_high": high,
                }
            }
        },
    }


def test_a_range_whose_best_is_at_an_edge_is_widened_to_the_suggested_range() -> None:
    rec = recommend(_summary(warnings=[_boundary("lr", "high", 0.0998, 1e-4, 1.0)]))
    assert rec["space"]["lr"] == {"type": "float", "low": 1e-4, "high": 1.0, "log": True}
    (change,) = [c for c in rec["changes"] if c["param"] == "lr"]
    assert change["kind"] == "widen" and change["from"] == [1e-4, 1e-1] and change["to"] == [1e-4, 1.0]


def test_an_important_parameter_is_narrowed_around_the_top_k_with_a_margin_inside_the_old_range() -> None:
    rec = recommend(_summary(importance={"lr": 0.7, "width": 0.25, "dropout": 0.04, "opt": 0.01}))
    lr = rec["space"]["lr"]
    # top-k lr in [0.002, 0.005], a factor 2 of margin in log space
    assert lr["low"] == 0.001 and lr["high"] == 0.01 and lr["log"] is True
    width = rec["space"]["width"]
    assert 16 <= width["low"] < 110 and 140 < width["high"] <= 256
    assert width["high"] - width["low"] < 0.7 * (256 - 16)
    kinds = {c["param"]: c["kind"] for c in rec["changes"]}
    assert kinds["lr"] == "narrow" and kinds["width"] == "narrow"
    # dropout is between negligible and important: left as it was
    assert "dropout" not in kinds and rec["space"]["dropout"] == {"type": "float", "low": 0.0, "high": 0.5}


def test_a_negligible_parameter_is_frozen_at_the_best_value() -> None:
    rec = recommend(_summary(importance={"lr": 0.9, "opt": 0.005, "dropout": 0.05, "width": 0.045}))
    assert rec["space"]["opt"] == {"type": "categorical", "choices": ["adam"]}
    assert {"param": "opt", "kind": "freeze"}.items() <= [c for c in rec["changes"] if c["param"] == "opt"][
        0
    ].items()


def test_with_too_few_trials_nothing_is_narrowed_or_frozen_and_a_note_says_why() -> None:
    summary = _summary(importance={"lr": 0.9, "opt": 0.001}, n=6)
    summary["analysis"]["warnings"] = [{"code": "few_complete", "message": "", "action": "", "details": {}}]
    rec = recommend(summary)
    assert rec["changes"] == []
    assert any("too few" in n for n in rec["notes"])


def test_the_pruner_warm_up_is_raised_to_the_reliable_epoch() -> None:
    warning = {"code": "pruning_unreliable", "message": "", "action": "", "details": {"reliable_from": 12}}
    rec = recommend(_summary(warnings=[warning]))
    assert rec["pruner"] == {"n_warmup_steps": 12}
    hyperband = parse_config(
        {
            "study": "s",
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
            "pruner": {"type": "hyperband"},
        }
    )
    assert recommend(_summary(warnings=[warning]), hyperband)["pruner"] == {"min_resource": 12}
    never = {**warning, "details": {"reliable_from": None}}
    assert recommend(_summary(warnings=[never]))["pruner"] == {"type": "none"}


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
    summary["analysis"]["ranges"] = {}
    summary["best"] = {"trial": 3, "value": 0.9, "params": {"a": 0.25, "b": 0.7, "c": 0.1}}
    rec = recommend(summary, config)
    assert rec["phases"] == [["b", "c"], ["a"]]
    # phase 1 now pins a, which had no baseline value: the best trial's is used
    assert rec["baseline"] == {"b": 0.5, "c": 0.5, "a": 0.25}


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
    warning = {"code": "pruning_unreliable", "message": "", "action": "", "details": {"reliable_from": 5}}
    summary = _summary(
        warnings=[_boundary("dropout", "low", 0.0, 0.0, 0.75), warning],
        importance={"lr": 0.7, "width": 0.25, "dropout": 0.04, "opt": 0.01},
    )
    rec = recommend(summary, config)
    text = next_yaml(summary, rec, raw, source="runs/digits/summary.json")
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
    text = next_yaml(summary, recommend(summary))
    doc = yaml.safe_load(text)
    assert doc["task"] == "REPLACE_ME.py" and doc["metric"] == "val_acc" and doc["epochs"] == 10
    assert doc["space"]["lr"] == {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}
    assert "set task:" in text


def test_next_study_names_count_up() -> None:
    assert next_study_name("digits") == "digits-2"
    assert next_study_name("digits-2") == "digits-3"


def test_a_range_at_a_hard_limit_is_not_recorded_as_widened() -> None:
    summary = _summary(warnings=[_boundary("dropout", "high", 0.5, 0.0, 0.5)])
    rec = recommend(summary)
    assert rec["space"]["dropout"] == {"type": "float", "low": 0.0, "high": 0.5}
    assert [c for c in rec["changes"] if c["param"] == "dropout"] == []
