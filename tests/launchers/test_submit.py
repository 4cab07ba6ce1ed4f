"""submit/status/cancel/guard_collector: with fake SLURM commands for the failure paths, and against the real
one-node SLURM (marker ``slurm``) with a stand-in ``hpctune`` that records what each task was given."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpc_tune.config import LoadedConfig, parse_config
from hpc_tune.errors import SlurmError
from hpc_tune.launchers.scripts import render_scripts
from hpc_tune.launchers.submit import cancel, guard_collector, status, submit
from hpc_tune.slurm import ArraySpec, SlurmEnv, job_name_for, requeue_own_task, sbatch, scancel, squeue_study
from tests.slurm_fixtures import SlurmCluster, active_jobs, wait_for_jobs, wait_until

SPACE = {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True}}
# Small enough that 4 tasks fit the 8-CPU / 80 %-of-RAM test node at once.
TEST_SLURM = {"cpus_per_task": 1, "mem": "100M", "time": "5", "signal_grace_s": 10}


def loaded_config(directory: Path, study: str = "demo", **slurm: Any) -> LoadedConfig:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hpctune.yaml"
    storage = (
        "postgresql+psycopg2://tuner@127.0.0.1:1/unused"  # arrays need a database store; never contacted
    )
    raw = {"study": study, "space": SPACE, "storage": storage, "slurm": {**TEST_SLURM, **slurm}}
    path.write_text(yaml.safe_dump(raw))
    return LoadedConfig(config=parse_config(raw, path), path=path)


# --- without SLURM ------------------------------------------------------------------------------------------


def _fake_slurm(bin_dir: Path, fail_on: str | None = None) -> None:
    """sbatch that hands out job ids 100, 101, ... (failing for a script whose name ends with ``fail_on``)."""
    bin_dir.mkdir(exist_ok=True)
    refuse = 'echo "sbatch: error: QOSMaxSubmitJobPerUserLimit" >&2; exit 1'
    fail = f'[[ "${{@: -1}}" == *{fail_on} ]] && {{ {refuse}; }}\n' if fail_on else ""
    scripts = {
        "sbatch": f'log="{bin_dir}/sbatch.log"; echo "$*" >> "$log"\n{fail}echo $((99 + $(wc -l < "$log")))',
        "scancel": f'echo "$*" >> "{bin_dir}/scancel.log"',
        "scontrol": 'echo "MaxArraySize = 1001"',
        "squeue": "true",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/bash\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_dry_run_needs_no_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = submit(loaded_config(tmp_path / "p"), ArraySpec.parse("0-3"), dry_run=True)
    assert result.dry_run and result.array_job_ids == [] and result.collect_job_id is None
    array, collect = result.scripts.array_path, result.scripts.collect_path
    assert result.commands == [
        f"ARRAY_0=$(sbatch --parsable --export=ALL,HPCTUNE_COLLECTOR=submitted {array})",
        f"sbatch --parsable --dependency=afterany:${{ARRAY_0}} {collect}",
    ]
    assert array.is_file() and collect.is_file()
    assert (array.name, collect.relative_to(array.parent).as_posix()) == ("demo.sh", "collect/demo.sh")


def test_dry_run_of_a_split_array_chains_parts_under_a_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = submit(loaded_config(tmp_path / "p"), ArraySpec.parse("0-1500%4"), dry_run=True)
    array = result.scripts.array_path
    assert result.commands[:2] == [
        "ARRAY_0=$(sbatch --parsable --array=0-1000%4 "
        f"--export=ALL,HPCTUNE_COLLECTOR=submitted,HPCTUNE_ARRAY_OFFSET=0 {array})",
        f"ARRAY_1=$(sbatch --parsable --dependency=afterany:${{ARRAY_0}} --array=0-499%4 "
        f"--export=ALL,HPCTUNE_COLLECTOR=submitted,HPCTUNE_ARRAY_OFFSET=1001 {array})",
    ]
    assert "--dependency=afterany:${ARRAY_0}:${ARRAY_1} " in result.commands[2]
    # The printed lines are real bash: they parse.
    assert subprocess.run(["/bin/bash", "-n", "-c", "\n".join(result.commands)]).returncode == 0


def test_submit_with_fake_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    result = submit(loaded_config(tmp_path / "p"), ArraySpec.parse("0-1500"))
    assert result.array_job_ids == ["100", "101"] and result.collect_job_id == "102"
    assert "--dependency=afterany:100:101" in result.commands[-1]
    log = (tmp_path / "bin" / "sbatch.log").read_text().splitlines()
    # Without a %N limit the parts are not chained.
    assert "--dependency" not in log[1]
    # Every part carries the marker: no array task submits a second collector.
    assert all("--export=ALL,HPCTUNE_COLLECTOR=submitted," in line for line in log[:2])


def test_collector_failure_cancels_the_arrays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_slurm(tmp_path / "bin", fail_on="collect/demo.sh")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SlurmError) as info:
        submit(loaded_config(tmp_path / "p"), ArraySpec.parse("0-1500"))
    assert info.value.line() == (
        "sbatch: error: QOSMaxSubmitJobPerUserLimit; cancelled the already submitted array job(s) 100, 101"
    )
    assert (tmp_path / "bin" / "scancel.log").read_text().splitlines() == ["100 101"]


def test_first_array_failure_cancels_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_slurm(tmp_path / "bin", fail_on="jobs/demo.sh")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SlurmError, match="^sbatch: error: QOSMaxSubmitJobPerUserLimit$"):
        submit(loaded_config(tmp_path / "p"), ArraySpec.parse("0-3"))
    assert not (tmp_path / "bin" / "scancel.log").exists()


def test_guard_without_script_path_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    _fake_slurm(bin_dir)
    (bin_dir / "squeue").write_text("#!/bin/bash\necho '7 1 7_1 7 PENDING hpctune-demo Dependency'\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(SlurmError, match="collector script is unknown"):
        guard_collector(loaded_config(tmp_path / "p"), environ={})
    assert guard_collector(loaded_config(tmp_path / "p"), environ={"HPCTUNE_COLLECT_SCRIPT": "/x.sh"}) == [
        "7"
    ]
    assert (bin_dir / "sbatch.log").read_text() == "--parsable --dependency=afterany:7 /x.sh\n"


# --- with the real one-node SLURM ---------------------------------------------------------------------------

FAKE_HPCTUNE = r"""#!/bin/bash
# Stands in for hpctune inside the jobs: records what the rendered script gave each task.
set -euo pipefail
cmd=$1 cfg=$3
dir=$(dirname "$cfg")
rec="$dir/records"
mkdir -p "$rec"
case $cmd in
worker)
    idx=$((HPCTUNE_ARRAY_OFFSET + SLURM_ARRAY_TASK_ID))
    line="task=$SLURM_ARRAY_TASK_ID offset=$HPCTUNE_ARRAY_OFFSET restart=${SLURM_RESTART_COUNT:-unset}"
    echo "run $line"
    echo "$line at=$(date +%s.%N) cache=$TORCHINDUCTOR_CACHE_DIR" >> "$rec/task-$idx"
    if [[ -f $dir/requeue && $(cat "$dir/requeue") == "$idx" && -z ${SLURM_RESTART_COUNT:-} ]]; then
        # The ref is printed before the requeue: SLURM may end the task before a print after it runs.
        exec PYTHON -c 'from hpc_tune.slurm import SlurmEnv, requeue_own_task
