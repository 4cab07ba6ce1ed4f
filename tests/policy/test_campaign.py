"""Phases and low-fidelity screening: the pure decision rules, then whole studies on the embedded store."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from hpc_tune import attrs
from hpc_tune.config import load_config, parse_config
from hpc_tune.errors import ConfigError
from hpc_tune.launchers.local import run_local
from hpc_tune.policy.campaign import decide, phase_budgets
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage
from tests.conftest import worker_env, write_config

SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
    "hidden": {"type": "int", "low": 8, "high": 32, "log": True},
    "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
}
DISTS = {"lr": FloatDistribution(1e-3, 0.3, log=True), "optimizer": CategoricalDistribution(["adamw", "sgd"])}


def trial(
    number: int, value: float | None, state: TrialState = TrialState.COMPLETE, **user_attrs: object
) -> optuna.trial.FrozenTrial:
    t = create_trial(
        params={"lr": 0.01 * (number + 1), "optimizer": "sgd"},
        distributions=DISTS,
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        user_attrs=dict(user_attrs),
    )
    t.number = number
    return t


def phased(**kw: object):  # type: ignore[no-untyped-def]
    raw = {
        "study": "p",
        "space": SPACE,
        "trials": 7,
        "phases": [["lr"], ["hidden", "optimizer"]],
        "baseline": {"lr": 0.01, "hidden": 16, "optimizer": "adamw"},
    }
    raw.update(kw)
    return parse_config(raw)


def test_phase_budget_split_gives_remainder_to_last() -> None:
    assert phase_budgets(phased()) == [3, 4]


def test_first_phase_pins_later_parameters_to_baseline() -> None:
    decision = decide(phased(), [], {})
    assert decision.kind == "ask" and decision.phase == 1
    assert decision.fixed == {"hidden": 16, "optimizer": "adamw"}
    assert decision.study_attrs == {attrs.phase_fixed(1): {"hidden": 16, "optimizer": "adamw"}}
    # Stored once: later asks reuse the stored values, even if the study changed since.
    again = decide(phased(), [trial(0, 0.9)], {attrs.phase_fixed(1): {"hidden": 16, "optimizer": "adamw"}})
    assert again.fixed == {"hidden": 16, "optimizer": "adamw"} and again.study_attrs == {}


def test_next_phase_waits_for_the_running_trials_of_the_earlier_one() -> None:
    trials = [trial(0, 0.8), trial(1, None, TrialState.RUNNING), trial(2, 0.9)]
    assert decide(phased(), trials, {}).kind == "wait"
    waiting_retry = [*trials[:2], trial(2, None, TrialState.WAITING)]
    decision = decide(phased(), waiting_retry, {})  # a waiting phase-1 trial is run first, nothing pinned
    assert (decision.kind, decision.phase, decision.fixed, decision.study_attrs) == ("ask", 1, {}, {})


def test_second_phase_pins_best_of_earlier_phase() -> None:
    trials = [trial(0, 0.8), trial(1, 0.95), trial(2, 0.9)]
    decision = decide(phased(), trials, {attrs.phase_fixed(1): {}})
    assert decision.phase == 2 and decision.fixed == {"lr": pytest.approx(0.02)}
    assert decide(phased(direction="minimize"), trials, {}).fixed == {"lr": pytest.approx(0.01)}
    assert decide(phased(), [*trials, *(trial(i, 0.5) for i in range(3, 7))], {}).kind == "done"


def test_phases_need_baseline_for_later_parameters() -> None:
    with pytest.raises(ConfigError, match="'hidden' is tuned in a later phase, so baseline needs its value"):
        phased(baseline={"lr": 0.01})


def screening(**kw: object):  # type: ignore[no-untyped-def]
    raw = {
        "study": "f",
        "space": SPACE,
        "trials": 4,
        "fidelity": {"data_fraction": 0.3, "epochs": 2, "promote_top": 2},
    }
    raw.update(kw)
    return parse_config(raw)


def test_screening_promotes_top_k_once_all_finished() -> None:
    config = screening()
    running = [trial(0, 0.7), trial(1, 0.9), trial(2, None, TrialState.RUNNING), trial(3, 0.8)]
    assert decide(config, running[:3], {}).kind == "ask"  # screening budget left
    assert decide(config, running, {}).kind == "wait"  # promotion needs every screening result
    finished = [*running[:2], trial(2, 0.85), running[3]]
    decision = decide(config, finished, {})
    assert decision.kind == "ask"
    assert [marks[attrs.PROMOTED_FROM] for _, marks in decision.enqueue] == [1, 2]
    assert decision.study_attrs == {"promoted": [1, 2]}
    promoted = [trial(4, None, TrialState.WAITING, promoted_from=1), trial(5, 0.9, promoted_from=2)]
    assert decide(config, finished + promoted, {"promoted": [1, 2]}).kind == "ask"
    promoted[0] = trial(4, 0.95, promoted_from=1)
    assert decide(config, finished + promoted, {"promoted": [1, 2]}).kind == "done"


def load_study(cfg: Path) -> optuna.Study:
    loaded = load_config(cfg)
    storage = open_store(resolve_storage(None, loaded.study_dir)).storage
    return optuna.load_study(study_name=loaded.config.study, storage=storage)


@pytest.mark.slow
def test_phased_study_end_to_end(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        trials=6,
        epochs=2,
        space=SPACE,
        phases=[["lr"], ["hidden", "optimizer"]],
        baseline={"lr": 0.01, "hidden": 16, "optimizer": "adamw"},
    )
    report = run_local(load_config(cfg), None, 2, environ=worker_env())
    assert report.failed_workers == []
    trials = load_study(cfg).trials
    assert [t.user_attrs["phase"] for t in trials] == [1, 1, 1, 2, 2, 2]
    assert {(t.params["hidden"], t.params["optimizer"]) for t in trials[:3]} == {(16, "adamw")}
    pinned = load_study(cfg).user_attrs[attrs.phase_fixed(2)]
    assert all(t.params["lr"] == pinned["lr"] for t in trials[3:])
    first_phase = [t for t in trials[:3] if t.state == TrialState.COMPLETE]
    assert pinned["lr"] == max(first_phase, key=lambda t: t.value).params["lr"]  # type: ignore[arg-type,return-value]


@pytest.mark.slow
def test_screening_study_promotes_and_runs_full_fidelity(tmp_path: Path) -> None:
    cfg = write_config(
        tmp_path,
        trials=5,
        epochs=4,
        pruner={"type": "median", "n_warmup_steps": 1},
        fidelity={"data_fraction": 0.3, "epochs": 2, "promote_top": 2},
    )
    report = run_local(load_config(cfg), None, 2, environ=worker_env())
    assert report.failed_workers == []
    study = load_study(cfg)
    screening_trials = [t for t in study.trials if attrs.PROMOTED_FROM not in t.user_attrs]
    promoted = [t for t in study.trials if attrs.PROMOTED_FROM in t.user_attrs]
    assert len(screening_trials) == 5 and len(promoted) == 2
    best_two = sorted(
        (t for t in screening_trials if t.state == TrialState.COMPLETE), key=lambda t: t.value, reverse=True
    )[:2]  # type: ignore[arg-type,return-value]
    assert [t.user_attrs[attrs.PROMOTED_FROM] for t in promoted] == [t.number for t in best_two]
    assert all(max(t.intermediate_values) <= 2 for t in screening_trials)
    assert all(
        t.state == TrialState.COMPLETE and sorted(t.intermediate_values) == [1, 2, 3, 4] for t in promoted
    )
    assert all(p.params == s.params for p, s in zip(promoted, best_two, strict=True))
