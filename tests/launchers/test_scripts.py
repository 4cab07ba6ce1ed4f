"""Rendered sbatch scripts: golden files, bash syntax, hostile paths and lines, and no secret ever written."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hpc_tune.cli import cli
from hpc_tune.config import LoadedConfig, parse_config
from hpc_tune.errors import ConfigError
from hpc_tune.launchers import scripts as render
from hpc_tune.launchers.scripts import array_sbatch_args, render_scripts
from hpc_tune.slurm import ArraySpec
from tests.slurm_fixtures import GOLDEN_DIR, regen_golden

NOW = datetime(2025, 1, 2, 3, 4, tzinfo=timezone.utc)
SPACE = {"lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-1, "log": True}}


# Arrays of several tasks need a database store; the scripts never contain the URL.
CLUSTER_STORAGE = "postgresql+psycopg2://tuner@db.example.org/optuna"


def loaded_config(directory: Path, **overrides: Any) -> LoadedConfig:
    raw: dict[str, Any] = {"study": "demo", "space": SPACE, "storage": CLUSTER_STORAGE, **overrides}
    path = directory / "hpctune.yaml"
    return LoadedConfig(config=parse_config(raw, path), path=path)


def render_text(loaded: LoadedConfig, spec: str = "0-3", **kwargs: Any) -> render.RenderedScripts:
    return render_scripts(loaded, ArraySpec.parse(spec), now=NOW, **kwargs)


def bash_n(path: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- golden files -------------------------------------------------------------------------------------------

GOLDEN_SLURM = {
    "partition": "gpu",
    "account": "proj-42",
    "qos": "normal",
    "time": "02:00:00",
    "gres": "gpu:1",
    "cpus_per_task": 8,
    "mem": "32G",
    "array_parallelism": 8,
    "signal_grace_s": 240,
    "setup": ["module load cuda/12.4", "source .venv/bin/activate"],
    "extra_sbatch": ["--constraint=a100", "--mail-type=END"],
}


@pytest.mark.parametrize(
    ("name", "spec", "max_size"),
    [("digits", "0-31", 1001), ("split", "0-2500%4", 1001)],
)
def test_golden(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    spec: str,
    max_size: int,
) -> None:
    monkeypatch.setattr(render, "_version", lambda: "0.0.0-golden")
    project = tmp_path / "project"
    loaded = loaded_config(project, study=f"{name}-mlp", slurm=GOLDEN_SLURM)
    out = render_text(loaded, spec, max_array_size=max_size)
    # The golden folder mirrors jobs/: the array script beside collect/<name>.sh.
    for relative, text in ((f"{name}.sh", out.array_text), (f"collect/{name}.sh", out.collect_text)):
        normalised = text.replace(str(tmp_path), "/TMP")
        golden = GOLDEN_DIR / relative
        if regen_golden(request.config):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(normalised)
            continue
        assert golden.is_file(), f"{golden} missing: run pytest --regen-golden (or HPCTUNE_REGEN_GOLDEN=1)"
        assert normalised == golden.read_text(), (
            f"{golden.name} differs from the rendered script; if the change is intended, "
            "rerun with --regen-golden and review the diff"
        )


def test_golden_files_pass_bash_n() -> None:
    goldens = sorted(GOLDEN_DIR.rglob("*.sh"))
    assert [p.relative_to(GOLDEN_DIR).as_posix() for p in goldens] == [
        "collect/digits.sh",
        "collect/split.sh",
        "digits.sh",
        "split.sh",
    ]
    for path in goldens:
        bash_n(path)
        assert path.read_text().startswith("#!/bin/bash\n")


# --- structure ----------------------------------------------------------------------------------------------


def test_scripts_are_written_both_readable_and_bash_n_clean(tmp_path: Path) -> None:
    loaded = loaded_config(tmp_path)
    out = render_text(loaded)
    # `sbatch jobs/*.sh` must expand to the array script alone: the collector is in a subfolder.
    assert out.array_path == tmp_path / "jobs" / "demo.sh"
    assert out.collect_path == tmp_path / "jobs" / "collect" / "demo.sh"
    assert sorted((tmp_path / "jobs").glob("*.sh")) == [out.array_path]
    assert out.neighbours == ()
    for path, text in ((out.array_path, out.array_text), (out.collect_path, out.collect_text)):
        assert path.read_text() == text
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        assert text.startswith("#!/bin/bash\n")
        assert "set -euo pipefail" in text
        assert "#SBATCH --job-name=hpctune-demo\n" in text
        bash_n(path)
    assert out.logs_dir.is_dir()  # SLURM fails a task before any output when its log dir is missing
    assert "#SBATCH --dependency=singleton" in out.collect_text
    assert "--dependency" not in out.array_text.split("set -euo")[0].replace("--dependency=singleton", "")
    assert "\nexec hpctune worker -c " in out.array_text
    assert "\nexec hpctune collect --config " in out.collect_text and "--slurm-guard" in out.collect_text
    for line in ("--requeue", "--open-mode=append", "--signal=B:USR2@300", "--array=0-3"):
        assert f"#SBATCH {line}\n" in out.array_text
    assert "--gres" not in out.collect_text
    assert not list((tmp_path / "jobs").rglob(".*tmp"))  # no temporary files left behind


def test_parallelism_from_config_unless_spec_has_its_own(tmp_path: Path) -> None:
    loaded = loaded_config(tmp_path, slurm={"array_parallelism": 8})
    assert "#SBATCH --array=0-31%8\n" in render_text(loaded, "0-31").array_text
    assert "#SBATCH --array=0-31%2\n" in render_text(loaded, "0-31%2").array_text


def test_split_array_header_lists_every_part(tmp_path: Path) -> None:
    out = render_text(loaded_config(tmp_path), "0-1500", max_array_size=1001)
    assert [(str(c.spec), c.offset) for c in out.chunks] == [("0-1000", 0), ("0-499", 1001)]
    assert "#SBATCH --array=0-1000\n" in out.array_text
    assert "--export=ALL,HPCTUNE_ARRAY_OFFSET=1001" in out.array_text
    assert 'export HPCTUNE_ARRAY_OFFSET="${HPCTUNE_ARRAY_OFFSET:-0}"' in out.array_text


def test_hpctune_command_with_arguments(tmp_path: Path) -> None:
    out = render_text(loaded_config(tmp_path), hpctune_cmd=f"{sys.executable} -m hpc_tune")
    assert f"\nexec {sys.executable} -m hpc_tune worker -c " in out.array_text
    with pytest.raises(ConfigError, match="empty"):
        render_text(loaded_config(tmp_path), hpctune_cmd="  ")


def test_config_path_for_script_overrides(tmp_path: Path) -> None:
    out = render_text(loaded_config(tmp_path), config_path_for_script=Path("/shared/cfg/study.yaml"))
    assert "exec hpctune worker -c /shared/cfg/study.yaml\n" in out.array_text


def test_out_dir(tmp_path: Path) -> None:
    out = render_text(loaded_config(tmp_path), out_dir=tmp_path / "elsewhere")
    assert out.array_path.parent == tmp_path / "elsewhere" and out.array_path.is_file()


def test_config_without_a_file_is_refused(tmp_path: Path) -> None:
    raw = {"study": "x", "space": SPACE, "storage": CLUSTER_STORAGE}
    loaded = LoadedConfig(config=parse_config(raw), path=None)
    with pytest.raises(ConfigError, match="config file's path"):
        render_scripts(loaded, ArraySpec.parse("0-1"), out_dir=tmp_path)


# --- submitted by hand: the first task submits the collector ----------------------------------------------

FAKE_SBATCH = """#!{python}
# Stands in for sbatch inside a task: logs argv and the variables a job would inherit, answers like
# --parsable after a warning line ("<id>;<cluster>"), or fails when its argv holds $FAKE_SBATCH_FAIL.
import json, os, sys
log = {log!r}
inherited = {{k: v for k, v in os.environ.items() if k.startswith(("SLURM_ARRAY_", "HPCTUNE_"))}}
with open(log, "a") as fh:
    fh.write(json.dumps({{"argv": sys.argv[1:], "env": inherited}}) + "\\n")
