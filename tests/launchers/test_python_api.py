"""``hpc_tune.launch``: the worker array through submitit, on the local executor (processes here, the journal
store), in-process (debug), and on the real one-node SLURM with PostgreSQL; the walltime hand-on requeued by
submitit; bad inputs as typed errors; no password in what submitit writes."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

import hpc_tune
from hpc_tune.attrs import worker_of
from hpc_tune.errors import ConfigError, SlurmError
from hpc_tune.launchers.python_api import Launched, TaskReport, slurm_minutes
from hpc_tune.policy.budget import budget_state
from tests.conftest import study_of, write_config
from tests.slurm_fixtures import SlurmCluster, wait_for_jobs, wait_until
from tests.worker.test_fail_fast import broken_task

# Small tasks for the one-node test cluster (as in test_slurm_e2e.py); submitit runs this interpreter, so no
# setup line activates a venv.
TEST_SLURM = {"cpus_per_task": 1, "mem": "300M", "time": "10", "signal_grace_s": 30}


@pytest.fixture(autouse=True)
def _job_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The jobs inherit this process's environment (submitit's local processes, and sbatch's default
    --export=ALL): one thread per worker, no storage or fault from the caller's shell."""
    for name in ("HPCTUNE_STORAGE", "HPCTUNE_FAULT", "SUBMITIT_PREEMPT_SIGNAL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONUNBUFFERED", "1")


def assert_budget(study: optuna.Study, total: int) -> None:
    trials = study.get_trials(deepcopy=False)
    state = budget_state(trials, total)
    assert state.finished == total and state.running == 0 and state.waiting == 0, [
        (t.number, t.state.name) for t in trials
    ]


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# --- bad inputs: typed errors before anything is submitted -------------------------------------------------


def test_unknown_executor_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown executor 'foo': use one of slurm, local, debug"):
        hpc_tune.launch(write_config(tmp_path), "0-1", executor="foo")


def test_invalid_array_spec_is_a_slurm_error(tmp_path: Path) -> None:
    with pytest.raises(SlurmError, match="invalid --array spec '0-x'"):
        hpc_tune.launch(write_config(tmp_path), "0-x", executor="local")


def test_embedded_store_with_several_slurm_tasks_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="an array of 2 tasks needs a PostgreSQL study"):
        hpc_tune.launch(write_config(tmp_path), "0-1", executor="slurm")
    assert not (tmp_path / "runs").exists()  # refused before any folder or job was made


def test_password_in_the_url_is_refused_for_slurm(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, storage="postgresql+psycopg2://tuner:hunter2@db.example.org/optuna")
    with pytest.raises(ConfigError, match="password"):
        hpc_tune.launch(cfg, "0-1", executor="slurm")


def test_slurm_executor_without_slurm_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = write_config(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun
    with pytest.raises(SlurmError, match=r"SLURM is not available here \(no srun on PATH\)"):
        hpc_tune.launch(cfg, "0", executor="slurm")


def test_a_config_of_another_type_is_refused() -> None:
    with pytest.raises(ConfigError, match="config must be a path, a mapping, a Config or a LoadedConfig"):
        hpc_tune.launch(42, "0", executor="debug")  # type: ignore[arg-type]


def test_other_preempt_signal_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import submitit

    monkeypatch.setattr(submitit.JobEnvironment, "USR_SIG", "USR1")
    with pytest.raises(ConfigError, match="checkpoint on USR2"):
        hpc_tune.launch(write_config(tmp_path), "0", executor="local")


@pytest.mark.parametrize(
    ("time", "minutes"),
    [("10", 10), ("01:00:00", 60), ("1:30", 2), ("2-0", 2880), ("1-01:30", 1530), ("0-00:00:30", 1)],
)
def test_slurm_time_in_minutes(time: str, minutes: int) -> None:
    assert slurm_minutes(time) == minutes


# --- debug and local executors ------------------------------------------------------------------------------


def test_debug_runs_the_workers_in_this_process_from_a_mapping(tmp_path: Path) -> None:
    raw = {
        "study": "api-debug",
        "task": "hpc_tune.tasks.digits",
        "trials": 3,
        "epochs": 2,
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True}},
        "train": {"compile": "off"},
        "results": str(tmp_path / "runs"),
    }
    launched = hpc_tune.launch(raw, "0-1", executor="debug")
    assert isinstance(launched, Launched) and launched.indices == (0, 1) and len(launched.jobs) == 2
    collected = launched.result()
    assert collected.summary.budget.finished == 3 and collected.summary.counts.RUNNING == 0
    assert collected.summary_path == tmp_path / "runs" / "api-debug" / "summary.json"
    reports = launched.reports()
    assert sum(r.trials_run for r in reports) == 3 and {r.stopped_by for r in reports} == {"budget"}


