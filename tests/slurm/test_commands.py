"""hpc_tune.slurm without a cluster: array specs, splitting, task env, and the command wrappers (fake SLURM
commands on PATH stand in for the real ones; the real cluster is exercised in test_submit.py)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from hpc_tune.errors import SlurmError
from hpc_tune.slurm import (
    DEFAULT_MAX_ARRAY_SIZE,
    ArraySpec,
    SlurmEnv,
    job_name_for,
    max_array_size,
    requeue_own_task,
    requeue_self,
    sbatch,
    scancel,
    squeue_study,
)
from tests.slurm_fixtures import SLURM_LOCAL, SlurmCluster

# --- ArraySpec ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "indices", "parallelism"),
    [
        ("0-3", (0, 1, 2, 3), None),
        ("0-31%8", tuple(range(32)), 8),
        ("1,3,5", (1, 3, 5), None),
        ("0-15:2", (0, 2, 4, 6, 8, 10, 12, 14), None),
        ("0-3,8", (0, 1, 2, 3, 8), None),
        ("7", (7,), None),
        ("0", (0,), None),
        ("5-5", (5,), None),
        ("0-9:3,20-22%2", (0, 3, 6, 9, 20, 21, 22), 2),
        ("3,1,2", (1, 2, 3), None),
        ("1,1,2", (1, 2), None),
        ("0-1000", tuple(range(1001)), None),
        (" 0-3 ", (0, 1, 2, 3), None),
    ],
)
def test_array_spec_parses(text: str, indices: tuple[int, ...], parallelism: int | None) -> None:
    spec = ArraySpec.parse(text)
    assert spec.indices == indices
    assert spec.count == len(indices)
    assert spec.max_index == max(indices)
    assert spec.parallelism == parallelism


@pytest.mark.parametrize(
    "text", ["0-3", "0-31%8", "1,3,5", "0-15:2", "0-3,8", "0-9:3,20-22%2", "7", "3,1,2", "0-3%1"]
)
def test_array_spec_str_round_trips(text: str) -> None:
    assert str(ArraySpec.parse(text)) == text
    assert ArraySpec.parse(str(ArraySpec.parse(text))) == ArraySpec.parse(text)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("3-1", "ends before it starts"),
        ("-1", "'-1' is not N"),
        ("abc", "'abc' is not N"),
        ("", "empty"),
        ("   ", "empty"),
        ("0-15:0", "step"),
        ("0-3%0", "%N limit"),
        ("0-3%", "%N limit"),
        ("0-3%-2", "%N limit"),
        ("0-3%a", "%N limit"),
        ("%4", "no indices"),
        ("0-3,", "'' is not N"),
        (",1", "'' is not N"),
        ("1-2-3", "'1-2-3'"),
        ("1 ,2", "'1 ' is not N"),
        ("0x10", "'0x10'"),
        ("1.5", "'1.5'"),
        ("0-3:-1", "'0-3:-1'"),
        ("0-5000000", "above SLURM's limit"),
        ("0-3%2%2", "%N limit"),
        ("１", "is not N"),  # a full-width digit: str.isdigit would say yes, SLURM would not
    ],
)
def test_array_spec_rejects(text: str, needle: str) -> None:
    with pytest.raises(SlurmError) as info:
        ArraySpec.parse(text)
    assert needle in str(info.value)


def test_array_spec_rejects_non_string() -> None:
    with pytest.raises(SlurmError, match="empty"):
        ArraySpec.parse(None)  # type: ignore[arg-type]


def test_max_index_of_a_stepped_range_is_the_last_index_reached() -> None:
    assert ArraySpec.parse("0-15:2").max_index == 14
    assert ArraySpec.parse("0-15:2").split(15)[0].offset == 0  # 14 < 15: fits, no split


@pytest.mark.parametrize(
    ("indices", "text"),
    [
        ([0, 1, 2, 3], "0-3"),
        ([1, 3, 5], "1-5:2"),
        ([1, 3], "1,3"),
        ([0, 1], "0-1"),
        ([5], "5"),
        ([0, 1, 2, 10, 20, 30, 31], "0-2,10-30:10,31"),
    ],
)
def test_from_indices_compresses(indices: list[int], text: str) -> None:
    spec = ArraySpec.from_indices(indices)
    assert str(spec) == text
    assert spec.indices == tuple(sorted(indices))


def test_with_parallelism() -> None:
    assert str(ArraySpec.parse("0-3").with_parallelism(2)) == "0-3%2"
    with pytest.raises(SlurmError):
        ArraySpec.parse("0-3").with_parallelism(0)


# --- MaxArraySize split -------------------------------------------------------------------------------------


def test_max_array_size_limits_the_index_not_the_count() -> None:
    assert [(str(c.spec), c.offset) for c in ArraySpec.parse("0-1000").split(1001)] == [("0-1000", 0)]
    chunks = ArraySpec.parse("0-1001").split(1001)
    assert [(str(c.spec), c.offset) for c in chunks] == [("0-1000", 0), ("0", 1001)]
    # Few tasks with a high index still need an offset.
    assert [(str(c.spec), c.offset) for c in ArraySpec.parse("1500,1600").split(1001)] == [("499,599", 1001)]


@pytest.mark.parametrize(
    ("text", "limit"),
    [("0-3000%4", 1001), ("5-25", 10), ("0-2500:7", 1001), ("0-3,999-1002,4000", 1001), ("0-99", 1)],
)
def test_split_keeps_every_index_once_and_each_part_fits(text: str, limit: int) -> None:
    spec = ArraySpec.parse(text)
    chunks = spec.split(limit)
    seen = [i for c in chunks for i in c.global_indices]
    assert sorted(seen) == list(spec.indices)
    assert len(seen) == len(set(seen))
    for chunk in chunks:
        assert chunk.spec.max_index < limit
        assert chunk.spec.parallelism == spec.parallelism
        assert ArraySpec.parse(str(chunk.spec)) == chunk.spec


def test_split_example_offsets() -> None:
    chunks = ArraySpec.parse("5-25").split(10)
    assert [(str(c.spec), c.offset) for c in chunks] == [("5-9", 0), ("0-9", 10), ("0-5", 20)]


# --- SlurmEnv and requeue -----------------------------------------------------------------------------------


def test_slurm_env_outside_slurm() -> None:
    env = SlurmEnv.from_environ({})
    assert not env.in_slurm and not env.in_array
    assert env.task_ref is None and env.global_task_id is None and env.restart_count == 0
    with pytest.raises(SlurmError, match="not running under SLURM"):
        requeue_own_task(env)


def test_slurm_env_of_an_array_task() -> None:
    env = SlurmEnv.from_environ(
        {
            "SLURM_JOB_ID": "105",
            "SLURM_ARRAY_JOB_ID": "100",
            "SLURM_ARRAY_TASK_ID": "3",
            "SLURM_RESTART_COUNT": "1",
            "HPCTUNE_ARRAY_OFFSET": "1001",
        }
    )
    assert env.task_ref == "100_3"  # never the bare SLURM_JOB_ID: it may be the whole array's
    assert env.global_task_id == 1004
    assert env.ids() == {
        "job_id": "105",
        "array_job_id": "100",
        "array_task_id": 3,
        "global_task_id": 1004,
        "restart_count": 1,
    }


def test_slurm_env_of_a_plain_job() -> None:
    env = SlurmEnv.from_environ({"SLURM_JOB_ID": "42"})
    assert env.in_slurm and not env.in_array and env.task_ref == "42"


def test_slurm_env_rejects_garbage() -> None:
    with pytest.raises(SlurmError, match="HPCTUNE_ARRAY_OFFSET"):
        SlurmEnv.from_environ({"SLURM_JOB_ID": "1", "HPCTUNE_ARRAY_OFFSET": "x"})


def test_requeue_self_text_has_braces() -> None:
    assert requeue_self() == 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"'


# --- command wrappers with fake SLURM commands --------------------------------------------------------------


def _fake(bin_dir: Path, name: str, body: str) -> Path:
    """A stand-in SLURM command that logs its argv to <bin>/<name>.log and then runs ``body``."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> "{bin_dir}/{name}.log"\n{body}\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture()
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only our fakes (plus bash's own dir, which they need)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    # Hide any real SLURM in /usr/bin behind "missing" fakes unless a test installs its own.
    for name in ("sbatch", "squeue", "scancel", "scontrol"):
        _fake(bin_dir, name, f'echo "{name}: fake not configured" >&2; exit 127')
    return bin_dir


@pytest.mark.parametrize("command", ["sbatch", "squeue", "scancel", "scontrol"])
def test_missing_command_is_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing in it
    calls = {
        "sbatch": lambda: sbatch(tmp_path / "x.sh"),
        "squeue": lambda: squeue_study("hpctune-x"),
        "scancel": lambda: scancel(["1"]),
        "scontrol": lambda: requeue_own_task(SlurmEnv(job_id="1")),
    }
    with pytest.raises(SlurmError) as info:
        calls[command]()
    assert info.value.line() == f"{command} not found: is SLURM installed? (PATH)"


def test_max_array_size_falls_back_only_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert max_array_size(fallback=DEFAULT_MAX_ARRAY_SIZE) == 1001
    with pytest.raises(SlurmError, match="scontrol not found"):
        max_array_size()


def test_max_array_size_reads_scontrol(fake_bin: Path) -> None:
    _fake(fake_bin, "scontrol", 'printf "Config\\nMaxArraySize            = 40001\\nMaxJobCount = 1\\n"')
    assert max_array_size() == 40001
    _fake(fake_bin, "scontrol", 'echo "MaxJobCount = 1"')
    assert max_array_size() == DEFAULT_MAX_ARRAY_SIZE


def test_sbatch_parsable_and_argv(fake_bin: Path, tmp_path: Path) -> None:
    _fake(fake_bin, "sbatch", 'echo "sbatch: warning: something"; echo "1234;cluster"')
    job = sbatch(tmp_path / "a b.sh", dependency="afterany:1:2", extra_args=["--array=0-1"])
    assert job == "1234"
    assert (fake_bin / "sbatch.log").read_text().splitlines()[-1] == (
        f"--parsable --dependency=afterany:1:2 --array=0-1 {tmp_path}/a b.sh"
    )


def test_sbatch_refusal_is_its_first_stderr_line(fake_bin: Path, tmp_path: Path) -> None:
    _fake(
        fake_bin,
        "sbatch",
        'echo "sbatch: error: Batch job submission failed: Invalid job array specification" >&2\n'
        'echo "second line" >&2; exit 1',
    )
    with pytest.raises(SlurmError) as info:
        sbatch(tmp_path / "x.sh")
    assert info.value.line() == "sbatch: error: Batch job submission failed: Invalid job array specification"


def test_sbatch_nonsense_answer(fake_bin: Path, tmp_path: Path) -> None:
    _fake(fake_bin, "sbatch", 'echo "Submitted batch job 12"')
    with pytest.raises(SlurmError, match="unexpected answer"):
        sbatch(tmp_path / "x.sh")


def test_squeue_study_parses_lines(fake_bin: Path) -> None:
    _fake(
        fake_bin,
        "squeue",
        "cat <<'EOF'\n"
        "100 0 100_0 101 RUNNING hpctune-s None\n"
        "100 3 100_3 100 PENDING hpctune-s BeginTime\n"
        "200 N/A 200 200 PENDING hpctune-s Dependency\n"
        "EOF",
    )
    tasks = squeue_study(job_name_for("s"))
    assert [(t.array_job_id, t.task_id, t.job_ref, t.job_id, t.state, t.name, t.reason) for t in tasks] == [
        ("100", 0, "100_0", "101", "RUNNING", "hpctune-s", "None"),
        ("100", 3, "100_3", "100", "PENDING", "hpctune-s", "BeginTime"),
        ("200", None, "200", "200", "PENDING", "hpctune-s", "Dependency"),
    ]
    assert all(t.active for t in tasks) and not tasks[2].is_array_task
    argv = (fake_bin / "squeue.log").read_text().split()
    assert argv[:4] == ["-r", "-h", "-o", "%F"] and "--name=hpctune-s" in argv and "--me" in argv


def test_scancel_and_requeue_argv(fake_bin: Path) -> None:
    _fake(fake_bin, "scancel", "true")
    _fake(fake_bin, "scontrol", "true")
    scancel(["7", "8_1"])
    scancel(job_name="hpctune-s")
    scancel([])  # nothing to do: no call
    assert (fake_bin / "scancel.log").read_text().splitlines() == ["7 8_1", "--name=hpctune-s --me"]
    env = SlurmEnv.from_environ({"SLURM_JOB_ID": "9", "SLURM_ARRAY_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "2"})
    assert requeue_own_task(env) == "5_2"
    assert (fake_bin / "scontrol.log").read_text().splitlines() == ["requeue 5_2"]


def test_requeue_refused(fake_bin: Path) -> None:
    message = "scontrol: error: Requested operation is presently disabled"
    _fake(fake_bin, "scontrol", f'echo "{message}" >&2; exit 1')
    with pytest.raises(SlurmError, match=f"^{message}$"):
        requeue_own_task(SlurmEnv(job_id="9"))


# --- scripts/slurm-local.sh ---------------------------------------------------------------------------------


def test_slurm_local_script_is_valid_bash() -> None:
    assert subprocess.run(["bash", "-n", str(SLURM_LOCAL)]).returncode == 0
    out = subprocess.run(["bash", str(SLURM_LOCAL), "bogus"], capture_output=True, text=True)
    assert out.returncode != 0 and "unknown command 'bogus'" in out.stderr


@pytest.mark.slurm
def test_slurm_local_is_idempotent(slurm_cluster: SlurmCluster) -> None:
    """A second run with the cluster up and its config current changes nothing and says so."""
    out = subprocess.run(["bash", str(SLURM_LOCAL)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "slurm.conf is up to date" in out.stdout and "already running" in out.stdout
    assert "stopping" not in out.stdout
    # It ends with sinfo, the node up. Not necessarily idle: under `make test` a job of an earlier SLURM test
    # (a study server winding down, a collector) may still hold CPUs.
    assert out.stdout.rstrip().splitlines()[-1].split()[4] in ("idle", "mix", "alloc", "allocated")
    assert max_array_size() == DEFAULT_MAX_ARRAY_SIZE