fail = os.environ.get("FAKE_SBATCH_FAIL")
if fail and any(fail in arg for arg in sys.argv[1:]):
    sys.exit("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation")
with open(log) as fh:
    print("sbatch: warning: a line before the id")
    print(f"{{500 + sum(1 for _ in fh)}};cluster")
"""


class TaskRun:
    """Runs the rendered array script with bash as SLURM would start one task, with a fake sbatch."""

    def __init__(self, tmp_path: Path, out: render.RenderedScripts) -> None:
        self.out = out
        self.bin = tmp_path / "sbatch bin"
        self.bin.mkdir()
        self.log = tmp_path / "sbatch.log"
        sbatch = self.bin / "sbatch"
        sbatch.write_text(FAKE_SBATCH.format(python=sys.executable, log=str(self.log)))
        sbatch.chmod(0o755)
        self.cwd = tmp_path

    def __call__(self, *, path: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
        task = {
            "SLURM_JOB_ID": "78",
            "SLURM_ARRAY_JOB_ID": "77",
            "SLURM_ARRAY_TASK_ID": "0",
            "SLURM_ARRAY_TASK_MIN": "0",
            "SLURM_ARRAY_TASK_MAX": "3",
            "SLURM_ARRAY_TASK_COUNT": "4",
        }
        # Without `path`, nothing is found on PATH: the script needs only bash builtins up to its exec.
        search = f"{self.bin}{os.pathsep}{os.environ['PATH']}" if path else str(self.cwd / "empty")
        run_env = {"PATH": search, **task, **env}
        bash = shutil.which("bash")
        assert bash is not None
        return subprocess.run(
            [bash, str(self.out.array_path)], capture_output=True, text=True, env=run_env, cwd=self.cwd
        )

    def calls(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def worker_ran(proc: subprocess.CompletedProcess[str]) -> bool:
    """The fake hpctune's JSON is the last stdout line: the task went on to exec its worker."""
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])["argv"][0] == "worker"