def test_a_hydra_dictconfig_is_a_mapping(tmp_path: Path) -> None:
    omegaconf = pytest.importorskip("omegaconf")
    raw = yaml.safe_load(write_config(tmp_path, study="api-hydra").read_text())
    launched = hpc_tune.launch(omegaconf.OmegaConf.create(raw), "0-2", executor="debug", collect=False)
    assert launched.study == "api-hydra" and launched.indices == (0, 1, 2)  # debug jobs run only when asked
    with pytest.raises(hpc_tune.LaunchError, match="collect=False"):
        launched.result()


@pytest.mark.slow
def test_local_two_workers_on_the_journal_store(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, study="api-local", trials=6, epochs=2)
    launched = hpc_tune.launch(cfg, "0-1", executor="local")
    assert launched.executor == "local" and [j.job_id for j in launched.jobs] != []
    collected = launched.result()
    assert collected.summary.budget.model_dump() == {"trials": 6, "finished": 6, "retried": 0}
    assert collected.summary_path.is_file() and collected.csv_path.is_file()
    reports = launched.reports()
    assert [r.index for r in reports] == [0, 1]
    assert all(isinstance(r, TaskReport) and r.stopped_by == "budget" for r in reports)
    assert sum(r.trials_run for r in reports) == 6
    study = study_of(cfg)
    assert_budget(study, 6)
    # Each job was its own process (not the caller), a worker of the one shared study.
    pids = {worker_of(t)["pid"] for t in study.get_trials(deepcopy=False)}
    assert os.getpid() not in pids
    assert (launched.folder / f"{launched.jobs[0].job_id}_submitted.pkl").is_file()


@pytest.mark.slow
def test_local_percent_limit_starts_only_that_many_workers(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, study="api-limit", trials=2, epochs=1)
    launched = hpc_tune.launch(cfg, "0-3%1", executor="local")
    assert launched.indices == (0,) and len(launched.jobs) == 1
    assert launched.result().summary.budget.finished == 2


@pytest.mark.slow
def test_a_failing_local_worker_is_named_with_its_error_line(tmp_path: Path) -> None:
    cfg = broken_task(tmp_path)  # every trial raises: the worker stops fast with a TaskError
    launched = hpc_tune.launch(cfg, "0", executor="local")
    with pytest.raises(hpc_tune.LaunchError) as info:
        launched.result()
    assert "1 of 1 worker job(s) failed; worker 0: " in info.value.what
    assert "the first 3 trials all failed (exception:ValueError)" in info.value.what
    assert "summary written anyway" in info.value.what
    assert (tmp_path / "runs" / "t-digits" / "summary.json").is_file()


def _first_trial_running_two_epochs(cfg: Path) -> optuna.trial.FrozenTrial:
    found: list[optuna.trial.FrozenTrial] = []

    def two_epochs() -> bool:
        try:
            trials = study_of(cfg).get_trials(deepcopy=False)
        except (KeyError, optuna.exceptions.StorageInternalError):
            return False
        if trials and trials[0].state == TrialState.RUNNING and len(trials[0].intermediate_values) >= 2:
            found.append(trials[0])
            return True
        return False

    wait_until(two_epochs, timeout=120)
    return found[-1]