print(SlurmEnv.from_environ().task_ref, flush=True)
assert requeue_own_task() == SlurmEnv.from_environ().task_ref
import time; time.sleep(60)'
    fi
    sleep "$(cat "$dir/sleep" 2>/dev/null || echo 0)"
    ;;
collect)
    if [[ -f $dir/guard ]]; then
        exec PYTHON -c 'import sys; from hpc_tune.config import load_config
from hpc_tune.launchers.submit import guard_collector
print("guard waited on", guard_collector(load_config(sys.argv[1])))' "$cfg" > "$rec/guard-$SLURM_JOB_ID"
    fi
    (cd "$rec" && ls task-* 2>/dev/null || true) > "$rec/collect-$SLURM_JOB_ID"
    ;;
esac
"""


class Study:
    """A study of its own for one test (unique job name) in a directory with a space and a quote in it."""

    def __init__(self, tmp_path: Path, **slurm: Any) -> None:
        self.dir = tmp_path / "it's a study"
        self.loaded = loaded_config(self.dir, study=f"t-{uuid.uuid4().hex[:8]}", **slurm)
        self.job_name = job_name_for(self.loaded.config.study)
        fake = tmp_path / "fake bin" / "hpctune"
        fake.parent.mkdir()
        fake.write_text(FAKE_HPCTUNE.replace("PYTHON", shlex.quote(sys.executable)))
        fake.chmod(0o755)
        self.cmd = shlex.quote(str(fake))
        self.records = self.dir / "records"

    def tasks(self) -> dict[int, list[str]]:
        return {
            int(p.name.removeprefix("task-")): p.read_text().splitlines() for p in self.records.glob("task-*")
        }

    def collected(self) -> list[list[str]]:
        return [p.read_text().split() for p in sorted(self.records.glob("collect-*"))]


@pytest.fixture()
def study(tmp_path: Path, slurm_cluster: SlurmCluster) -> Any:
    made = Study(tmp_path)
    yield made
    scancel(job_name=made.job_name)


@pytest.mark.slurm
def test_submit_runs_every_task_then_the_collector(study: Study) -> None:
    (study.dir / "sleep").write_text("2")
    t0 = time.monotonic()
    result = submit(study.loaded, ArraySpec.parse("0-3"), hpctune_cmd=study.cmd)
    assert len(result.array_job_ids) == 1 and result.collect_job_id
    # afterany holds the collector while the array runs.
    collector = [t for t in squeue_study(study.job_name) if t.job_id == result.collect_job_id]
    assert collector and collector[0].state == "PENDING" and collector[0].reason == "Dependency"
    wait_until(lambda: len(study.tasks()) == 4, timeout=30)
    assert active_jobs([result.collect_job_id])  # still held: tasks are sleeping
    wait_for_jobs([*result.array_job_ids, result.collect_job_id], timeout=60)
    elapsed = time.monotonic() - t0
    known = {*result.array_job_ids, result.collect_job_id}
    tasks = study.tasks()
    assert sorted(tasks) == [0, 1, 2, 3]
    cache = study.dir / "runs" / study.loaded.config.study / "inductor-cache"
    for index, lines in tasks.items():
        assert len(lines) == 1 and lines[0].startswith(f"task={index} offset=0 restart=unset ")
        assert lines[0].endswith(f"cache={cache}")
    # Exactly one collector ran: the array's first task saw HPCTUNE_COLLECTOR=submitted and queued none.
    assert study.collected() == [["task-0", "task-1", "task-2", "task-3"]]
    assert not [t for t in squeue_study(study.job_name, all_states=True) if t.array_job_id not in known]
    logs = study.dir / "runs" / study.loaded.config.study / "logs"
    assert "submitted" not in (logs / f"array-{result.array_job_ids[0]}_0.out").read_text()
    assert (logs / f"array-{result.array_job_ids[0]}_3.out").read_text().startswith("run task=3 ")
    assert (logs / f"collect-{result.collect_job_id}.out").exists()
    print(f"submit 0-3 (tasks sleep 2 s) to collector done: {elapsed:.1f} s")


@pytest.mark.slurm
def test_split_array_tasks_get_global_ids(study: Study) -> None:
    result = submit(study.loaded, ArraySpec.parse("999-1002"), hpctune_cmd=study.cmd)
    assert len(result.array_job_ids) == 2  # 1001 and 1002 are beyond MaxArraySize=1001
    wait_for_jobs([*result.array_job_ids, result.collect_job_id or ""], timeout=60)
    tasks = study.tasks()
    assert sorted(tasks) == [999, 1000, 1001, 1002]
    assert tasks[1001][0].startswith("task=0 offset=1001 ") and tasks[1002][0].startswith(
        "task=1 offset=1001 "
    )
    assert study.collected() == [["task-1000", "task-1001", "task-1002", "task-999"]]


def _study_done(study: Study) -> bool:
    """No job of the study is left: by hand, the collector is queued by the array's first task before that
    task's worker starts, so it exists for as long as the array does."""
    return not [t for t in squeue_study(study.job_name) if t.active]


