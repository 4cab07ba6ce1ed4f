"""Faults of workers and of the results directory: a killed continuation, a requeue race, Ctrl-C then
resubmit, a results directory that cannot be written, damaged JSON. Real processes, real PostgreSQL (or
the embedded store where the row is about local runs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpc_tune import attrs
from hpc_tune.attrs import worker_of
from hpc_tune.collector.collect import collect
from hpc_tune.config import load_config
from hpc_tune.policy.budget import budget_state
from hpc_tune.storage.records import read_trials
from tests.chaos.helpers import finish, read_json, running, start_worker
from tests.conftest import wait_until, worker_env, write_config
from tests.worker.test_loop import load, load_when_created

FAST_LIVENESS = {"heartbeat_interval": 1, "grace_period": 3, "max_retry": 1}


@pytest.mark.postgres
@pytest.mark.slow
def test_sigkill_of_a_continuation_is_retried_from_its_checkpoint(tmp_path: Path, pg_url: str) -> None:
    cfg = write_config(
        tmp_path, storage=pg_url, trials=2, epochs=6, pruner={"type": "none"}, worker=FAST_LIVENESS
    )
    slow = {"HPCTUNE_FAULT": "sleep@1:0.6"}
    first = start_worker(cfg, 0, **slow)
    study, study_dir = load_when_created(cfg)
    assert wait_until(lambda: any(len(t.intermediate_values) >= 2 for t in running(study)), timeout=120)
    first.send_signal(signal.SIGUSR2)  # walltime near: checkpoint, hand on, leave
    ((code, out),) = finish([first])
    assert code == 0 and "stopped by walltime" in out, out
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["reason"] == "walltime"
    continuation = trials[1]
    assert continuation.state == TrialState.WAITING
    resume_epoch = continuation.system_attrs[attrs.RESUME_EPOCH]

    second = start_worker(cfg, 1, **slow)  # takes the continuation, then is killed in the middle of it

    def trained_past_checkpoint() -> bool:
        t = study.get_trials(deepcopy=False)[1]
        return t.state == TrialState.RUNNING and len(t.intermediate_values) > resume_epoch

    assert wait_until(trained_past_checkpoint, timeout=120)
    second.send_signal(signal.SIGKILL)
    second.wait()

    ((code, out),) = finish([start_worker(cfg, 2)])
    assert code == 0, out
    trials = load(cfg)[0].get_trials(deepcopy=False)
    assert trials[1].state == TrialState.FAIL and read_json(study_dir / "trials" / "trial-1.json")[
        "reason"
    ] == ("heartbeat_stale")
    reruns = [t for t in trials if 1 in t.system_attrs.get("retry_history", []) and t.number != 1]
    assert len(reruns) == 1, [(t.number, t.system_attrs) for t in trials]
    rerun = reruns[0]
    assert rerun.state == TrialState.COMPLETE and rerun.params == trials[0].params
    assert attrs.RESUME_CHECKPOINT in rerun.system_attrs  # resumed, not started over
    record = read_json(study_dir / "trials" / f"trial-{rerun.number}.json")
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3, 4, 5, 6]  # every epoch exactly once
    state = budget_state(trials, 2)
    assert state.finished == 2 and state.running == 0 and state.waiting == 0


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_with_the_same_array_task_id_never_share_a_trial(tmp_path: Path, pg_url: str) -> None:
    """A requeue race: SLURM starts a requeued task while its first run is still ending. Both processes
    carry the same SLURM ids (set here as SLURM sets them; the race itself needs no scheduler)."""
    cfg = write_config(tmp_path, storage=pg_url, trials=10, epochs=3, worker=FAST_LIVENESS)
    ids = {"SLURM_JOB_ID": "4242", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "3"}
    results = finish([start_worker(cfg, 3, **ids, HPCTUNE_FAULT="sleep@1:0.1") for _ in range(2)])
    assert [code for code, _ in results] == [0, 0], results
    study, study_dir = load(cfg)
    trials = study.get_trials(deepcopy=False)
    assert budget_state(trials, 10).finished == 10 and len(trials) == 10
    records = read_trials(study_dir).records
    for t in trials:
        assert worker_of(t)["array_task_id"] == 3
        # The JSON was written by the process that ran (and told) the trial: nothing overwritten.
        assert records[t.number]["pid"] == worker_of(t)["pid"] and records[t.number]["state"] == t.state.name
    assert len({worker_of(t)["pid"] for t in trials}) == 2


@pytest.mark.slow
def test_ctrl_c_then_resubmit_reports_the_baseline_from_its_finished_retry(tmp_path: Path) -> None:
    baseline = {"lr": 0.05, "hidden": 16, "optimizer": "adamw"}
    cfg = write_config(tmp_path, trials=6, epochs=4, baseline=baseline, pruner={"type": "none"})
    cmd = [sys.executable, "-m", "hpc_tune", "run", "--local", "--workers", "2", "-c", str(cfg)]
    env = worker_env(HPCTUNE_FAULT="sleep@1:0.4")
    first = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    study, study_dir = load_when_created(cfg)
    assert wait_until(lambda: any(t.user_attrs.get("baseline") for t in running(study)), timeout=120)
    os.killpg(first.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
    first.communicate(timeout=120)
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[0].user_attrs.get("baseline") and trials[0].state == TrialState.FAIL

    second = subprocess.run(cmd, env=worker_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    summary = read_json(study_dir / "summary.json")
    base = summary["baseline"]
    assert base["state"] == "COMPLETE" and base["trial"] != 0 and base["params"] == baseline
    assert f"baseline: trial {base['trial']}, val_acc" in second.stdout


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)


@pytest.fixture
def tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.fail("the results-directory faults mount a tmpfs: run the suite as root (CI does)")
    mounts: list[Path] = []

    def make(name: str, size: str) -> Path:
        path = tmp_path / name
        _mount_tmpfs(path, size)
        mounts.append(path)
        return path

    yield make
    for path in mounts:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.postgres
@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_unwritable_results_directory_is_one_error_line_and_a_consistent_study(
    tmp_path: Path, pg_url: str, tmpfs, fault: str
) -> None:  # type: ignore[no-untyped-def]
    results = tmpfs("results", "64k" if fault == "full" else "1m")
    if fault == "full":
        (results / "filler").write_bytes(b"\0" * (64 * 1024 - 4096))  # leave less than one trial record
    else:
        subprocess.run(["mount", "-o", "remount,ro", str(results)], check=True)
    cfg = write_config(tmp_path, storage=pg_url, trials=3, epochs=2, results=str(results / "runs"))
    ((code, out),) = finish([start_worker(cfg, 0)])
    errors = [line for line in out.splitlines() if line.startswith("Error: ")]
    assert code == 6 and len(errors) == 1, out
    assert "cannot write the trial record" in errors[0] and "Traceback" not in out
    study = load(cfg)[0]
    trials = study.get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["reason"] == "results_unwritable"
    assert [t.state for t in trials[1:]] == [TrialState.WAITING]  # re-run later, costs no budget
    assert budget_state(trials, 3).counted == 1


def test_truncated_and_foreign_json_are_quarantined_and_collect_succeeds(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, trials=3, epochs=2)
    ((code, out),) = finish([start_worker(cfg, 0)])
    assert code == 0, out
    study, study_dir = load(cfg)
    trials_dir = study_dir / "trials"
    whole = (trials_dir / "trial-1.json").read_text()
    (trials_dir / "trial-1.json").write_text(whole[: len(whole) // 2])  # a crash mid-copy by hand
    (trials_dir / "trial-7.json").write_text('{"schema_version": 99, "anything": true}')  # another tool's
    foreign = read_json(trials_dir / "trial-2.json") | {"study": "someone-else"}
    (trials_dir / "trial-9.json").write_text(json.dumps(foreign))  # copied in from another study
    (trials_dir / "notes.json").write_text("[1, 2, 3]")  # not named as a trial record: not ours, left alone
    result = collect(study, study_dir, budget=load_config(cfg).config.trials)
    quarantined = sorted(q.file for q in result.summary.quarantined)
    assert quarantined == ["trial-1.json", "trial-7.json", "trial-9.json"], result.summary.quarantined
    assert (trials_dir / "notes.json").read_text() == "[1, 2, 3]"
    assert result.summary.budget.finished == 3 and len(result.summary.trials) == 3
    assert result.summary_path.is_file()
