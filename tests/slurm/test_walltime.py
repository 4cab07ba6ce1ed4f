"""A task's time left, as squeue tells it: the figure walltime admission compares a trial's estimate with."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_tune.slurm import SlurmEnv
from hpc_tune.slurm.walltime import parse_duration, time_limit
from tests.slurm_fixtures import SlurmCluster, wait_for_jobs


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("4:59", 299),
        ("1:00:00", 3600),
        ("12:03:04", 43384),
        ("2-03:04:05", 183845),
        ("1-00", 86400),
        ("30", 1800),  # minutes, as --time reads a bare number
        ("UNLIMITED", None),
        ("INVALID", None),
        ("NOT_SET", None),
        ("", None),
    ],
)
def test_squeue_durations(text: str, seconds: int | None) -> None:
    assert parse_duration(text) == seconds


def test_outside_slurm_there_is_no_limit() -> None:
    assert time_limit(SlurmEnv.from_environ({})) is None


@pytest.mark.slurm
def test_a_real_task_reads_its_time_left_from_squeue(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    out = tmp_path / "left.json"
    code = (
        "import json; from hpc_tune.slurm import SlurmEnv; "
        "from hpc_tune.slurm.walltime import time_limit; "
        "t = time_limit(SlurmEnv.from_environ()); "
        f"json.dump(None if t is None else {{'left': t.left(), 'limit': t.limit_s}}, open({str(out)!r}, 'w'))"
    )
    submitted = subprocess.run(
        [
            "sbatch",
            "--parsable",
            "--time=7",
            f"--output={tmp_path / 'job.log'}",
            "--wrap",
            f'{sys.executable} -c "{code}"',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    wait_for_jobs([job_id], timeout=120)
    found = json.loads(out.read_text())
    assert found is not None, (tmp_path / "job.log").read_text()
    assert found["limit"] == 7 * 60
    assert 0 < found["left"] <= 7 * 60