@pytest.mark.slow
def test_local_walltime_signal_hands_the_trial_on_and_submitit_restarts_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path, study="api-wall", trials=2, epochs=6, pruner={"type": "none"})
    monkeypatch.setenv(
        "HPCTUNE_FAULT", "sleep@1:0.7#trial=0"
    )  # test-only: slow epochs, the signal lands mid-trial
    launched = hpc_tune.launch(cfg, "0", executor="local")
    running = _first_trial_running_two_epochs(cfg)
    first_pid = worker_of(running)["pid"]
    os.kill(first_pid, signal.SIGUSR2)  # what submitit's local controller sends near its time limit
    collected = launched.result()
    trials = study_of(cfg).get_trials(deepcopy=False)
    first, continued = trials[0], trials[1]
    assert first.state == TrialState.FAIL and first.user_attrs["reason"] == "walltime"
    assert continued.system_attrs["resumed_from"] == 0 and continued.params == first.params
    assert continued.state == TrialState.COMPLETE and sorted(continued.intermediate_values) == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    # Resumed by the restarted task (submitit's local requeue is an exit 144 and a new process), not this one.
    assert worker_of(continued)["pid"] != first_pid
    assert collected.summary.budget.finished == 2
    log = launched.jobs[0].stdout() or ""  # submitit's own log lines
    assert log.count("Requeued job") == 1, log
    assert launched.reports()[0].stopped_by == "budget"  # the result is the rerun's


@pytest.mark.slow
def test_local_killed_worker_trial_is_failed_and_re_enqueued_at_collect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path, study="api-kill", trials=2, epochs=6, pruner={"type": "none"})
    monkeypatch.setenv("HPCTUNE_FAULT", "sleep@1:0.7#trial=0")
    launched = hpc_tune.launch(cfg, "0", executor="local")
    running = _first_trial_running_two_epochs(cfg)
    os.kill(
        worker_of(running)["pid"], signal.SIGKILL
    )  # no word from the worker: the journal has no heartbeat
    with pytest.raises(
        hpc_tune.LaunchError, match="1 of 1 worker job.s. failed; worker 0: ended without a result"
    ):
        launched.result()
    trials = study_of(cfg).get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL and trials[0].user_attrs["reason"] == "worker_killed"
    assert [t.state for t in trials[1:]] == [TrialState.WAITING]  # same parameters, for the next launch
    assert trials[1].params == trials[0].params


@pytest.mark.postgres
@pytest.mark.slow
def test_local_password_travels_in_the_environment_never_in_submitit_files(
    tmp_path: Path, pg_secret_db: dict[str, str]
) -> None:
    cfg = write_config(tmp_path, study="api-secret", trials=4, epochs=1)
    launched = hpc_tune.launch(cfg, "0-1", executor="local", storage=pg_secret_db["url_with_password"])
    collected = launched.result()
    assert collected.summary.budget.finished == 4
    assert_budget(study_of(cfg, pg_secret_db["url_with_password"]), 4)
    written = files_under(launched.folder)
    assert any(p.name.endswith("_submitted.pkl") for p in written)
    for path in written:
        assert pg_secret_db["password"].encode() not in path.read_bytes(), path
    assert "HPCTUNE_STORAGE" not in os.environ  # set for the submission only


# --- the real SLURM ---------------------------------------------------------------------------------------


