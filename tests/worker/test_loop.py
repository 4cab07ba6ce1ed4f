"""The worker protocol on real storages: budget, JSON per trial, heartbeat, signals, faults.

Workers run as real processes (``python -m hpc_tune worker``) against the PostgreSQL server the suite starts,
or through ``run_local`` on the embedded journal store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpc_tune.attrs import worker_of
from hpc_tune.collector.collect import reason_of
from hpc_tune.config import load_config
from hpc_tune.launchers.local import run_local
from hpc_tune.policy.budget import budget_state
from hpc_tune.policy.reruns import retried_numbers
from hpc_tune.storage.records import read_trials
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage
from tests.conftest import wait_until, worker_env, write_config


def start_worker(cfg: Path, index: int, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpc_tune", "worker", "-c", str(cfg), "--worker-index", str(index)],
        env=worker_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def load(cfg: Path) -> tuple[optuna.Study, Path]:
    loaded = load_config(cfg)
    spec = resolve_storage(loaded.config.storage, loaded.study_dir)
    return optuna.load_study(
        study_name=loaded.config.study, storage=open_store(spec).storage
    ), loaded.study_dir


def load_when_created(cfg: Path, timeout: float = 60) -> tuple[optuna.Study, Path]:
    """The workers create the study; wait until one of them has."""
    found: list[tuple[optuna.Study, Path]] = []

    def ready() -> bool:
        try:
            found.append(load(cfg))
        except (KeyError, optuna.exceptions.StorageInternalError):
            return False
        return True

    assert wait_until(ready, timeout=timeout)
    return found[-1]


def assert_study_consistent(study: optuna.Study, study_dir: Path, total: int, epochs: int) -> None:
    """Exactly ``total`` finished trials, none left running, and one consistent JSON per trial."""
    trials = study.get_trials(deepcopy=False)
    state = budget_state(trials, total)
    assert state.finished == total, [t.state.name for t in trials]
    assert state.running == 0 and state.waiting == 0
    loaded = read_trials(study_dir)
    assert loaded.quarantined == []
    assert sorted(loaded.records) == [t.number for t in trials]
    for t in trials:
        record = loaded.records[t.number]
        assert record["state"] == t.state.name
        assert record["params"] == t.params
        steps = [e["epoch"] for e in record["epochs"]]
        assert steps == list(range(1, len(steps) + 1)), steps  # every epoch once, in order
        reported = {e["epoch"]: e["val_acc"] for e in record["epochs"]}
        assert reported == {s: pytest.approx(v) for s, v in t.intermediate_values.items()}
        if t.state == TrialState.COMPLETE:
            assert len(steps) == epochs
            assert record["value"] == pytest.approx(t.value) == pytest.approx(max(reported.values()))
        if t.state == TrialState.PRUNED:
            assert record["reason"] == "pruned" and len(steps) < epochs


@pytest.mark.postgres
@pytest.mark.slow
def test_four_workers_share_one_postgres_study_and_stop_at_budget(tmp_path: Path, pg_url: str) -> None:
    cfg = write_config(
        tmp_path,
        storage=pg_url,
        trials=40,
        epochs=3,
        baseline={"lr": 0.01, "hidden": 16, "optimizer": "adamw"},
    )
    procs = [start_worker(cfg, i) for i in range(4)]
    outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    study, study_dir = load(cfg)
    assert_study_consistent(study, study_dir, total=40, epochs=3)
    assert len(study.trials) == 40  # nothing retried, so exactly 40 trials exist
    assert sum(1 for t in study.trials if t.user_attrs.get("baseline")) == 1  # enqueued once despite 4 racers
    assert len({worker_of(t)["pid"] for t in study.trials}) >= 2  # really shared between processes


@pytest.mark.slow
def test_local_workers_on_embedded_store_stop_at_budget(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, trials=40, epochs=3)
    report = run_local(load_config(cfg), None, 4, environ=worker_env())
    assert report.failed_workers == [] and report.recovered_trials == []
    study, study_dir = load(cfg)
    assert_study_consistent(study, study_dir, total=40, epochs=3)
    assert len(study.trials) == 40
    assert (study_dir / "journal.log").is_file()


def _running_trial_of(study: optuna.Study, pid: int) -> optuna.trial.FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if worker_of(t).get("pid") == pid and t.intermediate_values:
            return t
    return None


def _assert_killed_trial_retried(study: optuna.Study, victim: int, reason: str) -> None:
    trials = study.get_trials(deepcopy=False)
    killed = trials[victim]
    assert killed.state == TrialState.FAIL
    assert reason_of(killed, None, retried_numbers(trials)) == reason
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1
    assert retries[0].params == killed.params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.mark.postgres
@pytest.mark.slow
def test_sigkilled_worker_trial_fails_by_heartbeat_and_is_retried(tmp_path: Path, pg_url: str) -> None:
    cfg = write_config(tmp_path, storage=pg_url, trials=16, epochs=4)
    slow = {"HPCTUNE_FAULT": "sleep@1:0.4"}  # test-only: 0.4 s per epoch so the kill lands mid-trial
    procs = [start_worker(cfg, i, **slow) for i in range(4)]
    study, study_dir = load_when_created(cfg)
    victim_pid = procs[0].pid
    assert wait_until(lambda: _running_trial_of(study, victim_pid) is not None, timeout=120)
    victim = _running_trial_of(study, victim_pid)
    assert victim is not None
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()
    for p in procs[1:]:
        out = p.communicate(timeout=300)[0].decode()
        assert p.returncode == 0, out
    _assert_killed_trial_retried(study, victim.number, "heartbeat_stale")
    state = budget_state(study.get_trials(deepcopy=False), 16)
    assert state.finished == 16 and state.running == 0 and state.waiting == 0
    record = json.loads((study_dir / "trials" / f"trial-{victim.number}.json").read_text())
    assert record["state"] == "FAIL" and record["reason"] == "heartbeat_stale"
    assert len(record["epochs"]) >= 1  # the epochs it ran before dying are kept


@pytest.mark.slow
def test_sigkilled_local_worker_is_recovered_by_parent(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, trials=10, epochs=4)
    loaded = load_config(cfg)
    results: dict[str, object] = {}
    thread = threading.Thread(
        target=lambda: results.setdefault(
            "report", run_local(loaded, None, 2, environ=worker_env(HPCTUNE_FAULT="sleep@1:0.4"))
        ),
    )
    thread.start()
    study, study_dir = load_when_created(cfg)

    def victim() -> optuna.trial.FrozenTrial | None:
        running = [
            t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.intermediate_values
        ]
        return running[0] if running else None

    assert wait_until(lambda: victim() is not None, timeout=120)
    target = victim()
    assert target is not None
    os.kill(worker_of(target)["pid"], signal.SIGKILL)
    thread.join(timeout=300)
    report = results["report"]
    assert report.recovered_trials == [target.number]  # type: ignore[attr-defined]
    assert report.replacements == 1  # type: ignore[attr-defined]
    _assert_killed_trial_retried(study, target.number, "worker_killed")
    state = budget_state(study.get_trials(deepcopy=False), 10)
    assert state.finished == 10 and state.running == 0 and state.waiting == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_leaves_no_running_trial(tmp_path: Path, sig: signal.Signals) -> None:
    cfg = write_config(tmp_path, trials=5, epochs=6)
    proc = start_worker(cfg, 0, HPCTUNE_FAULT="sleep@1:0.5")
    study, study_dir = load_when_created(cfg)
    assert wait_until(lambda: _running_trial_of(study, proc.pid) is not None, timeout=60)
    proc.send_signal(sig)
    out = proc.communicate(timeout=60)[0].decode()
    assert proc.returncode == 143, out
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    assert len(interrupted) == 1 and interrupted[0].user_attrs["reason"] == "interrupted"
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 1 and waiting[0].params == interrupted[0].params  # retried, costs no budget
    record = json.loads((study_dir / "trials" / f"trial-{interrupted[0].number}.json").read_text())
    assert record["state"] == "FAIL" and record["reason"] == "interrupted"


@pytest.mark.parametrize(("fault", "reason"), [("nan@2#trial=1", "nonfinite_loss"), ("oom@1#trial=1", "oom")])
def test_faulty_trial_fails_with_reason_and_worker_continues(tmp_path: Path, fault: str, reason: str) -> None:
    cfg = write_config(tmp_path, trials=3, epochs=3, pruner={"type": "none"})
    proc = start_worker(cfg, 0, HPCTUNE_FAULT=fault)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out
    study, study_dir = load(cfg)
    states = {t.number: (t.state.name, t.user_attrs.get("reason")) for t in study.trials}
    assert states == {0: ("COMPLETE", None), 1: ("FAIL", reason), 2: ("COMPLETE", None)}
    record = json.loads((study_dir / "trials" / "trial-1.json").read_text())
    assert record["state"] == "FAIL" and record["reason"] == reason


def test_exception_in_task_is_recorded_and_worker_continues(tmp_path: Path) -> None:
    task = tmp_path / "boom.py"
    task.write_text(
        "def objective(trial):\n"
        "    x = trial.suggest_float('lr', 1e-3, 0.3, log=True)\n"
        "    if trial.number == 1:\n"
        "        raise RuntimeError('boom')\n"
        "    for step in range(1, 3):\n"
        "        trial.report(x * step, step)\n"
        "    return x\n"
    )
    cfg = write_config(
        tmp_path,
        trials=3,
        task=f"{task}:objective",
        space={"lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True}},
    )
    proc = start_worker(cfg, 0)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 0, out
    study, study_dir = load(cfg)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert study.trials[1].user_attrs["reason"] == "exception:RuntimeError"
    record = json.loads((study_dir / "trials" / "trial-0.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2]
    assert record["value"] == pytest.approx(study.trials[0].value)


@pytest.mark.postgres
@pytest.mark.slow
def test_database_restart_mid_trial_loses_nothing(tmp_path: Path, pg_url: str, postgres_server) -> None:  # type: ignore[no-untyped-def]
    """A real PostgreSQL restart while a trial runs: storage calls and the heartbeat retry through it, the
    trial completes instead of failing, and the study still ends at its budget."""
    import time

    cfg = write_config(
        tmp_path,
        storage=pg_url,
        trials=3,
        epochs=6,
        pruner={"type": "none"},
        worker={"heartbeat_interval": 1, "grace_period": 30},
    )
    proc = start_worker(cfg, 0, HPCTUNE_FAULT="sleep@1:0.5")
    study, study_dir = load_when_created(cfg)
    assert wait_until(lambda: _running_trial_of(study, proc.pid) is not None, timeout=60)
    postgres_server.stop("fast")  # drops every connection, like a failover
    time.sleep(2.0)
    postgres_server.start()
    out = proc.communicate(timeout=240)[0].decode()
    assert proc.returncode == 0, out
    trials = load(cfg)[0].get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, out
    assert_study_consistent(load(cfg)[0], study_dir, total=3, epochs=6)


def test_a_halved_validation_never_makes_a_subset_the_trials_value(tmp_path: Path) -> None:
    """train.val_fraction: the pruner sees the half's values every epoch; the value told to Optuna and written
    in the JSON is the whole validation set's, of the last epoch's or the best epoch's weights."""
    train = {"batch_size": 64, "compile": "off", "val_fraction": 0.5, "schedule": {"type": "none"}}
    cfg = write_config(tmp_path, trials=4, epochs=3, pruner={"type": "none"}, train=train)
    report = run_local(load_config(cfg), None, 1, environ=worker_env())
    assert report.failed_workers == []
    study, study_dir = load(cfg)
    records = read_trials(study_dir).records
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    for t in complete:
        record = records[t.number]
        full = record["full_validation"]
        assert [r["of"] for r in full][:1] == ["final"] and all(r["val_samples"] == 360 for r in full)
        best_full = max(r["val_acc"] for r in full)
        assert record["best"]["validated_on"] == "full"
        assert t.value == pytest.approx(best_full) == pytest.approx(record["value"])
        # the curve the pruner saw is the half's: not the values the trial was judged by
        assert {e["epoch"]: e["val_acc"] for e in record["epochs"]} == pytest.approx(t.intermediate_values)
    assert any(t.value != max(t.intermediate_values.values()) for t in complete)
