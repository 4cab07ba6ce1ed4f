"""storage: server on the one-node SLURM the suite starts, as an ordinary user with the wheel's PostgreSQL:
``hpctune submit`` runs the server job, a 4-task array on it and the collector, with the server requeued in
the middle; by hand, ``sbatch jobs/*.sh`` does the same, and a server killed with SIGKILL and resubmitted
loses nothing; the server's own walltime requeues it; a second server for the study is refused; and the
password is nowhere but its 0600 file (scripts, logs, SLURM's spool, processes)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from hpc_tune.config import load_config
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import spec_of
from tests.conftest import StudyUser
from tests.slurm_fixtures import SlurmCluster, wait_until
from tests.storage.test_server import OBJECTIVE, wheel

pytestmark = [pytest.mark.slurm, pytest.mark.postgres, pytest.mark.slow]


# The plain objective, except that trials from number ``hold_from`` on wait after their first epoch until the
# test creates ``release`` beside it: what happens to the servers then happens while the study is surely
# mid-way, however slowly the machine runs.
HELD = """\
import pathlib
import time


def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    release = pathlib.Path(__file__).with_name("release")
    for epoch in range(1, {epochs} + 1):
        time.sleep({sleep})
        trial.report(x * epoch, epoch)
        while trial.number >= {hold_from} and not release.exists():
            time.sleep(0.5)
    return x
"""


def write_study(
    user: StudyUser,
    name: str,
    *,
    trials: int,
    epochs: int,
    sleep: float,
    server_time: str,
    hold_from: int | None = None,
) -> Path:
    objective = (
        OBJECTIVE.format(epochs=epochs, sleep=sleep)
        if hold_from is None
        else HELD.format(epochs=epochs, sleep=sleep, hold_from=hold_from)
    )
    (user.home / "objective.py").write_text(objective)
    activate = Path(sys.executable).parent / "activate"
    config = {
        "study": name,
        "storage": "server",
        "task": "objective.py:objective",
        "metric": "value",
        "trials": trials,
        "epochs": epochs,
        "pruner": {"type": "none"},
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "server": {"bin_dir": wheel()},
        "worker": {"heartbeat_interval": 2, "grace_period": 30},
        "slurm": {
            "cpus_per_task": 1,
            "mem": "300M",
            "time": "10",
            "signal_grace_s": 30,
            "setup": [f"source {shlex.quote(str(activate))}"],
            "server": {"time": server_time, "mem": "500M"},
        },
    }
    path = user.home / "hpctune.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    for item in user.home.iterdir():
        user.own(item)
    return path


def jobs_of(user: StudyUser, name: str) -> list[tuple[str, str, str]]:
    """(job ref, state, name) of the user's active jobs of the study (array, collector, server)."""
    out = subprocess.run(
        ["squeue", "-h", "-r", "-u", user.name, "-o", "%i %T %j"], capture_output=True, text=True, check=True
    ).stdout
    prefix = f"hpctune-{name}"
    return [
        tuple(line.split())
        for line in out.splitlines()
        if line.split()[2:3] and line.split()[2].startswith(prefix)
    ]  # type: ignore[misc]


def wait_for_all_jobs(user: StudyUser, name: str, timeout: float) -> None:
    wait_until(lambda: not jobs_of(user, name), timeout=timeout, poll=1.0)


def complete_trials(cfg: Path) -> int:
    """COMPLETE trials now, read from here while the server runs (as root, through the study's own
    address.json and password file); 0 while it is starting or away (one quick try, no waiting)."""
    loaded = load_config(cfg)
    storage = None
    try:
        storage = open_store(spec_of(loaded), attempts=1, retry_deadline_s=2).storage
        study = optuna.load_study(study_name=loaded.config.study, storage=storage)
        return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    except Exception:  # noqa: BLE001 - the server may be starting, or the study not yet created
        return 0
    finally:
        # Polled every second: an engine left to the garbage collector keeps its connection, and enough
        # of them fill the study server's max_connections (sized for the array) before the workers' own.
        if storage is not None and storage.engine is not None:
            storage.engine.dispose()


