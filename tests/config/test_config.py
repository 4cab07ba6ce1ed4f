from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hpc_tune.config import load_config, parse_config
from hpc_tune.config.lint import lint
from hpc_tune.errors import ConfigError, SpaceError

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}}


def cfg(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"study": "s1", "space": dict(SPACE)}
    base.update(kw)
    return base


def test_minimal_config_gets_defaults() -> None:
    c = parse_config(cfg())
    assert c.trials == 20 and c.direction == "maximize" and c.pruner.type == "median"
    assert c.train.eval_batch_multiplier == 2 and c.storage is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (cfg(epocs=3), "unknown key 'epocs' (did you mean 'epochs'?) (hpctune.yaml)"),
        (
            cfg(train={"batch_sise": 3}),
            "unknown key 'batch_sise' in train (did you mean 'batch_size'?) (hpctune.yaml)",
        ),
        (
            cfg(space={"lr": {"type": "float", "low": 1.0, "high": 0.1}}),
            "space.lr.low must be < high (hpctune.yaml)",
        ),
        (
            cfg(space={"lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}),
            "space.lr.low must be > 0 when log is true (hpctune.yaml)",
        ),
        (
            cfg(space={"lr": {"type": "floaty", "low": 0, "high": 1}}),
            "space.lr.type must be one of float, int, categorical (hpctune.yaml)",
        ),
        (
            cfg(study="a;rm -rf"),
            "study: 'a;rm -rf' is not a valid study name (letters, digits, '_', '.', '-'; "
            "starts with a letter or digit; at most 128 characters) (hpctune.yaml)",
        ),
        (cfg(trials=0), "trials: Input should be greater than or equal to 1 (hpctune.yaml)"),
        ({"space": SPACE}, "study is required (hpctune.yaml)"),
        (cfg(baseline={"lrr": 1}), "baseline has 'lrr', which is not in space (hpctune.yaml)"),
        (
            cfg(slurm={"time": "2 hours"}),
            "slurm.time: '2 hours' is not a SLURM time (MM, HH:MM:SS or D-HH:MM:SS) (hpctune.yaml)",
        ),
        (
            cfg(slurm={"server": {"time": "forever"}}),
            "slurm.server.time: 'forever' is not a SLURM time (MM, HH:MM:SS or D-HH:MM:SS) (hpctune.yaml)",
        ),
        (
            cfg(slurm={"server": {"partition": "gpu;rm"}}),
            "slurm.server.partition: 'gpu;rm' has characters SLURM does not accept here (hpctune.yaml)",
        ),
        (
            cfg(slurm={"mem": "8 GB"}),
            "slurm.mem: '8 GB' is not a SLURM memory size (e.g. 32G) (hpctune.yaml)",
        ),
        (
            cfg(slurm={"extra_sbatch": ["--x=1\n--y"]}),
            "slurm.extra_sbatch: '--x=1\\n--y' must be one line starting with -- (hpctune.yaml)",
        ),
        ([1, 2], "the file must hold a mapping of keys (study:, space:, …) (hpctune.yaml)"),
        (
            cfg(train={"schedule": {"type": "cosine", "t_max": 50}}),
            "train.schedule.t_max is not a setting: T_max is always the epochs a trial runs (fewer when "
            "screening); remove it (hpctune.yaml)",
        ),
    ],
)
def test_bad_configs_name_the_key(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, Path("hpctune.yaml"))
    assert info.value.line() == message


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            {
                "m": {"type": "float", "low": 0, "high": 1, "when": {"opt": "sgd"}},
                "opt": {"type": "categorical", "choices": ["sgd"]},
            },
            "space.m.when refers to 'opt', which must be a parameter listed before it",
        ),
        (
            {
                "opt": {"type": "categorical", "choices": ["sgd"]},
                "m": {"type": "float", "low": 0, "high": 1, "when": {"opt": "adam"}},
            },
            "space.m.when: 'adam' is not a choice of 'opt' ('sgd')",
        ),
        (
            {
                "x": {"type": "int", "low": 0, "high": 3},
                "m": {"type": "float", "low": 0, "high": 1, "when": {"x": 1}},
            },
            "space.m.when: 'x' must be categorical",
        ),
    ],
)
def test_conditional_rules(space: dict[str, object], message: str) -> None:
    with pytest.raises(SpaceError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(cfg(space=space))


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "hpctune.yaml"
    path.write_text("study: s\nspace:\n  lr: {type: float, low: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.line().startswith("YAML syntax error at line ")
    assert info.value.line().endswith("(hpctune.yaml)")


def test_environment_and_flag_override_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "hpctune.yaml"
    path.write_text(yaml.safe_dump(cfg(storage="postgresql://file@h/db")))
    assert load_config(path).config.storage == "postgresql://file@h/db"
    monkeypatch.setenv("HPCTUNE_STORAGE", "postgresql://env@h/db")
    assert load_config(path).config.storage == "postgresql://env@h/db"
    assert load_config(path, {"storage": "postgresql://flag@h/db"}).config.storage == "postgresql://flag@h/db"


def test_results_relative_to_config_file(tmp_path: Path) -> None:
    path = tmp_path / "sub dir" / "hpctune.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(cfg(results="out")))
    assert load_config(path).study_dir == (tmp_path / "sub dir" / "out" / "s1").resolve()


def test_lint_findings() -> None:
    c = parse_config(
        cfg(
            space={
                "lr": {"type": "float", "low": 0.0, "high": 0.1},
                "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2},
                "opt": {"type": "categorical", "choices": ["a", "b", "c"]},
            },
            trials=2,
            epochs=10,
            train={"amp": "bf16"},
            fidelity={"data_fraction": 0.3},
            pruner={"type": "none"},
        )
    )
    keys = [f.key for f in lint(c)]
    assert keys == [
        "space.lr",
        "space.weight_decay",
        "fidelity",
        "slurm.gres",
        "fidelity.promote_top",  # screening at 30 % of the data with nothing re-run at full fidelity
    ]
    grid = parse_config(
        cfg(
            space={
                "opt": {"type": "categorical", "choices": ["a", "b", "c"]},
                "n": {"type": "int", "low": 1, "high": 4},
            },
            trials=5,
            sampler={"type": "grid"},
        )
    )
    assert [f.message for f in lint(grid)] == [
        "the grid has 12 points but trials is 5; most of the grid will never run"
    ]
    assert lint(parse_config(cfg())) == []


def test_grid_sampler_needs_discrete_space() -> None:
    with pytest.raises(ConfigError, match="sampler grid needs every parameter discrete"):
        parse_config(cfg(sampler={"type": "grid"}))


def test_lint_sees_dotted_hydra_names() -> None:
    config = parse_config(
        {"study": "s", "space": {"optimizer.lr": {"type": "float", "low": 1e-4, "high": 0.1}}}
    )
    assert [f.key for f in lint(config)] == ["space.optimizer.lr"]


COND_SPACE = {
    "opt": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.99, "when": {"opt": "sgd"}},
}


@pytest.mark.parametrize(
    ("task", "space", "message"),
    [
        (
            {"command": "python t.py --momentum {momentum}"},
            COND_SPACE,
            "task.command: {momentum} is conditional (when:), so some trials have no value for it; "
            "read it from the environment instead (HPCTUNE_PARAM_MOMENTUM",
        ),
        (
            {"command": "python t.py --epochs {epochs}"},
            {"epochs": {"type": "int", "low": 10, "high": 50}},
            "space.epochs: a parameter cannot have the name of the placeholder {epochs}",
        ),
    ],
)
def test_command_placeholders_that_cannot_be_filled_are_refused(
    task: dict, space: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config({"study": "s", "task": task, "space": space})