@pytest.mark.parametrize("directory", ["plain", "it's $(touch pwned) here"])
def test_first_task_submits_the_collector_after_the_array(tmp_path: Path, directory: str) -> None:
    project = tmp_path / directory
    out = render_text(loaded_config(project), hpctune_cmd=shlex.quote(str(_fake_hpctune(tmp_path))))
    run = TaskRun(tmp_path, out)
    proc = run()
    assert worker_ran(proc)
    # afterany (never afterok: a failed task must not keep the summary from being written), and the
    # collector job does not inherit the task's array variables, only the marker against a second collector.
    assert run.calls() == [
        {
            "argv": ["--parsable", "--dependency=afterany:77", str(out.collect_path)],
            "env": {"HPCTUNE_COLLECTOR": "submitted"},
        }
    ]
    assert "hpctune: submitted the collector as job 501 (afterany:77)\n" in proc.stdout
    assert not (tmp_path / "pwned").exists()
    # The template spells the marker that submit exports (render.COLLECTOR_ENV) the same way.
    assert f"--export=ALL,{render.COLLECTOR_ENV}=submitted" in array_sbatch_args(out.chunks[0], 1)
    assert f"export {render.COLLECTOR_ENV}=submitted\n" in out.array_text


@pytest.mark.parametrize(
    "env",
    [
        {"SLURM_ARRAY_TASK_ID": "2"},  # not the first task
        {"SLURM_RESTART_COUNT": "1"},  # the first task, requeued: it submitted the collector on its first run
        {"HPCTUNE_COLLECTOR": "submitted"},  # hpctune submit queued the collector itself
        {"SLURM_ARRAY_TASK_MIN": "", "SLURM_ARRAY_TASK_ID": ""},  # not an array task (bash by hand)
    ],
)
def test_no_collector_from_other_tasks_reruns_or_submit(tmp_path: Path, env: dict[str, str]) -> None:
    out = render_text(loaded_config(tmp_path / "p"), hpctune_cmd=shlex.quote(str(_fake_hpctune(tmp_path))))
    run = TaskRun(tmp_path, out)
    assert worker_ran(run(**env))
    assert run.calls() == []


