from __future__ import annotations

import optuna
import pytest

from hpc_tune.config import parse_config
from hpc_tune.config.space import grid_points, grid_size
from hpc_tune.policy.suggest import suggest

SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "layers": {"type": "int", "low": 1, "high": 4},
    "opt": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.99, "when": {"opt": "sgd"}},
    "nesterov": {"type": "categorical", "choices": [True, False], "when": {"opt": ["sgd"]}},
}


def test_conditional_parameters_follow_their_parent() -> None:
    config = parse_config({"study": "s", "space": SPACE})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        params = suggest(trial, config.space)
        assert ("momentum" in params) == (params["opt"] == "sgd") == ("nesterov" in params)
        assert 1e-4 <= params["lr"] <= 1e-1 and params["layers"] in (1, 2, 3, 4)
        seen.add(params["opt"])
        study.tell(trial, 0.0)
    assert seen == {"adamw", "sgd"}


def test_fixed_values_are_pinned() -> None:
    config = parse_config({"study": "s", "space": SPACE})
    trial = optuna.create_study().ask()
    params = suggest(trial, config.space, fixed={"opt": "adamw", "lr": 0.01})
    assert params["opt"] == "adamw" and params["lr"] == 0.01 and "momentum" not in params


@pytest.mark.parametrize(
    ("space", "size"),
    [
        (
            {
                "a": {"type": "categorical", "choices": [1, 2, 3]},
                "b": {"type": "int", "low": 0, "high": 9, "step": 3},
            },
            12,
        ),
        ({"a": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.25}}, 5),
        ({"a": {"type": "float", "low": 0.0, "high": 1.0}}, None),
    ],
)
def test_grid_size(space: dict[str, object], size: int | None) -> None:
    config = parse_config({"study": "s", "space": space})
    assert grid_size(config.space) == size
    if size is not None:
        points = grid_points(config.space)
        total = 1
        for values in points.values():
            total *= len(values)
        assert total == size
