"""The linked confirmation study (``hpctune rerun-top``): the top-k re-run at full fidelity with new seeds,
once, for every kind of task. Real workers and a real PostgreSQL; the CLI through click's CliRunner."""

from __future__ import annotations

import json
import random
import shlex
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from hpc_tune import attrs
from hpc_tune.cli import cli
from hpc_tune.collector.rerun_results import load_confirmation
from hpc_tune.config import load_config
from hpc_tune.policy.ranking import ranked_trials
from hpc_tune.policy.rerun_top import confirm_top, derived_config_mapping
from hpc_tune.policy.reruns import seed_of
from hpc_tune.storage.records import read_trials
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage
from hpc_tune.worker.loop import run_worker
from tests.conftest import wait_until, write_config
from tests.slurm_fixtures import SlurmCluster

CLI_ENV = {"HPCTUNE_STORAGE": None, "OMP_NUM_THREADS": "1"}


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=CLI_ENV, catch_exceptions=False, prog_name="hpctune")
    return result.exit_code, result.stdout, result.stderr


def studies(cfg: Path) -> dict[str, optuna.Study]:
    """Every study on the config's storage, by name."""
    loaded = load_config(cfg)
    storage = open_store(resolve_storage(loaded.config.storage, loaded.study_dir)).storage
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    return {name: optuna.load_study(study_name=name, storage=storage) for name in names}


def confirmation_pairs(confirm: optuna.Study) -> list[tuple[int, int]]:
    return sorted((t.user_attrs[attrs.CONFIRMS_TRIAL], t.system_attrs[attrs.SEED]) for t in confirm.trials)


def assert_confirms(
    original: optuna.Study, original_cfg: Path, confirm: optuna.Study, sources: list[int], seeds: int
) -> None:
    """Every source once per new seed, with its parameters; seeds new for each source (the seed a source
    ran with is the one its trial record says)."""
    ran_with = read_trials(load_config(original_cfg).study_dir).records
    assert confirm.user_attrs[attrs.CONFIRMS] == original.study_name
    assert original.user_attrs[attrs.CONFIRMATION_STUDY] == confirm.study_name
    assert sorted({s for s, _ in confirmation_pairs(confirm)}) == sorted(sources)
    for source in sources:
        runs = [t for t in confirm.trials if t.user_attrs[attrs.CONFIRMS_TRIAL] == source]
        used = [seed_of(t, -1) for t in runs]
        assert len(runs) == seeds and len(set(used)) == seeds
        assert ran_with[source]["seed"] not in used
        assert all(t.params == original.trials[source].params for t in runs)


# --------------------------------------------------------------------------------------------- pure parts

LR = {"lr": FloatDistribution(1e-4, 1.0, log=True)}


def trial(value: float | None, state: TrialState = TrialState.COMPLETE, **user_attrs: object) -> FrozenTrial:
    return create_trial(state=state, value=value, params={"lr": 0.1}, distributions=LR, user_attrs=user_attrs)