@pytest.mark.slurm
def test_literal_sbatch_glob_runs_the_array_and_its_collector(study: Study) -> None:
    (study.dir / "sleep").write_text("2")
    render_scripts(study.loaded, ArraySpec.parse("0-3"), hpctune_cmd=study.cmd)
    # What the README says to type, glob expanded by the shell: one script in jobs/, the array.
    typed = subprocess.run(["bash", "-c", "sbatch jobs/*.sh"], cwd=study.dir, capture_output=True, text=True)
    assert typed.returncode == 0, typed.stderr
    array_id = typed.stdout.split()[-1]
    wait_until(lambda: _study_done(study), timeout=60)
    assert sorted(study.tasks()) == [0, 1, 2, 3]
    assert study.collected() == [["task-0", "task-1", "task-2", "task-3"]]  # one collector, after all tasks
    logs = study.dir / "runs" / study.loaded.config.study / "logs"
    first = (logs / f"array-{array_id}_0.out").read_text()
    assert "hpctune: submitted the collector as job " in first and f"(afterany:{array_id})" in first
    for task in (1, 2, 3):
        assert "submitted" not in (logs / f"array-{array_id}_{task}.out").read_text()


@pytest.mark.slurm
def test_literal_sbatch_of_a_split_array_submits_every_part(study: Study) -> None:
    scripts = render_scripts(study.loaded, ArraySpec.parse("999-1002"), hpctune_cmd=study.cmd)
    assert len(scripts.chunks) == 2  # 1001 and 1002 are beyond MaxArraySize=1001
    typed = subprocess.run(["bash", "-c", "sbatch jobs/*.sh"], cwd=study.dir, capture_output=True, text=True)
    assert typed.returncode == 0, typed.stderr
    wait_until(lambda: _study_done(study), timeout=60)
    tasks = study.tasks()
    assert sorted(tasks) == [999, 1000, 1001, 1002]
    assert tasks[1001][0].startswith("task=0 offset=1001 ") and tasks[1002][0].startswith(
        "task=1 offset=1001 "
    )
    assert study.collected() == [["task-1000", "task-1001", "task-1002", "task-999"]]


