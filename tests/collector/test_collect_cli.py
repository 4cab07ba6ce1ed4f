"""`collect` and `next` from the command line on studies hpctune did not create (plain Optuna on the real
PostgreSQL, reached through HPCTUNE_STORAGE alone), and on one it did."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import yaml

from hpc_tune.config import load_config
from tests.test_cli import invoke, make_fixture_study

pytestmark = pytest.mark.postgres


def plain_optuna_study(url: str, name: str = "foreign") -> optuna.Study:
    """A study made with Optuna alone: lr decides (higher is better, so the best sits at the top edge),
    width is noise; learning curves reported every epoch."""
    study = optuna.create_study(
        study_name=name, storage=url, direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1)
    )
    study.enqueue_trial({"lr": 0.0995, "width": 64})

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_int("width", 16, 256)
        final = 0.5 + 0.1 * (math.log10(lr) + 4)
        for epoch in range(1, 9):
            trial.report(final - 0.2 * math.exp(-epoch / 2), epoch)
        return final

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=24)
    return study


def test_collect_explains_a_plain_optuna_study_from_the_storage_alone(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_optuna_study(pg_url)
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke("collect", "foreign", env={"HPCTUNE_STORAGE": pg_url})
    assert (code, err) == (0, ""), err
    assert "best: trial 0, value 0.7998, lr=0.0995, width=64" in out
    assert "! best_at_boundary: " in out
    # no config to re-run a foreign study's trials from: rerun-top is not suggested
    assert "rerun-top" not in out and "  hpctune next foreign -o next.yaml" in out
    assert out.rstrip().endswith("report:  runs/foreign/report.html")
    summary = json.loads((tmp_path / "runs" / "foreign" / "summary.json").read_text())
    analysis = summary["analysis"]
    assert list(analysis["importance"]["overall"])[0] == "lr"
    # the ranges Optuna recorded, since there is no config
    assert analysis["ranges"] == {
        "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True, "step": None},
        "width": {"type": "int", "low": 16, "high": 256, "log": False, "step": 1},
    }
    (edge,) = [w for w in analysis["warnings"] if w["code"] == "best_at_boundary"]
    assert edge["details"]["params"]["lr"]["edge"] == "high"
    assert edge["details"]["params"]["lr"]["suggested_high"] > 1e-1
    # learning curves came from Optuna's intermediate values: the rank correlation could be computed
    assert analysis["rank_correlation"]["by_epoch"][-1]["epoch"] == 8
    html = (tmp_path / "runs" / "foreign" / "report.html").read_text()
    assert 'id="warnings"' in html and "best_at_boundary" in html
    assert (tmp_path / "runs" / "foreign" / "summary.md").read_text().count("best_at_boundary") >= 1

    code, out, err = invoke("collect", "foreign", "--importance", "fanova", env={"HPCTUNE_STORAGE": pg_url})
    assert (code, err) == (0, ""), err
    assert "importance (fanova, 24 trials): lr " in out


def test_next_writes_a_next_study_that_widens_the_edge_and_asks_for_the_task(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain_optuna_study(pg_url)
    monkeypatch.chdir(tmp_path)
    env = {"HPCTUNE_STORAGE": pg_url}
    code, out, err = invoke("next", "foreign", "-o", "next.yaml", env=env)
    assert (code, err) == (0, ""), err
    assert out.startswith("wrote next.yaml: ")
    text = (tmp_path / "next.yaml").read_text()
    assert "# widen lr: best " in text and "set task:" in text
    doc = yaml.safe_load(text)
    assert doc["study"] == "foreign-2" and doc["task"] == "REPLACE_ME.py"
    assert doc["space"]["lr"]["high"] > 0.1 and doc["space"]["lr"]["log"] is True
    # width is noise: frozen at the best trial's value
    assert doc["space"]["width"] == {"type": "categorical", "choices": [64]}

    # an existing file is not overwritten without --force, and nothing is written half-way
    code, out, err = invoke("next", "foreign", "-o", "next.yaml", env=env)
    assert code == 2 and out == "" and err == "Error: file exists; pass --force to overwrite it (next.yaml)\n"
    assert (tmp_path / "next.yaml").read_text() == text
    code, _, err = invoke("next", "foreign", "-o", "next.yaml", "--force", env=env)
    assert (code, err) == (0, "")


def test_next_from_hpctunes_own_config_loads_as_a_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = make_fixture_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke("next", "fixture", "-c", str(cfg), "-o", "next.yaml")
    assert (code, err) == (0, ""), err
    loaded = load_config(tmp_path / "next.yaml")
    original = load_config(cfg)
    assert loaded.config.study == "fixture-2"
    assert loaded.config.task == original.config.task and loaded.config.trials == original.config.trials
    assert loaded.config.space is not None and set(loaded.config.space) == {"lr", "opt"}


def test_collect_exits_non_zero_when_every_trial_failed(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = optuna.create_study(study_name="broken", storage=pg_url)

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        raise ValueError("diverged")

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study.optimize(objective, n_trials=3, catch=(ValueError,))
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke("collect", "broken", env={"HPCTUNE_STORAGE": pg_url})
    assert code == 8
    assert err == "Error: every trial failed (unknown 3) (runs/broken/summary.json)\n"
    assert "! failures: 3 trial(s) failed" in out
    assert json.loads((tmp_path / "runs" / "broken" / "summary.json").read_text())["counts"]["FAIL"] == 3