@pytest.mark.parametrize("broken", ["refused", "missing"])
def test_failed_collector_submission_leaves_the_worker_running(tmp_path: Path, broken: str) -> None:
    out = render_text(loaded_config(tmp_path / "p"), hpctune_cmd=shlex.quote(str(_fake_hpctune(tmp_path))))
    run = TaskRun(tmp_path, out)
    proc = run(FAKE_SBATCH_FAIL="collect") if broken == "refused" else run(path=False)
    if broken == "missing":
        assert "sbatch: command not found" in proc.stderr
    assert worker_ran(proc)
    assert (
        "hpctune: could not submit the collector; submit it yourself: "
        f"sbatch --dependency=afterany:77 {out.collect_path}\n"
    ) in proc.stderr
    assert "submitting the collector failed" not in proc.stderr  # the subshell itself did not fail


@pytest.mark.parametrize("limit", ["%4", ""])
def test_first_task_of_a_split_array_submits_the_other_parts_then_the_collector(
    tmp_path: Path, limit: str
) -> None:
    out = render_text(
        loaded_config(tmp_path / "p"),
        f"0-2500{limit}",
        max_array_size=1001,
        hpctune_cmd=shlex.quote(str(_fake_hpctune(tmp_path))),
    )
    assert [(str(c.spec), c.offset) for c in out.chunks][1:] == [
        (f"0-1000{limit}", 1001),
        (f"0-498{limit}", 2002),
    ]
    run = TaskRun(tmp_path, out)
    assert worker_ran(run())
    calls = run.calls()
    array = str(out.array_path)
    # Under a %N limit the parts run one after another (as hpctune submit chains them); else all at once.
    chain = ["--dependency=afterany:77"] if limit else []
    assert calls[0]["argv"] == [
        "--parsable",
        *chain,
        f"--array=0-1000{limit}",
        "--export=ALL,HPCTUNE_ARRAY_OFFSET=1001",
        array,
    ]
    chain = ["--dependency=afterany:501"] if limit else []
    assert calls[1]["argv"] == [
        "--parsable",
        *chain,
        f"--array=0-498{limit}",
        "--export=ALL,HPCTUNE_ARRAY_OFFSET=2002",
        array,
    ]
    # One collector, after all three parts; the parts carry the marker, so none of them submits again.
    assert calls[2]["argv"] == ["--parsable", "--dependency=afterany:77:501:502", str(out.collect_path)]
    assert [c["env"] for c in calls] == [{"HPCTUNE_COLLECTOR": "submitted"}] * 3


def test_a_part_that_cannot_be_submitted_is_left_out_of_the_collector_dependency(tmp_path: Path) -> None:
    out = render_text(
        loaded_config(tmp_path / "p"),
        "0-2500%4",
        max_array_size=1001,
        hpctune_cmd=shlex.quote(str(_fake_hpctune(tmp_path))),
    )
    run = TaskRun(tmp_path, out)
    proc = run(FAKE_SBATCH_FAIL="OFFSET=1001")
    assert worker_ran(proc)
    assert "hpctune: could not submit array part 0-1000%4 (offset 1001); the study goes on" in proc.stderr
    calls = run.calls()
    assert "--dependency=afterany:77" in calls[1]["argv"]  # chained to the last part that was submitted
    assert calls[2]["argv"][1] == "--dependency=afterany:77:502"


# --- what `sbatch jobs/*.sh` sees ---------------------------------------------------------------------------


