"""``hpctune next`` edits the user's own hpctune.yaml: the recommended changes are applied, and the comments,
order and layout of everything else survive, in a file that loads as a config."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpc_tune.collector.next_study import next_yaml
from hpc_tune.collector.summary import Change, PrunerChange, Recommendations
from hpc_tune.config import load_config
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage
from tests.collector.test_advice import _summary
from tests.test_cli import invoke

CONFIG = """\
# Digits, tuned for the paper (run 3)
study: commented          # the study's name
task: hpc_tune.tasks.digits
direction: maximize
metric: val_acc
trials: 30                # budget agreed with the group
epochs: 3
space:
  # the learning rate: log scale, the one that matters
  lr: {{type: float, low: 1.0e-4, high: 0.1, log: true}}
  width:
    type: int             # hidden units
    low: 16
    high: 256
  optimizer: {{type: categorical, choices: [adamw, sgd]}}   # sgd needs momentum
  momentum: {{type: float, low: 0.8, high: 0.95, when: {{optimizer: sgd}}}}  # only with sgd
pruner:
  type: median
  n_startup_trials: 4     # let TPE warm up first
# results stay on scratch
results: {results}
"""

# Lines of entries no recommendation touches: they must come back exactly as written.
UNTOUCHED = [
    "task: hpc_tune.tasks.digits",
    "trials: 30                # budget agreed with the group",
    "  optimizer: {type: categorical, choices: [adamw, sgd]}   # sgd needs momentum",
    "  momentum: {type: float, low: 0.8, high: 0.95, when: {optimizer: sgd}}  # only with sgd",
    "  n_startup_trials: 4     # let TPE warm up first",
    "# results stay on scratch",
]


def commented_study(tmp_path: Path) -> Path:
    """The config above and its study: 30 complete trials where only lr matters, best at its high edge."""
    cfg = tmp_path / "hpctune.yaml"
    cfg.write_text(CONFIG.format(results=tmp_path / "runs"))
    storage = open_store(resolve_storage(None, tmp_path / "runs" / "commented")).storage
    study = optuna.create_study(study_name="commented", storage=storage, direction="maximize")
    study.set_user_attr("metric", "val_acc")
    study.set_user_attr("trials", 30)
    dists = {
        "lr": FloatDistribution(1e-4, 1e-1, log=True),
        "width": IntDistribution(16, 256),
        "optimizer": CategoricalDistribution(["adamw", "sgd"]),
    }
    for i in range(30):
        lr = 10 ** (-4 + 3 * (i + 0.5) / 30)
        params = {"lr": lr, "width": 16 + (i * 37) % 241, "optimizer": ("adamw", "sgd")[i % 2]}
        trial_dists = dict(dists)
        if params["optimizer"] == "sgd":
            params["momentum"] = 0.8 + 0.15 * ((i * 7) % 10) / 10
            trial_dists["momentum"] = FloatDistribution(0.8, 0.95)
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=0.5 + 0.1 * (math.log10(lr) + 4),
                params=params,
                distributions=trial_dists,
            )
        )
    return cfg


def test_next_keeps_the_users_comments_and_applies_the_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = commented_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke("next", "commented", "-c", str(cfg), "-o", "next.yaml")
    assert (code, err) == (0, ""), err
    text = (tmp_path / "next.yaml").read_text()
    lines = text.splitlines()

    assert lines[0].startswith("# Made by `hpctune next commented` on ")
    assert any(line.startswith("# widen lr: best ") for line in lines)
    original = cfg.read_text().splitlines()
    for comment in [line[line.index("#") :] for line in original if "#" in line]:
        assert comment in text, comment
    for line in UNTOUCHED:
        assert line in lines, line
    assert "study: commented-2" in text and "# the study's name" in text

    loaded = load_config(tmp_path / "next.yaml").config
    assert loaded.study == "commented-2" and loaded.trials == 30 and loaded.epochs == 3
    assert loaded.space is not None and loaded.space["lr"].high == 1.0 and loaded.space["lr"].log
    assert loaded.pruner.n_startup_trials == 4
    assert list(loaded.space) == ["lr", "width", "optimizer", "momentum"]  # the order as written


def test_a_file_made_by_next_gets_one_header_and_keeps_its_own_comments() -> None:
    summary = _summary()
    summary.study = "digits-2"
    recommendations = Recommendations(
        space={
            "lr": {"type": "float", "low": 1e-05, "high": 0.1, "log": True},
            "width": {"type": "categorical", "choices": [64]},
        },
        changes=[
            Change(param="lr", kind="widen", why="best at the low edge", from_=[1e-3, 0.1], to=[1e-5, 0.1]),
            Change(param="width", kind="freeze", why="negligible", to=64),
        ],
        phases=None,
        baseline=None,
        pruner=PrunerChange(n_warmup_steps=3),
        notes=[],
    )
    raw = (
        "# Made by `hpctune next digits` on 2024-01-01 from hpctune.yaml.\n"
        "# widen lr: best 0.09 at the high edge of [0.0001, 0.1]\n"
        "# a comment of the user's own\n"
        "study: digits-2\n"
        "task: hpc_tune.tasks.digits\n"
        "space:\n"
        "    lr:\n"
        "        type: float\n"
        "        low: 0.001    # was 1e-4\n"
        "        high: 0.1\n"
        "        log: true\n"
        "    width:\n"
        "        type: int      # hidden units\n"
        "        low: 16\n"
        "        high: 256\n"
        "    # ---- the pruner ----\n"
        "pruner:\n"
        "    type: median\n"
        "# the end\n"
    )
    text = next_yaml(summary, recommendations, raw)
    assert text.count("# Made by `hpctune next") == 1 and "best 0.09" not in text
    assert "# widen lr: best at the low edge" in text
    assert "# a comment of the user's own\nstudy: digits-3\n" in text
    # the new bound as PyYAML reads a float back (1e-05 would be a string); the user's indent and the
    # comment's column kept
    assert "\n        low: 1.0e-05  # was 1e-4\n" in text
    assert text.endswith("pruner:\n    type: median\n    n_warmup_steps: 3\n# the end\n")
    # a number frozen: its bounds go, its comments stay where they were
    assert "        choices: [64]\n    # ---- the pruner ----\npruner:\n" in text
    assert "type: categorical" in text and "# hidden units" in text and "low: 16" not in text
    doc = yaml.safe_load(text)
    assert doc["space"]["lr"]["low"] == 1e-05 and doc["pruner"] == {"type": "median", "n_warmup_steps": 3}
    assert doc["space"]["width"] == {"type": "categorical", "choices": [64]}
