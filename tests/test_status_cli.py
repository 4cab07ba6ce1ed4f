"""``hpctune status``: a real PostgreSQL study reached through HPCTUNE_STORAGE alone (no config file here),
with a config when there is one, ``--watch`` and its ways to end, and the missing-study error line."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState, create_trial

from hpc_tune.cli import cli
from tests.conftest import write_config

pytestmark = pytest.mark.postgres

HEADER = re.compile(r"^\d\d:\d\d:\d\d, every 0\.1 s \(Ctrl-C stops\)$")


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False, prog_name="hpctune")
    return result.exit_code, result.stdout, result.stderr


def add(study: optuna.Study, state: TrialState, start: datetime, end: datetime | None, **kw: Any) -> None:
    trial = create_trial(state=state, value=0.9 if state == TrialState.COMPLETE else None, **kw)
    trial.datetime_start, trial.datetime_complete = start, end
    study.add_trial(trial)


def make_study(url: str, name: str = "t-status", budget: int = 5, running: bool = True) -> optuna.Study:
    """One trial finished before the last hour and two within it (2 trials/h), and one running on task 5 of
    array 4711: times relative to now, so the rates do not depend on how long the test takes."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr("trials", budget)
    now = datetime.now()
    two = {1: 0.5, 2: 0.6}
    add(
        study,
        TrialState.COMPLETE,
        now - timedelta(hours=2),
        now - timedelta(minutes=90),
        intermediate_values=two,
    )
    add(
        study,
        TrialState.COMPLETE,
        now - timedelta(minutes=50),
        now - timedelta(minutes=30),
        intermediate_values=two,
    )
    add(
        study,
        TrialState.COMPLETE,
        now - timedelta(minutes=30),
        now - timedelta(minutes=10),
        intermediate_values=two,
    )
    if running:
        worker = {"host": "node-a", "pid": 12, "job_id": "4716", "array_job_id": "4711", "array_task_id": 5}
        add(
            study,
            TrialState.RUNNING,
            now - timedelta(minutes=5, seconds=30),
            None,
            intermediate_values={1: 0.5, 2: 0.6, 3: 0.7},
            user_attrs={"worker": worker},
        )
    return study


STATUS = (
    "study t-status: 3/5 finished (COMPLETE 3, PRUNED 0, FAIL 0, RUNNING 1, WAITING 0; 0 retried)\n"
    # In the last hour: 2 finished; 2 + 2 epochs of those two and the running trial's 3, in 60 min.
    "throughput: 2.0 trials/h, 0.12 epochs/min over the last 1 h; ETA 1 h (2 trials left)\n"
    "{hours}\n"
    "running (1):\n"
    "  trial  epoch  host    task    running for\n"
    "      3      3  node-a  4711_5  5 min\n"
)


# No record and no timeline here: trial-hours from Optuna's times. The 3 finished trials ran 70 min, 23.3 min
# each; at the budget: 1 trial still to start and the running one's remaining share of 23.3 min, so the
# projection, 70 + 2 x 23.3 min, does not move while the running trial's hours so far grow with the clock.
HOURS = re.compile(r"trial-hours: 1\.\d+ so far; about 1\.94 at the budget of 5 trials")


def assert_status(text: str, expected: str = STATUS) -> None:
    """``text`` is ``expected`` line by line, its hours line matching HOURS."""
    lines, wanted = text.rstrip("\n").split("\n"), expected.rstrip("\n").split("\n")
    assert len(lines) == len(wanted), text
    for line, want in zip(lines, wanted, strict=True):
        assert HOURS.fullmatch(line) if want == "{hours}" else line == want, (line, want)


@pytest.fixture()
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory: no hpctune.yaml that could name the study."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HPCTUNE_STORAGE", raising=False)
    return tmp_path


def test_status_from_hpctune_storage_alone(here: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make_study(pg_url)
    monkeypatch.setenv("HPCTUNE_STORAGE", pg_url)
    code, out, err = invoke("status", "t-status")
    assert (code, err) == (0, "")
    assert_status(out)  # no SLURM line: without a config there is no job name to ask squeue about
    assert not (here / "runs").exists()  # a look, not a collect: nothing written


def test_watch_prints_each_refresh_and_stops_after_count(
    here: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_study(pg_url)
    monkeypatch.setenv("HPCTUNE_STORAGE", pg_url)
    code, out, err = invoke("status", "t-status", "--watch", "--count", "2", "--interval", "0.1")
    assert (code, err) == (0, "")
    blocks = out.split("\n\n")
    assert len(blocks) == 2
    for block in blocks:
        header, _, rest = block.partition("\n")
        assert HEADER.match(header), header
        assert_status(rest)


def test_watch_ends_by_itself_when_the_study_is_done(
    here: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_study(pg_url, budget=3, running=False)
    monkeypatch.setenv("HPCTUNE_STORAGE", pg_url)
    code, out, _ = invoke("status", "t-status", "--watch", "--count", "5", "--interval", "0.1")
    assert code == 0
    assert out.count("study t-status: 3/3 finished") == 1  # one refresh, not five
    assert "; done: budget used, nothing running\n" in out


def test_ctrl_c_ends_watch_quietly(here: Path, pg_url: str) -> None:
    make_study(pg_url)
    env = {**os.environ, "HPCTUNE_STORAGE": pg_url, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpc_tune", "status", "t-status", "--watch", "--interval", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A terminal's Ctrl-C: a suite started in the background (`make test &`) runs with SIGINT ignored,
        # which children inherit, and Python then never turns it into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first refresh is out: the watch is sleeping or refreshing
        assert first.endswith(", every 60 s (Ctrl-C stops)\n"), first
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (proc.returncode, err) == (0, "")


def test_missing_study_names_it_and_the_redacted_url(
    here: Path, pg_secret_db: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = pg_secret_db["url_with_password"]
    optuna.create_study(study_name="other", storage=url)
    monkeypatch.setenv("HPCTUNE_STORAGE", url)
    code, out, err = invoke("status", "nosuch")
    redacted = url.replace(pg_secret_db["password"], "***")
    assert (code, out) == (3, "")
    assert err == f"Error: no study 'nosuch'; studies there: other ({redacted})\n"
    assert pg_secret_db["password"] not in err


def test_a_config_here_gives_the_budget_and_asks_squeue(
    here: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_study(pg_url, budget=99)
    write_config(here, study="t-status", storage=pg_url, trials=5)  # ./hpctune.yaml: its budget wins
    bin_dir = here / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no squeue at all: no SLURM line, and no error
    code, out, err = invoke("status")
    assert (code, err) == (0, "")
    assert_status(out)

    squeue = bin_dir / "squeue"  # there, but the controller is down: said in one line, not an error
    refusal = "squeue: error: slurm_load_jobs error: Unable to contact slurm controller"
    squeue.write_text(f"#!/bin/sh\necho '{refusal}' >&2\nexit 1\n")
    squeue.chmod(squeue.stat().st_mode | stat.S_IXUSR)
    code, out, err = invoke("status", "t-status")
    assert (code, err) == (0, "")
    assert out.endswith(f"slurm: squeue did not answer: {refusal}\n")
    assert_status(out.split("running (1)")[0], STATUS.split("running (1)")[0])


def test_count_without_watch_is_a_usage_error(here: Path) -> None:
    code, out, err = invoke("status", "t-status", "--count", "2")
    assert (code, out) == (2, "")
    assert err == "Error: --interval and --count go with --watch (hpctune status --help)\n"