def numbered(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    study = optuna.create_study()
    for t in trials:
        study.add_trial(t)
    return study.trials


def test_ranking_is_direction_aware_and_skips_what_did_not_complete() -> None:
    trials = numbered(
        [
            trial(0.5),
            trial(None, TrialState.PRUNED),
            trial(0.9),
            trial(float("inf")),
            trial(None, TrialState.FAIL),
            trial(0.7),
        ]
    )
    assert [t.number for t in ranked_trials(trials, "maximize")] == [2, 5, 0]
    assert [t.number for t in ranked_trials(trials, "minimize")] == [0, 5, 2]


def test_after_promotion_only_the_promoted_trials_rank() -> None:
    # Screening values (a data subset) beat the full-fidelity ones, but are not comparable with them.
    trials = numbered([trial(0.99), trial(0.98), trial(0.8, promoted_from=1), trial(0.7, promoted_from=0)])
    assert [t.number for t in ranked_trials(trials, "maximize")] == [2, 3]
    assert all(attrs.PROMOTED_FROM in t.user_attrs for t in ranked_trials(trials, "maximize"))


def test_the_derived_config_runs_everything_at_full_fidelity_and_keeps_the_files_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(
        tmp_path,
        baseline={"lr": 0.01},
        fidelity={"data_fraction": 0.5, "epochs": 1, "promote_top": 2},
        sampler={"type": "grid", "seed": 4},
        space={"lr": {"type": "categorical", "choices": [0.01, 0.1]}},
        results="runs",
    )
    monkeypatch.setenv("HPCTUNE_STORAGE", "postgresql+psycopg2://someone@db.example/x")
    data = derived_config_mapping(load_config(cfg), "t-digits-confirm", 6)
    assert data["study"] == "t-digits-confirm" and data["trials"] == 6
    assert not {"baseline", "fidelity", "phases", "storage"} & set(data)  # storage: none in the file
    assert data["pruner"] == {"type": "none"} and data["sampler"] == {"type": "random", "seed": 4}
    original = yaml.safe_load(cfg.read_text())
    assert all(data[k] == original[k] for k in ("task", "space", "epochs", "train", "worker", "results"))


# --------------------------------------------------------------------------------------------- the CLI


@pytest.mark.postgres
@pytest.mark.slow
def test_rerun_top_runs_the_top_k_at_full_fidelity_with_new_seeds_once(tmp_path: Path, pg_url: str) -> None:
    # Screening only (no promotion): the originals ran on half the data for one epoch.
    cfg = write_config(
        tmp_path,
        storage=pg_url,
        trials=4,
        epochs=2,
        fidelity={"data_fraction": 0.5, "epochs": 1},
        pruner={"type": "none"},
    )
    assert run_worker(load_config(cfg)).by_state == {"COMPLETE": 4}
    original = studies(cfg)["t-digits"]
    top = [t.number for t in ranked_trials(original.trials, "maximize")[:2]]

    code, out, err = invoke(
        "rerun-top", "t-digits", "-c", str(cfg), "--k", "2", "--seeds", "2", "--local", "-w", "2"
    )
    assert code == 0, err
    assert f"confirming trial(s) {top[0]}, {top[1]} of t-digits with 2 new seed(s) each" in out
    assert "enqueued 4 trial(s); 0 already there" in out
    found = studies(cfg)
    original, confirm = found["t-digits"], found["t-digits-confirm"]
    assert [t.state for t in confirm.trials] == [TrialState.COMPLETE] * 4
    assert_confirms(original, cfg, confirm, top, seeds=2)
    derived = load_config(tmp_path / "t-digits-confirm.yaml")
    assert derived.config.storage == pg_url and derived.config.trials == 4
    records = read_trials(derived.study_dir).records
    for t in confirm.trials:
        record = records[t.number]
        assert record["seed"] == t.system_attrs[attrs.SEED]
        assert record["fidelity"] == {"data_fraction": 1.0, "epochs": 2}
        assert [e["epoch"] for e in record["epochs"]] == [1, 2]  # never pruned
    summary = json.loads((load_config(cfg).study_dir / "summary.json").read_text())
    assert sorted(c["source_trial"] for c in summary["confirmation"]["configs"]) == sorted(top)
    assert all(c["n"] == 2 for c in summary["confirmation"]["configs"])

    code, out, err = invoke("rerun-top", "t-digits", "-c", str(cfg), "--k", "2", "--seeds", "2")
    assert code == 0, err
    assert "enqueued 0 trial(s); 4 already there" in out
    assert "hpctune run --local --workers 2 -c " in out
    assert len(studies(cfg)["t-digits-confirm"].trials) == 4
    code, out, err = invoke("rerun-top", "t-digits-confirm", "-c", str(tmp_path / "t-digits-confirm.yaml"))
    assert code != 0 and out == ""
    assert err == (
        "Error: study 't-digits-confirm' is the confirmation of 't-digits'; for more seeds: "
        "hpctune rerun-top t-digits --seeds N (rerun-top)\n"
    )


@pytest.mark.postgres
def test_fewer_complete_trials_than_k_confirms_those_and_says_so(tmp_path: Path, pg_url: str) -> None:
    cfg = write_config(tmp_path, storage=pg_url)
    study = optuna.create_study(study_name="t-digits", storage=pg_url, direction="maximize")
    study.add_trial(trial(0.5))
    study.add_trial(trial(None, TrialState.FAIL))
    code, out, err = invoke("rerun-top", "t-digits", "-c", str(cfg), "--k", "3", "--seeds", "2")
    assert code == 0, err
    assert err == "warning: t-digits has 1 complete trial(s): confirming 1, not 3\n"
    assert "enqueued 2 trial(s)" in out
    confirm = studies(cfg)["t-digits-confirm"]
    assert confirmation_pairs(confirm) == [(0, 1), (0, 2)]  # train.seed 0: seeds 1 and 2
    assert load_config(tmp_path / "t-digits-confirm.yaml").config.trials == 2
    # More seeds later: only the new ones are enqueued, and the budget follows.
    code, out, err = invoke("rerun-top", "t-digits", "-c", str(cfg), "--k", "3", "--seeds", "3")
    assert code == 0 and "enqueued 1 trial(s); 2 already there" in out, err
    assert confirmation_pairs(studies(cfg)["t-digits-confirm"]) == [(0, 1), (0, 2), (0, 3)]
    assert load_config(tmp_path / "t-digits-confirm.yaml").config.trials == 3


@pytest.mark.postgres
@pytest.mark.parametrize("setup", ["unknown study", "no complete trial", "name of another study"])
def test_what_cannot_be_confirmed_is_one_error_line_and_enqueues_nothing(
    tmp_path: Path, pg_url: str, setup: str
) -> None:
    cfg = write_config(tmp_path, storage=pg_url)
    expected = {
        "unknown study": "Error: no study 't-digits'",
        "no complete trial": "Error: study 't-digits' has no complete trial to confirm (rerun-top)",
        "name of another study": "Error: study 'other' already exists and is not a confirmation; pass --name",
    }[setup]
    if setup != "unknown study":
        study = optuna.create_study(study_name="t-digits", storage=pg_url, direction="maximize")
        study.add_trial(trial(None, TrialState.PRUNED))
        study.add_trial(trial(None, TrialState.FAIL))
    if setup == "name of another study":
        study.add_trial(trial(0.5))
        other = optuna.create_study(study_name="other", storage=pg_url)
        other.add_trial(trial(0.1))
    before = {name: len(s.trials) for name, s in studies(cfg).items()}
    code, out, err = invoke(
        "rerun-top",
        "t-digits",
        "-c",
        str(cfg),
        "--name",
        "other" if "another" in setup else "t-digits-confirm",
    )
    assert code != 0 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(expected), err
    assert {name: len(s.trials) for name, s in studies(cfg).items()} == before
    assert not (tmp_path / "other.yaml").exists() and not (tmp_path / "t-digits-confirm.yaml").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--local", "--array", "0-1"],
            "Error: --local and --array exclude each other (hpctune rerun-top --help)",
        ),
        (["-w", "3"], "Error: --workers needs --local (hpctune rerun-top --help)"),
        (
            ["--array", "0-1", "--storage", "postgresql+psycopg2://someone@127.0.0.1:1/x"],
            "Error: SLURM workers read the storage from the config or HPCTUNE_STORAGE, not --storage",
        ),
    ],
)
def test_options_that_do_not_fit_together_are_one_error_line(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    cfg = write_config(tmp_path)
    code, out, err = invoke("rerun-top", "t-digits", "-c", str(cfg), *args)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith(expected), err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "t-digits-confirm.yaml").exists()


