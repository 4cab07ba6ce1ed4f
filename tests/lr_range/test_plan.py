"""Which runs a range test plans from the space, and the errors of a space it cannot test."""

from __future__ import annotations

from typing import Any

import pytest

from hpc_tune.config import parse_config
from hpc_tune.errors import ConfigError, SpaceError
from hpc_tune.lr_range.plan import plan_range


def _config(space: dict[str, Any], **extra: Any):  # type: ignore[no-untyped-def]
    return parse_config({"study": "s", "task": "hpc_tune.tasks.digits", "space": space, **extra})


SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True},
    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.9, "when": {"optimizer": "sgd"}},
    "batch_size": {"type": "categorical", "choices": [32, 128]},
    "hidden": {"type": "int", "low": 16, "high": 256, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
}


def test_one_run_per_optimizer_and_batch_size_the_rest_where_the_study_starts() -> None:
    plan = plan_range(_config(SPACE, baseline={"weight_decay": 1e-4}), steps=50, widen=10)
    assert (plan.param, plan.steps) == ("lr", 50)
    assert (plan.start, plan.end) == (pytest.approx(1e-4), pytest.approx(1.0))
    assert [(r.optimizer, r.batch_size) for r in plan.runs] == [
        ("adamw", 32),
        ("adamw", 128),
        ("sgd", 32),
        ("sgd", 128),
    ]
    adamw, sgd = plan.runs[0].params, plan.runs[2].params
    assert adamw == {
        "lr": pytest.approx(1e-4),
        "optimizer": "adamw",
        "batch_size": 32,
        "hidden": 64,  # the geometric middle of 16 .. 256
        "weight_decay": 1e-4,  # the baseline's
    }
    assert sgd["momentum"] == pytest.approx(0.85) and "momentum" not in adamw  # conditional: sgd only
    lrs = plan.lrs()
    assert len(lrs) == 50 and lrs[0] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1.0)
    ratios = {round(b / a, 9) for a, b in zip(lrs, lrs[1:], strict=False)}
    assert len(ratios) == 1  # exponential


def test_without_optimizer_or_batch_in_the_space_one_run_of_the_task_own() -> None:
    plan = plan_range(_config({"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}))
    assert plan.param == "optimizer.lr" and len(plan.runs) == 1
    assert plan.runs[0].optimizer is None and plan.runs[0].label("AdamW", 64) == "AdamW, batch 64"
    assert plan.start == pytest.approx(1e-5) and plan.end == pytest.approx(1.0) and plan.steps == 100


def test_an_int_batch_size_runs_its_two_ends() -> None:
    space = {**SPACE, "batch_size": {"type": "int", "low": 16, "high": 64}}
    assert sorted({r.batch_size for r in plan_range(_config(space)).runs}) == [16, 64]


def test_a_space_it_cannot_test_is_an_error_with_its_key() -> None:
    with pytest.raises(SpaceError) as no_lr:
        plan_range(_config({"hidden": {"type": "int", "low": 8, "high": 32}}))
    assert no_lr.value.where == "space" and "no learning rate" in no_lr.value.what
    with pytest.raises(SpaceError) as not_float:
        plan_range(_config(SPACE), param="hidden")
    assert not_float.value.where == "space.hidden"
    with pytest.raises(SpaceError) as missing:
        plan_range(_config(SPACE), param="eta")
    assert missing.value.where == "--param"
    with pytest.raises(SpaceError) as linear:
        plan_range(_config({"lr": {"type": "float", "low": 0.0, "high": 0.1}}))
    assert linear.value.where == "space.lr.low"
    with pytest.raises(ConfigError):
        plan_range(_config(SPACE), steps=5)
