"""``slurm.trials_per_gpu`` on the one-node SLURM the suite starts: rendered array scripts submitted with
sbatch, each task's ``hpctune worker`` running two workers on a password-protected PostgreSQL study, and the
walltime signal SLURM sends the batch shell (``scancel --signal=USR2 --batch``) reaching both workers, with
one requeue of the task. No collector (HPCTUNE_COLLECTOR=submitted): the study is read here."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpc_tune.attrs import worker_of
from hpc_tune.config import load_config
from hpc_tune.policy.budget import budget_state
from tests.conftest import running_with_epochs, study_of, write_config
from tests.launchers.test_task_pack import OBJECTIVE
from tests.slurm_fixtures import SlurmCluster, wait_for_jobs, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.slow]

VENV_ACTIVATE = Path(sys.executable).parent / "activate"
PACK_SLURM = {
    "cpus_per_task": 2,
    "mem": "1G",
    "time": "10",
    "signal_grace_s": 30,
    "trials_per_gpu": 2,
    "setup": [f"source {shlex.quote(str(VENV_ACTIVATE))}"],
}


@pytest.fixture(autouse=True)
def _reads_study_with_passfile(pg_secret_db: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSFILE", pg_secret_db["passfile"])


def submit_array(
    tmp_path: Path, secret: dict[str, str], array: str, sleep: float, **overrides: object
) -> tuple[Path, str]:
    """Render the study's scripts and sbatch the array alone; returns the config and the array's job id."""
    (tmp_path / "obj.py").write_text(OBJECTIVE)
    study = "pack-" + tmp_path.name[-8:].replace("_", "-")
    settings: dict[str, object] = {
        "study": study,
        "storage": secret["url"],
        "task": "obj.py:objective",
        "metric": "value",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "pruner": {"type": "none"},
        "sampler": {"type": "tpe", "seed": 1, "n_startup_trials": 4},
        "slurm": PACK_SLURM,
    }
    settings.update(overrides)
    cfg = write_config(tmp_path, **settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCTUNE_", "PG"))}
    env.update(PGPASSFILE=secret["passfile"], OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    rendered = subprocess.run(
        [sys.executable, "-m", "hpc_tune", "render", "-c", str(cfg), "--array", array],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr
    script = tmp_path / "jobs" / f"{study}.sh"
    assert "slurm.trials_per_gpu: 2: this `hpctune worker` runs 2 workers" in script.read_text()
    env.update(HPCTUNE_COLLECTOR="submitted", PACK_TEST_SLEEP=str(sleep))
    sbatch = subprocess.run(
        ["sbatch", "--parsable", str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert sbatch.returncode == 0, sbatch.stderr
    return cfg, sbatch.stdout.strip().split(";")[0]


def pids_by_run(trials: list[optuna.trial.FrozenTrial]) -> dict[tuple[int, int], set[int]]:
    """The worker pids that ran trials, by (array task, restart count)."""
    found: dict[tuple[int, int], set[int]] = defaultdict(set)
    for t in trials:
        w = worker_of(t)
        found[(w["array_task_id"], w.get("restart_count", 0))].add(w["pid"])
    return dict(found)


def test_two_tasks_run_two_workers_each_on_one_study(
    tmp_path: Path, slurm_cluster: SlurmCluster, pg_secret_db: dict[str, str]
) -> None:
    cfg, array_id = submit_array(tmp_path, pg_secret_db, "0-1", trials=8, epochs=3, sleep=0.8)
    wait_for_jobs([array_id], timeout=120)
    trials = study_of(cfg).get_trials(deepcopy=False)
    state = budget_state(trials, 8)
    assert state.finished == 8 and state.counted == 8 and state.running == 0 and state.waiting == 0
    assert all(t.state == TrialState.COMPLETE for t in trials), [(t.number, t.state.name) for t in trials]
    by_run = pids_by_run(trials)
    assert set(by_run) == {(0, 0), (1, 0)}, by_run
    assert all(len(pids) == 2 for pids in by_run.values()), by_run  # 2 workers per task, 4 in all
    assert len(set().union(*by_run.values())) == 4
    logs = load_config(cfg).study_dir / "logs"
    for task in (0, 1):
        out = (logs / f"array-{array_id}_{task}.out").read_text()
        assert "workers done: 2 process(es) for 2 slot(s) (exit codes 0, 0)" in out, out


def test_walltime_signal_reaches_both_workers_and_the_task_requeues_once(
    tmp_path: Path, slurm_cluster: SlurmCluster, pg_secret_db: dict[str, str]
) -> None:
    cfg, array_id = submit_array(tmp_path, pg_secret_db, "0", trials=6, epochs=3, sleep=0.4)
    at_work = running_with_epochs(cfg)
    assert wait_until(lambda: len(at_work()) == 2, timeout=90) is not None
    # What SLURM does at --signal=B:USR2@N: signal the batch shell, which exec made the supervisor.
    subprocess.run(["scancel", "--signal=USR2", "--batch", f"{array_id}_0"], check=True)
    wait_for_jobs([array_id], timeout=120)  # a requeued task counts as active until it has run again
    trials = study_of(cfg).get_trials(deepcopy=False)
    state = budget_state(trials, 6)
    assert state.finished == 6 and state.running == 0 and state.waiting == 0
    # An objective cannot hand on: the trials running at the signal finished, and nothing failed.
    assert all(t.state == TrialState.COMPLETE for t in trials), [(t.number, t.state.name) for t in trials]
    by_run = pids_by_run(trials)
    assert len(by_run[(0, 0)]) == 2 and (0, 1) in by_run and set(by_run) <= {(0, 0), (0, 1)}, by_run
    logs = load_config(cfg).study_dir / "logs"
    out = (logs / f"array-{array_id}_0.out").read_text()
    assert out.count(f"hpctune: requeued {array_id}_0") == 1, out  # once, by the supervisor
    for slot in (0, 1):  # both workers got USR2 and stopped after their trial, leaving the requeue to it
        assert "stopped by walltime" in (logs / f"array-{array_id}_0.slot{slot}.log").read_text()
