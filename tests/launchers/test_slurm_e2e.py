"""The cluster workflow for real: ``hpctune submit`` / by-hand ``sbatch jobs/*.sh`` on the one-node SLURM the
suite starts, real ``hpctune worker`` array tasks on a password-protected PostgreSQL, the collector job after
them, and a walltime signal that checkpoints, requeues and resumes a trial."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpc_tune.attrs import worker_of
from hpc_tune.config import load_config
from hpc_tune.policy.budget import budget_state
from hpc_tune.slurm import job_name_for, squeue_study
from tests.conftest import running_with_epochs, study_of, write_config
from tests.slurm_fixtures import SlurmCluster, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.slow]

VENV_ACTIVATE = Path(sys.executable).parent / "activate"
# Small tasks so that 4 run at once on the 8-CPU test node (scripts/slurm-local.sh declares 8 CPUs).
TEST_SLURM = {
    "cpus_per_task": 1,
    "mem": "300M",
    "time": "10",
    "signal_grace_s": 30,
    "setup": [f"source {shlex.quote(str(VENV_ACTIVATE))}"],
}


def hpctune(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hpc_tune", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(autouse=True)
def _test_reads_study_with_passfile(pg_secret_db: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSFILE", pg_secret_db["passfile"])


def job_env(secret: dict[str, str]) -> dict[str, str]:
    """sbatch exports this environment to the jobs: the password travels only inside PGPASSFILE."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCTUNE_", "PG"))}
    env.update(PGPASSFILE=secret["passfile"], OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def all_study_jobs(study: str) -> list[str]:
    return sorted({t.job_id for t in squeue_study(job_name_for(study), all_states=True)})


def wait_for_study_jobs(study: str, timeout: float) -> None:
    def none_active() -> bool:
        return not [t for t in squeue_study(job_name_for(study)) if t.active]

    assert wait_until(none_active, timeout=timeout) is not None


def wait_for_epochs_of_trial_0(cfg: Path, epochs: int) -> optuna.trial.FrozenTrial:
    """Trial 0 once it has reported ``epochs`` epochs (the workers create the study: it may not exist yet)."""
    found: list[optuna.trial.FrozenTrial] = []
    opened: list[optuna.Study] = []  # one storage for all the polls, not a connection pool per poll

    def reported() -> bool:
        try:
            if not opened:
                opened.append(study_of(cfg))
            trials = opened[0].get_trials(deepcopy=False)
        except (KeyError, optuna.exceptions.StorageInternalError):
            return False
        if trials and len(trials[0].intermediate_values) >= epochs:
            found.append(trials[0])
        return bool(found)

    assert wait_until(reported, timeout=120) is not None
    return found[0]


def worker_pids() -> list[int]:
    """Processes running ``hpctune worker`` (the array tasks exec into it)."""
    found = subprocess.run(["pgrep", "-f", "hpc_tune.*worker|hpctune worker"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def assert_password_nowhere(secret: dict[str, str], *roots: Path) -> None:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and path.suffix not in (".pt",) and path.name != "journal.log":
                assert secret["password"] not in path.read_text(errors="replace"), path


def check_finished_study(cfg: Path, tasks: set[int], total: int) -> dict[str, object]:
    study = study_of(cfg)
    trials = study.get_trials(deepcopy=False)
    state = budget_state(trials, total)
    assert state.finished == total and state.running == 0 and state.waiting == 0, [
        (t.number, t.state.name) for t in trials
    ]
    contributed = {worker_of(t).get("array_task_id") for t in trials}
    assert tasks <= contributed, contributed  # every array task pulled trials from the one study
    summary_path = load_config(cfg).study_dir / "summary.json"
    assert summary_path.is_file(), "the collector job wrote no summary"
    summary = json.loads(summary_path.read_text())
    assert summary["budget"]["finished"] == total
    return summary


def test_submit_array_with_postgres_collects_after_all_tasks(
    tmp_path: Path, slurm_cluster: SlurmCluster, pg_secret_db: dict[str, str]
) -> None:
    study = "e2e-" + tmp_path.name[-8:].replace("_", "-")
    cfg = write_config(
        tmp_path, study=study, storage=pg_secret_db["url"], trials=12, epochs=3, slurm=TEST_SLURM
    )
    env = job_env(pg_secret_db)
    result = hpctune("submit", "-c", str(cfg), "--array", "0-3", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "collector job:" in result.stdout
    # While the tasks run, no process shows the password in its arguments or its environment.
    assert wait_until(lambda: bool(worker_pids()), timeout=120), "no array task started"
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert pg_secret_db["password"] not in ps
    for pid in worker_pids():
        for part in ("cmdline", "environ"):
            try:
                seen = Path(f"/proc/{pid}/{part}").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                continue  # the task ended meanwhile
            assert pg_secret_db["password"].encode() not in seen, (pid, part)
    wait_for_study_jobs(study, timeout=240)
    summary = check_finished_study(cfg, {0, 1, 2, 3}, total=12)
    logs = load_config(cfg).study_dir / "logs"
    assert sorted(p.name.split("_")[0] for p in logs.glob("array-*.out"))
    # One collector: submit's own. The array's first task saw HPCTUNE_COLLECTOR=submitted and queued none.
    assert len(list(logs.glob("collect-*.out"))) == 1, "no collector log, or two collectors"
    collect_log = next(logs.glob("collect-*.out")).read_text()
    assert f"study {study}: 12/12 finished" in collect_log
    # Optuna's ExperimentalWarning (heartbeat, stale trials) is silenced in workers and collector alike.
    for log in [*logs.glob("collect-*.err"), *logs.glob("array-*.err")]:
        assert "ExperimentalWarning" not in log.read_text(), log
    assert summary["counts"]["RUNNING"] == 0  # type: ignore[index]
    status = hpctune("status", "-c", str(cfg), env=env, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith(f"study {study}: 12/12 finished (COMPLETE ")
    assert_password_nowhere(pg_secret_db, tmp_path / "jobs", load_config(cfg).study_dir)


def test_literal_sbatch_jobs_glob_runs_array_and_collector(
    tmp_path: Path, slurm_cluster: SlurmCluster, pg_secret_db: dict[str, str]
) -> None:
    """What the README says after render: `sbatch jobs/*.sh`, as typed (the shell expands the glob)."""
    study = "hand-" + tmp_path.name[-8:].replace("_", "-")
    cfg = write_config(
        tmp_path, study=study, storage=pg_secret_db["url"], trials=8, epochs=2, slurm=TEST_SLURM
    )
    env = job_env(pg_secret_db)
    rendered = hpctune("render", "-c", str(cfg), "--array", "0-1", env=env, cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.splitlines()[-1] == "submit by hand: sbatch jobs/*.sh"
    assert [p.name for p in (tmp_path / "jobs").glob("*.sh")] == [f"{study}.sh"]
    typed = subprocess.run(
        ["bash", "-c", "sbatch jobs/*.sh"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert typed.returncode == 0, typed.stderr
    array_id = typed.stdout.split()[-1]
    # The collector is queued by task 0 before its worker starts, so it is in squeue while the array is.
    wait_for_study_jobs(study, timeout=240)
    check_finished_study(cfg, {0, 1}, total=8)  # the summary exists: the collector ran
    logs = load_config(cfg).study_dir / "logs"
    assert "hpctune: submitted the collector as job " in (logs / f"array-{array_id}_0.out").read_text()
    assert len(list(logs.glob("collect-*.out"))) == 1
    assert f"study {study}: 8/8 finished" in next(logs.glob("collect-*.out")).read_text()
    assert_password_nowhere(pg_secret_db, tmp_path / "jobs", load_config(cfg).study_dir)


def test_walltime_signal_checkpoints_requeues_and_resumes(
    tmp_path: Path, slurm_cluster: SlurmCluster, pg_secret_db: dict[str, str]
) -> None:
    study = "wall-" + tmp_path.name[-8:].replace("_", "-")
    cfg = write_config(
        tmp_path,
        study=study,
        storage=pg_secret_db["url"],
        trials=2,
        epochs=6,
        pruner={"type": "none"},
        slurm=TEST_SLURM,
    )
    env = job_env(pg_secret_db)
    env["HPCTUNE_FAULT"] = "sleep@1:0.7#trial=0"  # test-only: slow epochs so the signal lands mid-trial
    result = hpctune("submit", "-c", str(cfg), "--array", "0", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    array_id = result.stdout.split("array job(s): ")[1].split()[0].rstrip(",")
    wait_for_epochs_of_trial_0(cfg, 2)
    # What SLURM does at --signal=B:USR2@N: signal the batch shell, which exec made the worker itself.
    subprocess.run(["scancel", "--signal=USR2", "--batch", f"{array_id}_0"], check=True)
    wait_for_study_jobs(study, timeout=240)
    trials = study_of(cfg).get_trials(deepcopy=False)
    first, continued = trials[0], trials[1]
    assert first.state == TrialState.FAIL and first.user_attrs["reason"] == "walltime"
    assert continued.system_attrs["resumed_from"] == 0 and continued.params == first.params
    assert continued.state == TrialState.COMPLETE
    assert worker_of(continued)["restart_count"] == 1  # run by the requeued task
    record = json.loads((load_config(cfg).study_dir / "trials" / "trial-1.json").read_text())
    assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3, 4, 5, 6]  # every epoch exactly once
    assert sorted(continued.intermediate_values) == [1, 2, 3, 4, 5, 6]
    assert not list((load_config(cfg).study_dir / "checkpoints").glob("*.pt"))
    state = budget_state(trials, 2)
    assert state.finished == 2 and state.running == 0 and state.waiting == 0


def test_cancel_leaves_no_running_trial(
    tmp_path: Path, slurm_cluster: SlurmCluster, pg_secret_db: dict[str, str]
) -> None:
    study = "cancel-" + tmp_path.name[-8:].replace("_", "-")
    cfg = write_config(
        tmp_path,
        study=study,
        storage=pg_secret_db["url"],
        trials=8,
        epochs=30,
        pruner={"type": "none"},
        baseline={"lr": 0.05, "hidden": 16, "optimizer": "adamw"},
        slurm=TEST_SLURM,
    )
    env = job_env(pg_secret_db)
    env["HPCTUNE_FAULT"] = "sleep@1:0.5"  # test-only: long trials, so they are running when cancelled
    assert hpctune("submit", "-c", str(cfg), "--array", "0-1", env=env, cwd=tmp_path).returncode == 0
    at_work = running_with_epochs(cfg)
    assert wait_until(lambda: len(at_work()) == 2, timeout=120) is not None
    result = hpctune("cancel", "-c", str(cfg), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("cancelled job(s): ")
    wait_for_study_jobs(study, timeout=120)
    trials = study_of(cfg).get_trials(deepcopy=False)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 2 and {t.user_attrs["reason"] for t in failed} <= {"interrupted", "cancelled"}
    assert len([t for t in trials if t.state == TrialState.WAITING]) == 2  # re-enqueued: a resubmit goes on

    # Resubmit: the study completes, and the baseline (cancelled while it ran) is reported from its retry.
    env.pop("HPCTUNE_FAULT")
    assert hpctune("submit", "-c", str(cfg), "--array", "0-1", env=env, cwd=tmp_path).returncode == 0
    wait_for_study_jobs(study, timeout=240)
    summary = json.loads((load_config(cfg).study_dir / "summary.json").read_text())
    assert summary["budget"]["finished"] == 8 and summary["counts"]["RUNNING"] == 0
    assert summary["baseline"]["state"] == "COMPLETE" and summary["baseline"]["trial"] != 0


# An existing script, tuned as it is on the cluster: it checkpoints every epoch and stops after the epoch in
# which USR2 came. Trials 0 and 1 and every continuation learn well; any other trial starts badly and would
# then run for ten minutes, so the test can only finish if the pruner stops it.
COMMAND_SCRIPT = """
import json, os, signal, sys, time
trial, epochs, ckpt, resume = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
stop = []
signal.signal(signal.SIGUSR2, lambda *_: stop.append(1))
good = trial < 2 or resume
start = json.load(open(ckpt))["epoch"] + 1 if resume else 1
print(f"trial {trial} starts at epoch {start}", flush=True)
for epoch in range(start, epochs + 1):
    if not good:
        print(json.dumps({"epoch": epoch, "val_acc": 0.1}), flush=True)
        time.sleep(600)
    time.sleep(1.0)
    print(json.dumps({"epoch": epoch, "val_acc": 0.5 + epoch / 20}), flush=True)
    json.dump({"epoch": epoch}, open(ckpt + ".tmp", "w"))
    os.replace(ckpt + ".tmp", ckpt)
    if stop:
        sys.exit(0)
"""


def test_command_task_array_prunes_and_resumes_its_checkpoint_after_walltime(
    tmp_path: Path, slurm_cluster: SlurmCluster, pg_secret_db: dict[str, str]
) -> None:
    study = "cmd-" + tmp_path.name[-8:].replace("_", "-")
    script = tmp_path / "train.py"
    script.write_text(COMMAND_SCRIPT)
    cfg = write_config(
        tmp_path,
        study=study,
        storage=pg_secret_db["url"],
        task={
            "command": f"python {script} {{trial}} {{epochs}} {{checkpoint}} {{resume}}",
            "kill_grace_s": 2,
        },
        space={"lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True}},
        trials=4,
        epochs=8,
        pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
        slurm=TEST_SLURM,
    )
    result = hpctune("submit", "-c", str(cfg), "--array", "0-1", env=job_env(pg_secret_db), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    array_id = result.stdout.split("array job(s): ")[1].split()[0].rstrip(",")
    task = worker_of(wait_for_epochs_of_trial_0(cfg, 2))["array_task_id"]
    subprocess.run(["scancel", "--signal=USR2", "--batch", f"{array_id}_{task}"], check=True)
    wait_for_study_jobs(study, timeout=300)

    trials = study_of(cfg).get_trials(deepcopy=False)
    state = budget_state(trials, 4)
    assert state.finished == 4 and state.running == 0 and state.waiting == 0
    first = trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["reason"] == "walltime"
    (continued,) = [t for t in trials if t.system_attrs.get("resumed_from") == 0]
    assert continued.state == TrialState.COMPLETE and sorted(continued.intermediate_values) == list(
        range(1, 9)
    )
    study_dir = load_config(cfg).study_dir
    log = (study_dir / "trials" / f"trial-{continued.number}" / "stdout.log").read_text()
    assert f"trial {continued.number} starts at epoch 1" not in log  # resumed from the checkpoint
    bad = [t for t in trials if t.number >= 2 and t.number != continued.number]
    assert bad and all(t.state == TrialState.PRUNED for t in bad), [(t.number, t.state.name) for t in bad]
