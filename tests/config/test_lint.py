"""``check``'s warnings about a valid config that still wastes trials: each rule fires on the config it is
about, with the key and the numbers in its message, and stays quiet on reasonable configs (the init
template included). The epochs-changed rule runs against a real study on the embedded journal and on
PostgreSQL."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import optuna
import pytest
import yaml

from hpc_tune.config import load_config, parse_config, slurm_time_seconds
from hpc_tune.config.lint import LintFinding, hyperband_brackets, lint, lint_for_task

SPACE = {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "hidden": {"type": "int", "low": 16, "high": 256, "log": True},
    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
    "momentum": {"type": "float", "low": 0.8, "high": 0.99, "when": {"optimizer": "sgd"}},
}


def cfg(**kw: object) -> dict[str, object]:
    """A reasonable study (no rule fires); keyword arguments replace top-level keys."""
    base: dict[str, object] = {
        "study": "s1",
        "trials": 24,
        "epochs": 15,
        "space": dict(SPACE),
        "sampler": {"type": "tpe", "n_startup_trials": 8},
        "pruner": {"type": "median", "n_warmup_steps": 4},
        "train": {"schedule": {"type": "cosine", "warmup_epochs": 1}},
    }
    base.update(kw)
    return base


def findings(**kw: object) -> list[LintFinding]:
    return lint(parse_config(cfg(**kw)))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pruner": {"type": "hyperband", "min_resource": 1, "reduction_factor": 3}, "trials": 30},
        {"pruner": {"type": "sh", "min_resource": 2}},
        {"fidelity": {"data_fraction": 0.25, "epochs": 5, "promote_top": 3}},
        {
            "slurm": {"time": "00:10:00", "signal_grace_s": 300, "gres": "gpu:1"},
            "storage": "postgresql://u@h/db",
        },
        {
            "space": {
                "lr": {"type": "categorical", "choices": [1.0e-05, 0.001, "64"]},  # "64" quoted on purpose
                "n": {"type": "int", "low": 1, "high": 4},
            },
            "sampler": {"type": "grid"},
        },
    ],
    ids=["median", "hyperband", "sh", "promoted", "slurm", "grid"],
)
def test_reasonable_configs_get_no_warning(overrides: dict[str, object]) -> None:
    assert findings(**overrides) == []


def test_init_template_warns_only_about_the_embedded_store() -> None:
    text = resources.files("hpc_tune.config").joinpath("templates/hpctune.yaml").read_text(encoding="utf-8")
    assert [f.key for f in lint(parse_config(yaml.safe_load(text)))] == ["storage"]


# --------------------------------------------------------------------------------------------- hyperband


@pytest.mark.parametrize(("r", "big_r", "eta"), [(1, 15, 3), (1, 27, 3), (2, 6, 3), (1, 100, 4), (3, 50, 2)])
def test_bracket_sizes_are_optunas(r: int, big_r: int, eta: int) -> None:
    pruner = optuna.pruners.HyperbandPruner(min_resource=r, max_resource=big_r, reduction_factor=eta)
    pruner._try_initialization(optuna.create_study())  # where Optuna computes its brackets
    assert hyperband_brackets(r, big_r, eta) == pruner._trial_allocation_budgets


def test_hyperband_with_tpe_needs_startup_trials_in_every_bracket() -> None:
    hyperband = {"type": "hyperband", "min_resource": 1, "reduction_factor": 3}
    assert findings(pruner=hyperband, trials=24) == []  # 3 brackets x 8 startup trials: just enough
    found = findings(
        pruner={"type": "hyperband", "min_resource": 1, "reduction_factor": 3},
        trials=20,
        sampler={"type": "tpe", "n_startup_trials": 10},
    )
    assert found == [
        LintFinding(
            "pruner",
            "hyperband (min_resource 1, reduction_factor 3, 15 epochs) runs 3 brackets and TPE learns from "
            "each bracket's trials only: 3 x 10 startup trials = 30 random trials, but trials is 20; "
            "raise trials to 30, or use fewer brackets (a larger min_resource or reduction_factor)",
        )
    ]


def test_hyperband_without_tpe_needs_one_round_of_its_brackets() -> None:
    found = findings(
        pruner={"type": "hyperband", "min_resource": 1, "reduction_factor": 3},
        trials=12,
        sampler={"type": "random"},
    )
    assert found == [
        LintFinding(
            "pruner",
            "hyperband (min_resource 1, reduction_factor 3, 15 epochs) runs 3 brackets, which take 17 trials "
            "for one round (9 + 5 + 3), but trials is 12; raise trials to 17, or use fewer brackets "
            "(a larger min_resource or reduction_factor)",
        )
    ]


# --------------------------------------------------------------------------------------------- TPE


def test_tpe_startup_below_two_per_parameter() -> None:
    found = findings(sampler={"type": "tpe", "n_startup_trials": 6})
    assert found == [
        LintFinding(
            "sampler.n_startup_trials",
            "is 6 but the space has 4 parameters (not counting 1 conditional): TPE's first model needs about "
            "2 random trials per parameter; set n_startup_trials to 8 or more",
        )
    ]
    # not TPE, or parameters the objective defines as it runs: nothing to count
    assert findings(sampler={"type": "random", "n_startup_trials": 0}) == []
    assert lint(parse_config({"study": "s", "task": "objective.py:objective", "epochs": 10})) == []


# --------------------------------------------------------------------------------------------- warm-up


def test_pruning_warmup_shorter_than_the_learning_rate_warmup() -> None:
    found = findings(
        train={"schedule": {"warmup_epochs": 3}}, pruner={"type": "patience", "n_warmup_steps": 2}
    )
    assert found == [
        LintFinding(
            "pruner.n_warmup_steps",
            "is 2 but the learning rate still warms up for 3 epochs (train.schedule.warmup_epochs) and "
            "curves say little before that; set n_warmup_steps to 3 or more",
        )
    ]
    found = findings(train={"schedule": {"warmup_epochs": 2}}, pruner={"type": "sh", "min_resource": 1})
    assert found == [
        LintFinding(
            "pruner.min_resource",
            "is 1 but the learning rate still warms up for 2 epochs (train.schedule.warmup_epochs) and "
            "curves say little before that; set min_resource to 2 or more",
        )
    ]


def test_pruning_warmup_as_long_as_the_trials_never_prunes() -> None:
    found = findings(pruner={"type": "median", "n_warmup_steps": 5}, fidelity={"epochs": 5, "promote_top": 2})
    assert found == [
        LintFinding(
            "pruner.n_warmup_steps",
            "is 5 but trials run 5 epochs: the earliest prune is at epoch 5 and the last epoch is never "
            "pruned, so no trial ever is; set it below 5, or pruner.type: none",
        )
    ]
    assert findings(pruner={"type": "sh", "min_resource": 15}) == [
        LintFinding("pruner.min_resource", "is not below the epochs run, so sh never prunes")
    ]


# --------------------------------------------------------------------------------------------- fidelity


def test_fidelity_without_promotion() -> None:
    assert findings(fidelity={"data_fraction": 0.25, "epochs": 5}) == [
        LintFinding(
            "fidelity.promote_top",
            "is not set: every trial runs at low fidelity (25% of the data, 5 of 15 epochs) and the winner "
            "is picked from those runs alone; set promote_top (e.g. 3) to re-run the best at full fidelity",
        )
    ]
    phased = findings(
        fidelity={"data_fraction": 0.5},
        phases=[["lr", "weight_decay"], ["hidden"]],
        baseline={"hidden": 64},
    )
    assert phased == [
        LintFinding(
            "fidelity.promote_top",
            "is not set: every trial runs at low fidelity (50% of the data) and the winner is picked from "
            "those runs alone; re-run the best at full fidelity in a second study (phases cannot promote)",
        )
    ]
    assert findings(fidelity={"data_fraction": 1.0, "epochs": 15}) == []  # not low fidelity at all


# --------------------------------------------------------------------------------------------- walltime


@pytest.mark.parametrize(
    ("time", "seconds"),
    [
        ("90", 5400),
        ("1:30", 90),
        ("02:00:00", 7200),
        ("2-00", 172800),
        ("1-02:03", 93780),
        ("1-00:00:05", 86405),
    ],
)
def test_slurm_time_in_seconds(time: str, seconds: int) -> None:
    assert slurm_time_seconds(time) == seconds


def test_walltime_minus_signal_grace_too_short_to_start_a_worker() -> None:
    assert findings(slurm={"time": "00:05:00", "signal_grace_s": 240}, storage="postgresql://u@h/db") == [
        LintFinding(
            "slurm.time",
            "is 00:05:00 (300 s) and signal_grace_s is 240: USR2 asks a worker to hand on 60 s after it "
            "starts, less than the ~120 s it needs to start (imports, database, data); raise slurm.time or "
            "lower signal_grace_s",
        )
    ]
    found = findings(slurm={"time": "5", "signal_grace_s": 600}, storage="postgresql://u@h/db")
    assert [f.key for f in found] == ["slurm.time"] and "(300 s)" in found[0].message
    assert "hand on 0 s after it starts" in found[0].message


# --------------------------------------------------------------------------------------------- YAML numbers


def test_categorical_number_that_yaml_read_as_a_string(tmp_path: Path) -> None:
    path = tmp_path / "hpctune.yaml"
    path.write_text(
        "study: s\ntrials: 24\nepochs: 15\n"
        "space:\n"
        "  lr: {type: categorical, choices: [1e-05, 3e-4, 0.001]}\n"
        "  wd: {type: categorical, choices: [0.0, 1e-4]}\n"
        "  batch: {type: categorical, choices: ['64', 128]}\n"
    )
    config = load_config(path).config
    assert config.space is not None and config.space["lr"].choices == ["1e-05", "3e-4", 0.001]  # type: ignore[union-attr]
    assert lint(config) == [
        LintFinding(
            "space.lr.choices",
            "YAML reads 1e-05, 3e-4 as strings, not numbers, and the task gets them as text; write 1.0e-05, "
            "0.0003 to get numbers",
        ),
        LintFinding(
            "space.wd.choices",
            "YAML reads 1e-4 as a string, not a number, and the task gets it as text; write 0.0001 to get a "
            "number",
        ),
    ]
    # what the message says to write is read back as the number
    assert yaml.safe_load("[1.0e-05, 0.0003, 0.0001]") == [1e-05, 3e-4, 1e-4]


def test_a_command_gets_text_anyway() -> None:
    config = parse_config(
        {
            "study": "s",
            "task": {"command": "python train.py --lr {lr}"},
            "space": {"lr": {"type": "categorical", "choices": ["1e-05", "1e-04"]}},
        }
    )
    assert lint(config) == []


def test_engine_only_train_options_for_a_task_that_trains_itself() -> None:
    config = parse_config(cfg(train={"val_fraction": 0.25, "seed": 3}))
    assert lint_for_task(config, "build") == []  # the engine reads it
    (found,) = lint_for_task(config, "objective")
    assert found.key == "train.val_fraction"
    assert "engine only" in found.message and "an objective" in found.message
    assert "train.seed" not in found.message  # objectives and commands get the trial's seed too
    two = parse_config(cfg(train={"amp": "bf16", "max_val_batches": 4}))
    (found,) = lint_for_task(two, "command")
    assert found.key == "train"
    assert "train.amp, train.max_val_batches are read by hpctune's engine only" in found.message
    assert lint_for_task(parse_config(cfg(train={"seed": 1})), "command") == []


# --------------------------------------------------------------------------------------------- epochs changed