def test_neighbours_are_what_the_shell_glob_adds(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    render_text(loaded_config(tmp_path, study="alpha"))
    (jobs / ".hidden.sh").write_text("")  # the shell's * skips dot files
    (jobs / "README.md").write_text("")
    out = render_text(loaded_config(tmp_path, study="beta"))
    assert out.neighbours == (jobs / "alpha.sh",)
    expanded = subprocess.run(
        ["bash", "-c", "echo jobs/*.sh"], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stdout.split()
    assert expanded == ["jobs/alpha.sh", "jobs/beta.sh"]


def _write_cfg(directory: Path, study: str) -> Path:
    path = directory / f"{study}.yaml"
    path.write_text(json.dumps({"study": study, "space": SPACE, "storage": CLUSTER_STORAGE}))
    return path


def test_cli_render_says_what_to_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    alpha = _write_cfg(tmp_path, "alpha")
    result = runner.invoke(cli, ["render", "-c", str(alpha), "--array", "0-3"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "wrote jobs/alpha.sh (worker array; its first task submits the collector)\n"
        "wrote jobs/collect/alpha.sh (collector)\n"
        "submit by hand: sbatch jobs/*.sh\n"
    )
    assert result.stderr == ""
    # A second study in the same jobs/: the glob would submit alpha.sh alone, with beta.sh as its argument.
    beta = _write_cfg(tmp_path, "beta")
    result = runner.invoke(cli, ["render", "-c", str(beta), "--array", "0-2500"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "wrote jobs/beta.sh (worker array; its first task submits the other 2 part(s) of the split array "
        "and the collector)\n"
        "wrote jobs/collect/beta.sh (collector)\n"
        "submit by hand: sbatch jobs/beta.sh\n"
    )
    assert result.stderr == (
        "warning: jobs/ also holds alpha.sh: `sbatch jobs/*.sh` submits only the first file it is given; "
        'to submit every study there: for f in jobs/*.sh; do sbatch "$f"; done\n'
    )


# --- hostile inputs -----------------------------------------------------------------------------------------

HOSTILE_DIRS = ["my study dir", "it's here", 'say "hi"', "a;b && rm -rf x", "$(touch pwned)", "`id`", "100%"]


def _fake_hpctune(tmp_path: Path) -> Path:
    """Stands in for hpctune: dumps its argv and the env the script set, so quoting is checked end to end."""
    fake = tmp_path / "fake bin" / "hpctune"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv[1:], 'cache': os.environ.get('TORCHINDUCTOR_CACHE_DIR'),\n"
        "                  'offset': os.environ.get('HPCTUNE_ARRAY_OFFSET'),\n"
        "                  'collect': os.environ.get('HPCTUNE_COLLECT_SCRIPT'),\n"
        "                  'setup': os.environ.get('SETUP_RAN')}))\n"
    )
    fake.chmod(0o755)
    return fake


@pytest.mark.parametrize("hostile", HOSTILE_DIRS)
def test_hostile_paths_are_quoted_end_to_end(tmp_path: Path, hostile: str) -> None:
    project = tmp_path / hostile / "proj ect"
    loaded = loaded_config(project, slurm={"setup": ["export SETUP_RAN=yes"]})
    fake = _fake_hpctune(tmp_path)
    out = render_text(loaded, hpctune_cmd=shlex.quote(str(fake)))
    for path in (out.array_path, out.collect_path):
        bash_n(path)
    # Run the scripts with bash (the #SBATCH lines are comments then): argv must arrive intact.
    env = {"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": "2"}
    run = {"capture_output": True, "text": True, "env": env, "cwd": tmp_path}
    ran = subprocess.run(["bash", str(out.array_path)], **run)
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen == {
        "argv": ["worker", "-c", str(project / "hpctune.yaml")],
        "cache": str(project / "runs" / "demo" / "inductor-cache"),
        "offset": "0",
        "collect": None,
        "setup": "yes",
    }
    ran = subprocess.run(["bash", str(out.collect_path)], **run)
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["argv"] == ["collect", "--config", str(project / "hpctune.yaml"), "--slurm-guard"]
    assert seen["collect"] == str(out.collect_path)
    assert not (tmp_path / "pwned").exists()


def test_percent_in_results_dir_is_escaped_for_log_patterns(tmp_path: Path) -> None:
    out = render_text(loaded_config(tmp_path / "100%"))
    assert f"#SBATCH --output={tmp_path}/100%%/runs/demo/logs/array-%A_%a.out\n" in out.array_text
    assert f"export TORCHINDUCTOR_CACHE_DIR={tmp_path}/100%/runs/demo/inductor-cache\n" in out.array_text


@pytest.mark.parametrize("bad", ["runs\nevil", "runs\\x", "runs\x1b[31m"])
def test_unwritable_characters_in_paths_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="control character or backslash"):
        render_text(loaded_config(tmp_path, results=bad))
    assert not (tmp_path / "jobs").exists()


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("if true; then", "slurm.setup line 1 is not valid bash"),
        ("echo 'unclosed", "slurm.setup line 1 is not valid bash"),
        ("echo ok)", "slurm.setup line 1 is not valid bash"),
        ("echo \x1b[2J", "slurm.setup line 1 has a control character"),
    ],
)
def test_bad_setup_lines_are_refused(tmp_path: Path, line: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        render_text(loaded_config(tmp_path, slurm={"setup": [line]}))
    assert not (tmp_path / "jobs").exists()


def test_bad_setup_line_number_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 2 "):
        render_text(loaded_config(tmp_path, slurm={"setup": ["module load x", "for i in 1 2; do"]}))


def test_setup_lines_are_kept_verbatim(tmp_path: Path) -> None:
    lines = ["module load cuda/12.4", 'export A="b c" && echo "$A" | cat', "source .venv/bin/activate  # ok"]
    out = render_text(loaded_config(tmp_path, slurm={"setup": lines}))
    assert "\nset +u\n" + "\n".join(lines) + "\nset -u\n" in out.array_text
    bash_n(out.array_path)


@pytest.mark.parametrize("option", ["--job-name=x", "--array=0-3", "--output=/tmp/x", "--dependency=after:1"])
def test_extra_sbatch_cannot_take_over_owned_options(tmp_path: Path, option: str) -> None:
    with pytest.raises(ConfigError, match="must not set"):
        render_text(loaded_config(tmp_path, slurm={"extra_sbatch": [option]}))


def test_bad_study_name_never_reaches_a_script(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        loaded_config(tmp_path, study="a;b")


# --- secrets ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://alice:s3cretPW@db.example:5432/optuna",
        "postgresql://alice:s3cretPW@db/optuna?sslmode=require",
        "postgresql://alice@db/optuna?password=s3cretPW",
    ],
)
def test_password_in_storage_url_is_refused_and_never_shown(tmp_path: Path, url: str) -> None:
    with pytest.raises(ConfigError) as info:
        render_text(loaded_config(tmp_path, storage=url))
    assert "PGPASSFILE" in info.value.line()
    assert "s3cretPW" not in info.value.line()
    assert not (tmp_path / "jobs").exists()