def check_nothing_lost(cfg: Path, total: int, epochs: int) -> None:
    """What the collector job wrote (the server has stopped since): exactly ``total`` finished trials, none
    failed and none re-run (no healthy trial was failed by the server's absence), and every epoch recorded
    once in each trial's JSON."""
    study_dir = load_config(cfg).study_dir
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["budget"] == {"trials": total, "finished": total, "retried": 0}
    assert summary["counts"]["COMPLETE"] == total
    assert summary["counts"]["FAIL"] == summary["counts"]["RUNNING"] == summary["counts"]["WAITING"] == 0
    for number in range(total):
        record = json.loads((study_dir / "trials" / f"trial-{number}.json").read_text())
        assert record["state"] == "COMPLETE"
        assert [e["epoch"] for e in record["epochs"]] == list(range(1, epochs + 1)), number


def password_nowhere(cfg: Path, *roots: Path) -> None:
    loaded = load_config(cfg)
    password = (loaded.server_dir / "password").read_text().strip()
    spool = Path("/var/spool/slurmctld")
    for root in (*roots, spool):
        for path in root.rglob("*"):
            if path.is_file() and path.name not in ("password", "pgpass") and "data" not in path.parts:
                assert password not in path.read_text(errors="replace"), path


def test_submit_runs_array_and_collector_on_the_server_through_a_requeue(
    tester: StudyUser, slurm_cluster: SlurmCluster
) -> None:
    name = "srv-" + tester.home.name[-6:].lower().replace("_", "-")
    cfg = write_study(tester, name, trials=16, epochs=4, sleep=1.5, server_time="10")
    submitted = tester.run("hpctune", "submit", "-c", str(cfg), "--array", "0-3")
    assert submitted.returncode == 0, submitted.stderr
    server_job = re.search(r"study server job: (\d+)", submitted.stdout)
    assert server_job is not None, submitted.stdout
    assert "collector job:" in submitted.stdout
    # Mid-study, the server job is put back in the queue: it stops fast, comes back on its data, and the
    # workers wait for it through the retrying layer.
    wait_until(lambda: complete_trials(cfg) >= 2, timeout=180, poll=1.0)
    subprocess.run(["scontrol", "requeue", server_job.group(1)], check=True, capture_output=True)
    wait_for_all_jobs(tester, name, timeout=420)
    check_nothing_lost(cfg, total=16, epochs=4)
    logs = load_config(cfg).study_dir / "logs"
    server_log = (logs / f"server-{server_job.group(1)}.out").read_text()
    assert server_log.count(f"study server of {name} on ") == 2, server_log  # started, requeued, back
    assert server_log.rstrip().endswith(f"study server of {name} stopped (done)")
    collect_logs = list(logs.glob("collect-*.out"))
    assert len(collect_logs) == 1 and f"study {name}: 16/16 finished" in collect_logs[0].read_text()
    assert (load_config(cfg).study_dir / "summary.json").is_file()
    password_nowhere(cfg, tester.home / "jobs", logs)