@pytest.fixture
def slurm_env(pg_secret_db: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """sbatch exports this process's environment: the jobs log in with PGPASSFILE, the URL has no password."""
    for name in [k for k in os.environ if k.startswith("PG")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PGPASSFILE", pg_secret_db["passfile"])
    return pg_secret_db


def _all_job_ids(launched: Launched) -> list[str]:
    return [j.job_id for j in launched.jobs] + ([launched.collector.job_id] if launched.collector else [])


@pytest.mark.slurm
@pytest.mark.postgres
@pytest.mark.slow
def test_slurm_two_tasks_on_postgres_then_the_collector(
    tmp_path: Path, slurm_cluster: SlurmCluster, slurm_env: dict[str, str]
) -> None:
    study = "api-" + tmp_path.name[-8:].replace("_", "-")
    cfg = write_config(tmp_path, study=study, storage=slurm_env["url"], trials=8, epochs=2, slurm=TEST_SLURM)
    launched = hpc_tune.launch(cfg, "0-1", executor="slurm")
    assert launched.collector is not None and len(launched.jobs) == 2
    array_id = launched.jobs[0].job_id.split("_")[0]
    assert [j.job_id for j in launched.jobs] == [f"{array_id}_0", f"{array_id}_1"]
    script = (launched.folder / f"{array_id}_submission.sh").read_text()
    for line in (
        f"#SBATCH --job-name=hpctune-{study}",
        "#SBATCH --requeue",
        "#SBATCH --signal=USR2@30",
        "#SBATCH --array=0-1%2",
        "#SBATCH --time=10",
        f"#SBATCH --chdir={tmp_path}",
    ):
        assert line in script, script
    wait_for_jobs(_all_job_ids(launched), timeout=300)
    collected = launched.result()
    assert collected.summary.budget.model_dump() == {"trials": 8, "finished": 8, "retried": 0}
    assert collected.summary_path.is_file()
    assert_budget(study_of(cfg), 8)
    reports = launched.reports()
    assert [r.index for r in reports] == [0, 1] and sum(r.trials_run for r in reports) == 8
    collect_log = launched.collector.stdout() or ""
    assert f"study {study}: 8/8 finished" in collect_log
    for path in files_under(launched.folder):  # pickles, scripts and logs
        assert slurm_env["password"].encode() not in path.read_bytes(), path


@pytest.mark.slurm
@pytest.mark.postgres
@pytest.mark.slow
def test_slurm_walltime_signal_is_requeued_by_submitit_once_and_resumed(
    tmp_path: Path, slurm_cluster: SlurmCluster, slurm_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    study = "apiwall-" + tmp_path.name[-8:].replace("_", "-")
    cfg = write_config(
        tmp_path,
        study=study,
        storage=slurm_env["url"],
        trials=2,
        epochs=6,
        pruner={"type": "none"},
        slurm=TEST_SLURM,
    )
    monkeypatch.setenv(
        "HPCTUNE_FAULT", "sleep@1:0.7#trial=0"
    )  # test-only: slow epochs, the signal lands mid-trial
    launched = hpc_tune.launch(cfg, "0", executor="slurm")
    job_id = launched.jobs[0].job_id
    _first_trial_running_two_epochs(cfg)
    # What SLURM does at --signal=USR2@N (submitit's form, without B:): signal the job's steps, where the
    # worker runs under srun.
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    wait_for_jobs(_all_job_ids(launched), timeout=300)
    collected = launched.result()
    trials = study_of(cfg).get_trials(deepcopy=False)
    first, continued = trials[0], trials[1]
    assert first.state == TrialState.FAIL and first.user_attrs["reason"] == "walltime"
    assert continued.system_attrs["resumed_from"] == 0 and continued.params == first.params
    assert continued.state == TrialState.COMPLETE and sorted(continued.intermediate_values) == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    assert worker_of(continued)["restart_count"] == 1  # run by the requeued job
    assert_budget(study_of(cfg), 2)
    assert collected.summary.budget.finished == 2
    log = launched.jobs[0].stdout() or ""  # submitit's own log lines
    assert log.count("Requeued job") == 1, log  # submitit requeued, once; the worker did not
    assert log.count("Starting with JobEnvironment") == 2  # the first run and the requeued one
    assert launched.reports()[0].stopped_by == "budget"  # the handle's result is the rerun's