@pytest.mark.slurm
def test_singleton_holds_a_collector_submitted_by_hand(study: Study) -> None:
    """The collector script alone, sbatch'd by hand with no option, still waits for the array."""
    (study.dir / "sleep").write_text("3")
    scripts = render_scripts(study.loaded, ArraySpec.parse("0-3"), hpctune_cmd=study.cmd)
    # The marker keeps the array's first task from queueing a collector of its own.
    array_id = sbatch(scripts.array_path, extra_args=["--export=ALL,HPCTUNE_COLLECTOR=submitted"])
    out = subprocess.run(
        ["sbatch", "--parsable", str(scripts.collect_path)], capture_output=True, text=True, check=True
    )
    collect_id = out.stdout.strip()

    def held_by_singleton() -> bool:
        collector = [t for t in squeue_study(study.job_name) if t.job_id == collect_id]
        return bool(collector) and collector[0].state == "PENDING" and collector[0].reason == "Dependency"

    wait_until(held_by_singleton, timeout=10)
    assert active_jobs([array_id])  # held while the tasks still sleep
    wait_for_jobs([array_id, collect_id], timeout=60)
    assert study.collected() == [["task-0", "task-1", "task-2", "task-3"]]


@pytest.mark.slurm
def test_status_guard_and_cancel(study: Study, tmp_path: Path) -> None:
    scripts = render_scripts(study.loaded, ArraySpec.parse("0-3"), hpctune_cmd=study.cmd)
    array_id = sbatch(scripts.array_path, extra_args=["--hold"])  # stays PENDING until released
    seen = status(study.loaded)
    assert seen.by_state == {"PENDING": 4} and len(seen.active) == 4
    assert {t.task_id for t in seen.array_tasks} == {0, 1, 2, 3}

    waited = guard_collector(study.loaded, scripts.collect_path, environ={"SLURM_JOB_ID": "0"})
    assert waited == [array_id]
    resubmitted = status(study.loaded).collectors
    assert (
        len(resubmitted) == 1 and resubmitted[0].state == "PENDING" and resubmitted[0].reason == "Dependency"
    )

    other = loaded_config(tmp_path / "other", study=f"t-{uuid.uuid4().hex[:8]}")
    assert guard_collector(other, scripts.collect_path) is None  # nothing pending: collect now

    cancelled = cancel(study.loaded)
    assert cancelled == sorted([array_id, resubmitted[0].job_id], key=int)
    wait_for_jobs(cancelled, timeout=20)
    assert not (study.records).exists()  # nothing ran