def test_by_hand_and_a_killed_server_resubmitted_loses_nothing_and_a_second_server_is_refused(
    tester: StudyUser, slurm_cluster: SlurmCluster
) -> None:
    name = "hand-" + tester.home.name[-6:].lower().replace("_", "-")
    cfg = write_study(tester, name, trials=16, epochs=4, sleep=1.5, server_time="10", hold_from=4)
    assert tester.run("hpctune", "render", "-c", str(cfg), "--array", "0-3").returncode == 0
    assert [p.name for p in (tester.home / "jobs").glob("*.sh")] == [f"{name}.sh"]  # the server's script
    typed = tester.run("bash", "-c", "sbatch jobs/*.sh")
    assert typed.returncode == 0, typed.stderr
    first = typed.stdout.split()[-1]
    wait_until(lambda: complete_trials(cfg) >= 2, timeout=180, poll=1.0)
    # A second server for the study (another job name, so that singleton does not hold it back) is refused.
    other = tester.run(
        "sbatch",
        "--parsable",
        "--job-name=intruder",
        "--export=ALL,HPCTUNE_SUBMITTED=array",
        str(tester.home / "jobs" / f"{name}.sh"),
    )
    assert other.returncode == 0, other.stderr
    intruder = other.stdout.strip().split(";")[0]
    wait_until(lambda: not any(j[0] == intruder for j in jobs_of_any(tester)), timeout=120, poll=1.0)
    refused = (load_config(cfg).study_dir / "logs" / f"server-{intruder}.err").read_text()
    assert f"Error: a study server already runs for study {name}: the server at " in refused
    assert f"job {first})" in refused
    # The server killed outright (SIGKILL to the whole job), then submitted again by hand: the workers wait,
    # it comes back on the same data (crash recovery), submits no second array, and the study ends.
    subprocess.run(["scancel", "--signal=KILL", "--full", first], check=True, capture_output=True)
    wait_until(lambda: not any(j[0] == first for j in jobs_of_any(tester)), timeout=60, poll=0.5)
    again = tester.run("bash", "-c", f"sbatch jobs/{name}.sh")
    assert again.returncode == 0, again.stderr
    second = again.stdout.split()[-1]
    logs = load_config(cfg).study_dir / "logs"
    second_log = logs / f"server-{second}.out"
    wait_until(
        lambda: second_log.is_file() and f"study server of {name} on " in second_log.read_text(),
        timeout=180,
        poll=1.0,
    )
    assert complete_trials(cfg) < 16  # the held trials: the array is still there to be found
    (tester.home / "release").touch()
    wait_for_all_jobs(tester, name, timeout=420)
    check_nothing_lost(cfg, total=16, epochs=4)
    assert "submitted the worker array" in (logs / f"server-{first}.out").read_text()
    assert "submitted the worker array" not in (logs / f"server-{second}.out").read_text()
    assert len(list(logs.glob("collect-*.out"))) == 1


def jobs_of_any(user: StudyUser) -> list[list[str]]:
    out = subprocess.run(
        ["squeue", "-h", "-u", user.name, "-o", "%i %T %j"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split() for line in out.splitlines() if line.strip()]


def test_the_servers_walltime_requeues_it_and_the_workers_wait(
    tester: StudyUser, slurm_cluster: SlurmCluster
) -> None:
    name = "wall-" + tester.home.name[-6:].lower().replace("_", "-")
    # A 2-minute server with its USR1 60 s before the limit (SLURM may send it up to a minute earlier): it
    # stops and requeues itself mid-study, as the study needs about 80 s of work on two workers.
    cfg = write_study(tester, name, trials=16, epochs=5, sleep=2.0, server_time="2")
    submitted = tester.run("hpctune", "submit", "-c", str(cfg), "--array", "0-1")
    assert submitted.returncode == 0, submitted.stderr
    server_job = re.search(r"study server job: (\d+)", submitted.stdout)
    assert server_job is not None
    # While it runs, no process shows the password in its arguments or environment.
    wait_until(lambda: complete_trials(cfg) >= 1, timeout=180, poll=1.0)
    password = (load_config(cfg).server_dir / "password").read_text().strip().encode()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            for what in ("cmdline", "environ"):
                try:
                    assert password not in (proc / what).read_bytes(), (proc.name, what)
                except (FileNotFoundError, ProcessLookupError, PermissionError):
                    continue
    wait_for_all_jobs(tester, name, timeout=480)
    check_nothing_lost(cfg, total=16, epochs=5)
    server_log = (load_config(cfg).study_dir / "logs" / f"server-{server_job.group(1)}.out").read_text()
    assert f"study server of {name} stopped (walltime)" in server_log, server_log
    assert server_log.rstrip().endswith(f"study server of {name} stopped (done)")
    password_nowhere(cfg, tester.home / "jobs", load_config(cfg).study_dir / "logs")
