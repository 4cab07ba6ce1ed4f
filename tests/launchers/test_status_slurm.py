"""``hpctune status`` shows the study's CURRENT array only: not an older array of the same study that no
running trial came from, not another study's jobs. Held jobs (``sbatch --hold``) stay PENDING for as long as
the test looks at them, and nothing runs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState, create_trial

from hpc_tune.cli import cli
from hpc_tune.config import load_config
from hpc_tune.policy.shared_study import open_study
from hpc_tune.slurm import StudyStatus, TaskState, job_name_for, sbatch, scancel, squeue_study
from tests.conftest import write_config
from tests.slurm_fixtures import SlurmCluster, wait_for_jobs

# --- without SLURM: which tasks are "current" ---------------------------------------------------------------


def _task(array: str, task_id: int | None, state: str = "PENDING") -> TaskState:
    ref = f"{array}_{task_id}" if task_id is not None else array
    return TaskState(array, task_id, ref, ref, state, "hpctune-s", "None")


def test_current_keeps_the_newest_array_and_those_of_running_trials() -> None:
    old = [_task("98", 0, "COMPLETED"), _task("98", 1, "CANCELLED")]
    resumed = [_task("99", 0, "RUNNING"), _task("99", 1)]
    newest = [_task("100", 0), _task("100", 1)]
    collector = _task("101", None)
    ended_collector = _task("97", None, "COMPLETED")
    jobs = StudyStatus("s", "hpctune-s", [*old, *resumed, *newest, collector, ended_collector])
    assert jobs.current().tasks == [*newest, collector]
    assert jobs.current(["99"]).tasks == [*resumed, *newest, collector]
    # Job ids are numbers: "100" is newer than "99" although it sorts before it as text.
    assert StudyStatus("s", "hpctune-s", [*newest, *resumed]).current().tasks == newest
    assert StudyStatus("s", "hpctune-s", []).current(["99"]).tasks == []


# --- with the real one-node SLURM ---------------------------------------------------------------------------


class HeldJobs:
    """Jobs of one or more studies, held in the queue, cancelled at the end."""

    def __init__(self, directory: Path) -> None:
        self.script = directory / "sleep.sh"
        self.script.write_text("#!/bin/bash\nsleep 60\n")
        self.names: list[str] = []
        self.ids: list[str] = []

    def submit(self, study: str, array: str | None = None) -> str:
        name = job_name_for(study)
        self.names.append(name)
        extra = ["--hold", f"--job-name={name}", "--output=/dev/null", "--mem=10M"]
        job_id = sbatch(self.script, extra_args=[*extra, *([f"--array={array}"] if array else [])])
        self.ids.append(job_id)
        return job_id

    def cancel(self) -> None:
        for name in set(self.names):
            scancel(job_name=name)
        wait_for_jobs(self.ids, timeout=30)


@pytest.fixture()
def held(tmp_path: Path, slurm_cluster: SlurmCluster) -> Iterator[HeldJobs]:
    jobs = HeldJobs(tmp_path)
    yield jobs
    jobs.cancel()


def status_lines(config: Path) -> list[str]:
    result = CliRunner().invoke(cli, ["status", "-c", str(config)], catch_exceptions=False)
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return result.stdout.splitlines()


@pytest.mark.slurm
def test_status_shows_only_the_current_array_of_this_study(
    tmp_path: Path, held: HeldJobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HPCTUNE_STORAGE", raising=False)
    study = f"t-{uuid.uuid4().hex[:8]}"
    config = write_config(tmp_path, study=study, trials=4)
    shared = open_study(load_config(config), None, with_heartbeat=False)  # the embedded store, trials = 4

    older = held.submit(study, "0-1")  # an earlier submission, still queued
    current = held.submit(study, "0-3")
    collector = held.submit(study)
    held.submit(f"o-{uuid.uuid4().hex[:8]}", "0-2")  # another study's array
    reason = squeue_study(job_name_for(study))[0].reason  # what SLURM calls a hold here
    assert {t.state for t in squeue_study(job_name_for(study))} == {"PENDING"}

    lines = status_lines(config)
    assert lines[0] == (
        f"study {study}: 0/4 finished (COMPLETE 0, PRUNED 0, FAIL 0, RUNNING 0, WAITING 0; 0 retried)"
    )
    assert lines[2:] == [f"slurm: array {current}: PENDING 4 ({reason}); collector PENDING ({reason})"]
    assert collector not in lines[2]

    # A trial of the older array runs: that array is at work too, and is shown beside the newest.
    worker = {"host": "n1", "pid": 1, "job_id": f"{older}", "array_job_id": older, "array_task_id": 1}
    trial = create_trial(
        state=TrialState.RUNNING, intermediate_values={1: 0.4}, user_attrs={"worker": worker}
    )
    trial.datetime_start = datetime.now()
    optuna.load_study(study_name=study, storage=shared.storage).add_trial(trial)
    lines = status_lines(config)
    # A trial that runs is time spent: its hours (a foreign trial: no devices recorded) come before SLURM's.
    assert lines[2].startswith("trial-hours: ") and " so far" in lines[2]
    assert lines[3] == f"slurm: arrays {older}, {current}: PENDING 6 ({reason}); collector PENDING ({reason})"
    assert lines[4] == "running (1):" and lines[5].split() == [
        "trial",
        "epoch",
        "host",
        "task",
        "running",
        "for",
    ]
    assert lines[6].split()[:4] == ["0", "1", "n1", f"{older}_1"]