@pytest.mark.slurm
def test_guard_inside_a_collector_job_resubmits_it(study: Study) -> None:
    """The real collector's path: guard_collector in a job, finding its script via HPCTUNE_COLLECT_SCRIPT."""
    (study.dir / "guard").touch()
    scripts = render_scripts(study.loaded, ArraySpec.parse("0-1"), hpctune_cmd=study.cmd)
    array_id = sbatch(scripts.array_path, extra_args=["--hold"])
    # Another job name lets this collector start now, as one that singleton failed to hold back would.
    first = sbatch(scripts.collect_path, extra_args=[f"--job-name=probe-{uuid.uuid4().hex[:8]}"])
    wait_for_jobs([first], timeout=30)
    assert (study.records / f"guard-{first}").read_text() == f"guard waited on ['{array_id}']\n"
    again = status(study.loaded).collectors
    assert len(again) == 1 and again[0].state == "PENDING" and again[0].reason == "Dependency"
    assert not list(study.records.glob("collect-*"))  # it did not collect while tasks were pending


@pytest.mark.slurm
def test_real_sbatch_refusal_is_one_line(study: Study) -> None:
    scripts = render_scripts(study.loaded, ArraySpec.parse("0-3"), hpctune_cmd=study.cmd)
    with pytest.raises(SlurmError) as info:
        sbatch(scripts.array_path, extra_args=["--array=0-1001"])  # MaxArraySize=1001 bounds the index
    assert info.value.line() == "sbatch: error: Batch job submission failed: Invalid job array specification"


@pytest.mark.slurm
def test_requeue_own_task_runs_it_again(study: Study) -> None:
    (study.dir / "requeue").write_text("1")
    result = submit(study.loaded, ArraySpec.parse("0-1"), hpctune_cmd=study.cmd)
    wait_for_jobs([*result.array_job_ids, result.collect_job_id or ""], timeout=90)
    tasks = study.tasks()
    assert len(tasks[0]) == 1  # only the task that asked was requeued, not the whole array
    first, second = tasks[1]
    assert "restart=unset" in first and "restart=1" in second
    gap = float(second.split("at=")[1].split()[0]) - float(first.split("at=")[1].split()[0])
    log = study.dir / "runs" / study.loaded.config.study / "logs" / f"array-{result.array_job_ids[0]}_1.out"
    text = log.read_text()
    assert "run task=1 offset=0 restart=unset" in text and "run task=1 offset=0 restart=1" in text  # append
    assert f"{result.array_job_ids[0]}_1" in text  # the ref requeue_own_task requeued
    assert study.collected() == [["task-0", "task-1"]]  # afterany waited for the rerun
    print(f"requeued task ran again after {gap:.1f} s")
    assert gap < 60  # ~11 s with AuthInfo=cred_expire=10; ~150 s would mean the §9 settings are not active


def test_requeue_own_task_outside_slurm() -> None:
    with pytest.raises(SlurmError, match="not running under SLURM"):
        requeue_own_task(SlurmEnv.from_environ({}))