# --------------------------------------------------------------------------------------------- other tasks

# Reports the seed it was given and the value it computed from its parameters.
COMMAND_SCRIPT = """
import json, sys
lr, seed = float(sys.argv[1]), int(sys.argv[2])
print(json.dumps({"epoch": 1, "val_acc": lr, "seed_seen": seed}))
"""


@pytest.mark.postgres
def test_a_command_task_gets_the_enqueued_seed(tmp_path: Path, pg_url: str) -> None:
    (tmp_path / "train.py").write_text(COMMAND_SCRIPT)
    cfg = write_config(
        tmp_path,
        study="t-cmd",
        storage=pg_url,
        task={"command": [sys.executable, str(tmp_path / "train.py"), "{lr}", "{seed}"]},
        space={"lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True}},
        trials=3,
        epochs=1,
        pruner={"type": "none"},
        train={"seed": 7},
    )
    run_worker(load_config(cfg))
    plan = confirm_top(load_config(cfg), None, k=2, seeds=2)
    assert run_worker(plan.loaded).by_state == {"COMPLETE": 4}
    original, confirm = studies(cfg)["t-cmd"], studies(cfg)["t-cmd-confirm"]
    assert_confirms(original, cfg, confirm, list(plan.sources), seeds=2)
    assert confirmation_pairs(confirm) == sorted((s, seed) for s in plan.sources for seed in (8, 9))
    records = read_trials(plan.loaded.study_dir).records
    for t in confirm.trials:
        assert records[t.number]["epochs"][0]["seed_seen"] == t.system_attrs[attrs.SEED]
        assert t.value == pytest.approx(original.trials[t.user_attrs[attrs.CONFIRMS_TRIAL]].value)


OBJECTIVE = """
import random

def objective(trial):
    optimizer = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    if optimizer == "sgd":
        lr += trial.suggest_float("momentum", 0.8, 0.99)
    return lr + random.random()
"""


def test_an_objective_without_space_gets_the_sources_parameters_and_its_seed(tmp_path: Path) -> None:
    """On the embedded store, where the linked study has a journal of its own."""
    (tmp_path / "objective.py").write_text(OBJECTIVE)
    cfg = write_config(tmp_path, task="objective.py:objective", trials=4, epochs=1)
    data = yaml.safe_load(cfg.read_text())
    del data["space"]
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    run_worker(load_config(cfg))
    plan = confirm_top(load_config(cfg), None, k=3, seeds=2)
    assert run_worker(plan.loaded).by_state == {"COMPLETE": 6}
    original = studies(cfg)["t-digits"]
    confirm = optuna.load_study(
        study_name="t-digits-confirm",
        storage=open_store(resolve_storage(None, plan.loaded.study_dir)).storage,
    )
    assert_confirms(original, cfg, confirm, list(plan.sources), seeds=2)
    for t in confirm.trials:
        params = t.params
        base = params["lr"] + params.get("momentum", 0.0)
        assert t.value == pytest.approx(base + random.Random(t.system_attrs[attrs.SEED]).random())
    # The original's collector finds the linked study through the link rerun-top left on it.
    spec = resolve_storage(None, load_config(cfg).study_dir)
    found = load_confirmation(open_store(spec).storage, original)
    assert found is not None and found.study == "t-digits-confirm"
    assert sorted(c.source_trial for c in found.configs) == sorted(plan.sources)
    assert all(c.n == 2 and c.sd is not None for c in found.configs)


# --------------------------------------------------------------------------------------------- SLURM


@pytest.mark.slurm
@pytest.mark.postgres
@pytest.mark.slow
def test_rerun_top_on_a_slurm_array_runs_each_pair_once(
    tmp_path: Path, pg_url: str, slurm_cluster: SlurmCluster
) -> None:
    from hpc_tune.slurm import job_name_for, scancel, squeue_study

    (tmp_path / "objective.py").write_text(OBJECTIVE)
    study = "rt-" + tmp_path.name[-8:].replace("_", "-")
    slurm = {"cpus_per_task": 1, "mem": "300M", "time": "10", "signal_grace_s": 30}
    slurm["setup"] = [f"source {shlex.quote(str(Path(sys.executable).parent / 'activate'))}"]
    cfg = write_config(
        tmp_path, study=study, storage=pg_url, task="objective.py:objective", trials=3, slurm=slurm
    )
    data = yaml.safe_load(cfg.read_text())
    del data["space"]
    cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    run_worker(load_config(cfg))
    confirm_name = f"{study}-confirm"
    try:
        code, out, err = invoke(
            "rerun-top", study, "-c", str(cfg), "--k", "2", "--seeds", "2", "--array", "0-1"
        )
        assert code == 0, err
        assert "array job(s): " in out and "collector job: " in out

        def finished() -> bool:
            return not [t for t in squeue_study(job_name_for(confirm_name)) if t.active]

        assert wait_until(finished, timeout=240)
        found = studies(cfg)
        confirm = found[confirm_name]
        assert [t.state for t in confirm.trials] == [TrialState.COMPLETE] * 4
        assert_confirms(
            found[study],
            cfg,
            confirm,
            [t.number for t in ranked_trials(found[study].trials, "maximize")[:2]],
            2,
        )
        summary = json.loads(
            (load_config(tmp_path / f"{confirm_name}.yaml").study_dir / "summary.json").read_text()
        )
        assert summary["counts"]["COMPLETE"] == 4  # the collector job ran after the array
    finally:
        scancel(job_name=job_name_for(confirm_name))