def test_storage_url_is_never_written(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://alice@db.example.internal:5432/optuna"
    out = render_text(loaded_config(tmp_path, storage=url))
    for text in (out.array_text, out.collect_text):
        assert "db.example.internal" not in text and "postgresql" not in text


# --- both or neither ----------------------------------------------------------------------------------------


def test_both_or_neither_is_written(tmp_path: Path) -> None:
    """The collector cannot be replaced: the array script must stay as it was (here: absent)."""
    jobs = tmp_path / "jobs"
    (jobs / "collect" / "demo.sh").mkdir(parents=True)  # a directory where the collector should go
    with pytest.raises(ConfigError, match="cannot write the job scripts"):
        render_text(loaded_config(tmp_path))
    assert not (jobs / "demo.sh").exists()
    assert sorted(p.relative_to(jobs).as_posix() for p in jobs.rglob("*")) == [
        "collect",
        "collect/demo.sh",
    ]  # no temporary files left


def test_failed_rewrite_keeps_the_old_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = loaded_config(tmp_path)
    first = render_text(loaded, "0-3")
    real_replace = os.replace

    def replace_failing_for_collector(src: str, dst: str | os.PathLike[str]) -> None:
        if Path(dst).parent.name == "collect":
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(render.os, "replace", replace_failing_for_collector)
    with pytest.raises(ConfigError, match="No space left on device"):
        render_text(loaded, "0-7")
    assert first.array_path.read_text() == first.array_text
    assert first.collect_path.read_text() == first.collect_text
    jobs = first.array_path.parent
    assert sorted(p.relative_to(jobs).as_posix() for p in jobs.rglob("*")) == [
        "collect",
        "collect/demo.sh",
        "demo.sh",
    ]


@pytest.mark.parametrize("storage", [None, "embedded"])
def test_embedded_store_is_refused_for_an_array_of_several_tasks(tmp_path: Path, storage: str | None) -> None:
    with pytest.raises(ConfigError, match="an array of 4 tasks needs a PostgreSQL study") as info:
        render_text(loaded_config(tmp_path, storage=storage), "0-3")
    assert info.value.where == "storage"
    assert not (tmp_path / "jobs").exists()  # nothing written half-way
    one = render_text(loaded_config(tmp_path, storage=storage), "0")  # one task: nothing shares the journal
    assert one.array_path.is_file()
