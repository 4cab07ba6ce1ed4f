"""The CLI's exact output and exit codes (click's CliRunner), and bad input as one ``Error:`` line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from click.testing import CliRunner
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from hpc_tune.cli import cli
from hpc_tune.collector.summary import Summary
from hpc_tune.config import load_config
from hpc_tune.policy.shared_study import open_study
from hpc_tune.storage.records import TrialRecord, write_trial
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage
from tests.conftest import write_config


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(cli, list(args), env=env, catch_exceptions=False, prog_name="hpctune")
    return result.exit_code, result.stdout, result.stderr


# --------------------------------------------------------------------------------------------- init / check


def test_init_then_check_passes(tmp_path: Path) -> None:
    target = tmp_path / "hpctune.yaml"
    code, out, _ = invoke("init", "-o", str(target))
    assert code == 0 and out == f"wrote {target}; next: hpctune check -c {target}\n"
    code, out, _ = invoke("check", "-c", str(target))
    assert code == 0
    assert out == (
        "warning: storage: is the embedded journal, which has no heartbeat for killed tasks: SLURM arrays "
        "of more than one task need PostgreSQL, storage: server or a site's (render and submit refuse them)\n"
        "ok: study digits-mlp, 5 parameters, 24 trials x 15 epochs, sampler tpe, pruner median, "
        "storage embedded (1 warning)\n"
    )
    code, _, err = invoke("init", "-o", str(target))
    assert code == 2 and err == f"Error: file exists; use --force to overwrite ({target})\n"


def test_check_prints_warnings_then_ok(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, space={"lr": {"type": "float", "low": 0.001, "high": 0.1}})
    code, out, _ = invoke("check", "-c", str(cfg))
    assert code == 0
    assert out == (
        "warning: space.lr: spans orders of magnitude; add 'log: true'\n"
        "ok: study t-digits, 1 parameter, 6 trials x 3 epochs, sampler tpe, pruner median, storage embedded "
        "(1 warning)\n"
    )


def test_check_warns_about_engine_options_an_objective_never_reads(tmp_path: Path) -> None:
    (tmp_path / "objective_task.py").write_text(
        "def objective(trial):\n    return trial.suggest_float('x', 0.0, 1.0)\n"
    )
    cfg = write_config(
        tmp_path, task="objective_task.py:objective", space=None, sampler=TPE6, train={"val_fraction": 0.5}
    )
    code, out, _ = invoke("check", "-c", str(cfg))
    assert code == 0
    assert out.splitlines()[0] == (
        "warning: train.val_fraction: is read by hpctune's engine only, and an objective "
        "trains in its own code: it has no effect; remove it, and reduce validation or change precision in "
        "the task's own code"
    )


# write_config's space has 3 parameters every trial samples: 6 startup trials keep the TPE warning away
TPE6 = {"type": "tpe", "seed": 1, "n_startup_trials": 6}


def test_check_warns_when_epochs_changed_since_the_study_was_created(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, sampler=TPE6)
    open_study(load_config(cfg), None, with_heartbeat=False)  # as the first worker of the first submit
    write_config(tmp_path, sampler=TPE6, epochs=5)
    code, out, _ = invoke("check", "-c", str(cfg))
    assert code == 0
    assert out == (
        "warning: epochs: is 5 but study 't-digits' was created with trials of 3 epochs; trials of different "
        "lengths would be ranked together: set it back to 3, or use a new study name\n"
        "ok: study t-digits, 4 parameters, 6 trials x 5 epochs, sampler tpe, pruner median, storage embedded "
        "(1 warning)\n"
    )


def test_check_does_not_need_the_database_but_says_it_does_not_answer(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, sampler=TPE6, storage="postgresql+psycopg2://tuner@127.0.0.1:1/optuna")
    code, out, err = invoke("check", "-c", str(cfg), env={**os.environ, "HPCTUNE_CONNECT_ATTEMPTS": "3"})
    assert (code, err) == (0, "")
    assert out == (
        "warning: storage: postgresql+psycopg2://tuner@127.0.0.1:1/optuna does not answer from here "
        '(connection to server at "127.0.0.1", port 1 failed: Connection refused); the compute nodes may '
        "reach it, but make sure before submitting an array\n"
        "ok: study t-digits, 4 parameters, 6 trials x 3 epochs, sampler tpe, pruner median, storage "
        "postgresql+psycopg2://tuner@127.0.0.1:1/optuna (1 warning)\n"
    )


BAD_INPUTS = [
    (
        "study: s\nspace:\n  lr: {type: float, low: 1\n",
        2,
        "Error: YAML syntax error at line 4, column 1: "
        "expected ',' or '}', but got '<stream end>' (hpctune.yaml)\n",
    ),
    (
        "study: s\nepocs: 3\nspace: {lr: {type: float, low: 0.1, high: 1}}\n",
        2,
        "Error: unknown key 'epocs' (did you mean 'epochs'?) (hpctune.yaml)\n",
    ),
    (
        "study: s\nspace: {lr: {type: float, low: 1, high: 0.1}}\n",
        2,
        "Error: space.lr.low must be < high (hpctune.yaml)\n",
    ),
    (
        "study: 'x; rm -rf /'\nspace: {lr: {type: float, low: 0.1, high: 1}}\n",
        2,
        "Error: study: 'x; rm -rf /' is not a valid study name (letters, digits, '_', '.', '-'; "
        "starts with a letter or digit; at most 128 characters) (hpctune.yaml)\n",
    ),
]


STORAGE_NOT_A_URL = (
    "Error: storage: 'foo' is not a database URL: use null (the embedded store), server (a study server "
    "hpctune runs) or a URL such as postgresql+psycopg2://USER@HOST/DB (hpctune.yaml)\n"
)


COMMANDS = [
    ["check"],
    ["render", "--array", "0-3"],
    ["submit", "--array", "0-3"],
    ["worker"],
    ["run", "--local"],
]


# check, render and submit take no --storage: the workers read the file or HPCTUNE_STORAGE.
@pytest.mark.parametrize(
    ("command", "given"),
    [(c, g) for c in COMMANDS for g in ("file", "env", "flag") if g != "flag" or c[0] in ("worker", "run")],
)
def test_a_storage_that_is_no_url_is_refused_before_anything_runs(
    tmp_path: Path, command: list[str], given: str
) -> None:
    """Refused when the config is loaded, by every command alike: before, check and render passed it, submit
    submitted the array, and every worker then failed."""
    cfg = write_config(tmp_path, storage="foo" if given == "file" else None)
    cfg.rename(tmp_path / "hpctune.yaml")
    cfg = tmp_path / "hpctune.yaml"
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "sbatch").write_text(f"#!/bin/sh\necho called >> {tmp_path / 'sbatch-called'}\necho 1\n")
    (fake_bin / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    args = [*command, "-c", str(cfg)]
    if given == "env":
        env["HPCTUNE_STORAGE"] = "foo"
    if given == "flag":
        args += ["--storage", "foo"]
    proc = subprocess.run(
        [sys.executable, "-m", "hpc_tune", *args], capture_output=True, text=True, env=env, timeout=120
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", STORAGE_NOT_A_URL)
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "runs").exists()  # nothing written
    assert not (tmp_path / "sbatch-called").exists()  # nothing submitted


def test_run_local_says_a_workers_error_once(tmp_path: Path) -> None:
    """A failure only the workers see (here a task module the parent never imports) is one line, once."""
    cfg = write_config(tmp_path, task="no_such_task_module_xyz")
    proc = subprocess.run(
        [sys.executable, "-m", "hpc_tune", "run", "--local", "-w", "2", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if "Error" in line]
    assert errors == [
        "Error: worker failed: task module 'no_such_task_module_xyz' not found (no_such_task_module_xyz) "
        f"({tmp_path / 'runs' / 't-digits' / 'logs'})"
    ]
    assert proc.stderr.endswith("\n") and proc.stderr.count("not found") == 1


@pytest.mark.parametrize(("text", "code", "error"), BAD_INPUTS)
def test_bad_config_is_one_error_line(tmp_path: Path, text: str, code: int, error: str) -> None:
    path = tmp_path / "hpctune.yaml"
    path.write_text(text)
    for command in ("check", "worker", "render"):
        extra = ["--array", "0-3"] if command == "render" else []
        got, out, err = invoke(command, "-c", str(path), *extra)
        assert (got, out, err) == (code, "", error), command
    assert not (tmp_path / "jobs").exists() and not (tmp_path / "runs").exists()  # nothing written


def test_missing_config_file(tmp_path: Path) -> None:
    code, _, err = invoke("check", "-c", str(tmp_path / "nope.yaml"))
    assert code == 2 and err == f"Error: config file not found ({tmp_path / 'nope.yaml'})\n"


@pytest.mark.parametrize("spec", ["3-1", "-1", "a-b", "0-3%0", "0-15:0", ""])
def test_bad_array_spec(tmp_path: Path, spec: str) -> None:
    cfg = write_config(tmp_path)
    code, out, err = invoke("render", "-c", str(cfg), "--array", spec)
    assert code == 2 and out == ""
    assert err.startswith("Error: Invalid value for '--array': ") and err.endswith(
        "(hpctune render --help)\n"
    )
    assert err.count("\n") == 1
    assert not (tmp_path / "jobs").exists()


def test_unknown_option_is_one_line() -> None:
    code, out, err = invoke("check", "--bogus")
    assert (code, out, err) == (2, "", "Error: No such option '--bogus'. (hpctune check --help)\n")


def test_unreachable_database_exits_75_with_password_redacted(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    url = "postgresql+psycopg2://alice:Sup3rSecret@127.0.0.1:1/optuna"
    env = {**os.environ, "HPCTUNE_CONNECT_ATTEMPTS": "1", "HPCTUNE_STORAGE": url}
    # A real process: this is what an array task sees, and no traceback may reach its log.
    proc = subprocess.run(
        [sys.executable, "-m", "hpc_tune", "worker", "-c", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 75
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach the study database: ")
    assert lines[0].endswith("(postgresql+psycopg2://alice:***@127.0.0.1:1/optuna)")
    assert "Sup3rSecret" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.postgres
def test_wrong_password_is_refused_not_tempfail(tmp_path: Path, pg_secret_db: dict[str, str]) -> None:
    cfg = write_config(tmp_path, storage=pg_secret_db["url"].replace("tuner@", "tuner:wrong@"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["HPCTUNE_CONNECT_ATTEMPTS"] = "1"
    code, out, err = invoke("worker", "-c", str(cfg), env=env)
    assert code == 3 and out == ""
    assert err.startswith("Error: the database refused the login: ") and "wrong" not in err
    assert "tuner:***@127.0.0.1" in err


@pytest.mark.postgres
def test_password_in_url_never_rendered(tmp_path: Path, pg_secret_db: dict[str, str]) -> None:
    cfg = write_config(tmp_path, storage=pg_secret_db["url_with_password"])
    code, out, err = invoke("render", "-c", str(cfg), "--array", "0-1")
    assert code == 2 and out == ""
    assert pg_secret_db["password"] not in err and "PGPASSFILE" in err
    assert not (tmp_path / "jobs").exists()
    code, out, err = invoke("check", "-c", str(cfg))
    assert pg_secret_db["password"] not in out + err


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("missing/train.py:objective", "Error: task file not found (missing/train.py)"),
        ("no_such_module_xyz", "Error: task module 'no_such_module_xyz' not found (no_such_module_xyz)"),
        ("broken.py:objective", "Error: task file failed to import: ModuleNotFoundError: No module named "),
    ],
)
def test_check_imports_the_task(tmp_path: Path, task: str, message: str) -> None:
    (tmp_path / "broken.py").write_text(
        "import not_installed_anywhere\n\ndef objective(trial):\n    return 0.0\n"
    )
    cfg = write_config(tmp_path, task=task)
    code, out, err = invoke("check", "-c", str(cfg))
    assert code == 4 and out == "" and err.startswith(message) and len(err.splitlines()) == 1, err


# --------------------------------------------------------------------------------------------- collect


def make_fixture_study(tmp_path: Path) -> Path:
    """A study with known trials on the embedded store, and their JSON records (one truncated)."""
    cfg = write_config(
        tmp_path,
        study="fixture",
        trials=7,
        space={
            "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
            "opt": {"type": "categorical", "choices": ["adamw", "sgd"]},
        },
    )
    study_dir = tmp_path / "runs" / "fixture"
    storage = open_store(resolve_storage(None, study_dir)).storage
    study = optuna.create_study(study_name="fixture", storage=storage, direction="maximize")
    study.set_user_attr("metric", "val_acc")
    study.set_user_attr("trials", 7)
    dists = {"lr": FloatDistribution(1e-4, 1e-1, log=True), "opt": CategoricalDistribution(["adamw", "sgd"])}
    rows = [
        (0.01, "adamw", 0.91, TrialState.COMPLETE),
        (0.002, "sgd", 0.95, TrialState.COMPLETE),
        (0.05, "adamw", 0.5, TrialState.PRUNED),
        (0.0003, "sgd", 0.97, TrialState.COMPLETE),
        (0.09, "sgd", None, TrialState.FAIL),
        (0.001, "adamw", 0.96, TrialState.COMPLETE),
        (0.02, "sgd", 0.93, TrialState.COMPLETE),
    ]
    for number, (lr, opt, value, state) in enumerate(rows):
        curve = {1: 0.5, 2: value or 0.4}
        attrs = {"reason": "nonfinite_loss"} if state == TrialState.FAIL else {}
        study.add_trial(
            create_trial(
                params={"lr": lr, "opt": opt},
                distributions=dists,
                state=state,
                value=value if state == TrialState.COMPLETE else None,
                intermediate_values=curve,
                user_attrs={**attrs, "baseline": number == 0},
            )
        )
        record = TrialRecord(
            study="fixture",
            trial=number,
            params={"lr": lr, "opt": opt},
            state=state.name,
            value=value if state == TrialState.COMPLETE else None,
            fidelity={"data_fraction": 1.0, "epochs": 3},  # scheduled for 3; the pruned one stopped at 2
            # On one GPU, 10 minutes more per trial: trial n held it (n + 1) / 6 hours.
            duration_s=600.0 * (number + 1),
            devices={"kind": "gpu", "count": 1, "ids": ["0"]},
            device_seconds=600.0 * (number + 1),
        )
        for epoch, v in curve.items():
            record.add_epoch({"epoch": epoch, "val_acc": v}, "val_acc", "maximize")
        write_trial(study_dir, record)
    (study_dir / "trials" / "trial-6.json").write_text('{"schema_version": 1, "study": "fixt')  # truncated
    return cfg


def test_collect_exact_output_and_files(tmp_path: Path) -> None:
    cfg = make_fixture_study(tmp_path)
    study_dir = tmp_path / "runs" / "fixture"
    code, out, err = invoke("collect", "fixture", "-c", str(cfg))
    assert (code, err) == (0, "")
    assert out == (
        "study fixture: 7/7 finished (COMPLETE 5, PRUNED 1, FAIL 1, RUNNING 0, WAITING 0; 0 retried)\n"
        "pruning: 1 pruned, 14 of 15 epochs run (7% saved)\n"
        # Trial 6's record is quarantined: its hours are Optuna's (none here) on one device.
        "GPU-hours: 3.5 (COMPLETE 2.17, FAIL 0.833, PRUNED 0.5); 0.833 lost to failures; pruning saved 0.25; "
        "1.67 until within 1 % of the best (1 trial(s) without recorded devices counted as one)\n"
        "quarantined 1 file(s): trial-6.json\n"
        "best: trial 3, val_acc 0.97, lr=0.0003, opt=sgd\n"
        "baseline: trial 0, val_acc 0.91\n"
        "top 5 by val_acc (maximize):\n"
        "  rank  trial     val_acc  epochs  params\n"
        "     1      3        0.97       2  lr=0.0003, opt=sgd\n"
        "     2      5        0.96       2  lr=0.001, opt=adamw\n"
        "     3      1        0.95       2  lr=0.002, opt=sgd\n"
        "     4      6        0.93       2  lr=0.02, opt=sgd\n"
        "     5      0        0.91       2  lr=0.01, opt=adamw\n"
        "importance (ped_anova, 5 trials): lr 1.00, opt 0.00\n"
        "warnings (2):\n"
        "  ! few_complete: Only 5 complete trials for 2 parameters (at least 10 are needed): importance and "
        "rankings are anecdotes.\n"
        "    → raise trials: and submit again (the study goes on where it stopped), or search fewer "
        "parameters (phases)\n"
        "  ! failures: 1 trial(s) failed (nonfinite_loss 1); 1 diverged early (non-finite values within 2 "
        "epochs).\n"
        "    → lower the upper bound of lr (now 0.1) below 0.09, the smallest value that diverged\n"
        "recommended for the next study:\n"
        "  note: ranges not narrowed and nothing frozen: 5 complete trial(s) are too few to trust "
        "importance; run more trials first\n"
        "next:\n"
        "  hpctune rerun-top fixture --k 5 --seeds 3  # a single run per configuration: confirm the top "
        "trials with more seeds before picking one\n"
        "  hpctune next fixture -o next.yaml  # a next study from this one's space (no change recommended)\n"
        f"summary: {study_dir / 'summary.json'}\n"
        f"trials:  {study_dir / 'trials.csv'}\n"
        f"digest:  {study_dir / 'summary.md'}\n"
        f"report:  {study_dir / 'report.html'}\n"
    )
    summary = json.loads((study_dir / "summary.json").read_text())
    assert summary["quarantined"] == [{"file": "trial-6.json", "why": summary["quarantined"][0]["why"]}]
    assert summary["quarantined"][0]["why"].startswith("not valid JSON")
    assert summary["reasons"] == {"nonfinite_loss": 1, "pruned": 1}
    assert summary["pruning"] == {
        "pruned_fraction": round(1 / 7, 4),
        "epochs_spent": 14,
        "epochs_if_unpruned": 15,
        "saved_fraction": round(1 - 14 / 15, 4),
    }
    assert [t["trial"] for t in summary["top_k"]] == [3, 5, 1, 6, 0]
    with open(study_dir / "trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["trial"] for r in rows] == [str(i) for i in range(7)]
    assert (
        rows[4]["state"] == "FAIL" and rows[4]["reason"] == "nonfinite_loss" and rows[4]["param_opt"] == "sgd"
    )


def test_collect_by_study_name_with_results_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_fixture_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hpctune.yaml").unlink()
    code, out, _ = invoke("collect", "fixture", "--json")
    assert code == 0 and json.loads(out)["best"]["trial"] == 3
    # --json prints summary.json as written, and the file reads back through its model unchanged
    assert out == (tmp_path / "runs" / "fixture" / "summary.json").read_text()
    assert Summary.model_validate_json(out).model_dump(mode="json") == json.loads(out)
    code, _, err = invoke("collect", "nosuch")
    assert (
        code == 3
        and err
        == f"Error: no study 'nosuch' (no embedded store) ({tmp_path / 'runs' / 'nosuch' / 'journal.log'})\n"
    )


def test_local_run_end_to_end(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, trials=4, epochs=2)
    proc = subprocess.run(
        [sys.executable, "-m", "hpc_tune", "run", "--local", "-w", "2", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("study t-digits: 4/4 finished")
    study_dir = tmp_path / "runs" / "t-digits"
    assert lines[-4:] == [
        f"summary: {study_dir / 'summary.json'}",
        f"trials:  {study_dir / 'trials.csv'}",
        f"digest:  {study_dir / 'summary.md'}",
        f"report:  {study_dir / 'report.html'}",
    ]
    assert (study_dir / "report.html").is_file() and (study_dir / "plots" / "history.png").is_file()
    data = yaml.safe_load((tmp_path / "runs" / "t-digits" / "summary.json").read_text())
    assert data["budget"] == {"trials": 4, "finished": 4, "retried": 0}


@pytest.mark.postgres
def test_collect_fails_trials_of_silent_dead_workers(tmp_path: Path, pg_url: str) -> None:
    import time

    cfg = write_config(tmp_path, storage=pg_url, worker={"heartbeat_interval": 1, "grace_period": 2})
    storage = open_store(resolve_storage(pg_url, tmp_path), heartbeat_interval=1, grace_period=2).storage
    study = optuna.create_study(study_name="t-digits", storage=storage, direction="maximize")
    trial = study.ask()
    trial.suggest_float("lr", 1e-3, 0.3, log=True)
    storage.record_heartbeat(trial._trial_id)  # a worker that beat once, then vanished
    time.sleep(2.5)
    code, out, err = invoke("collect", "-c", str(cfg))
    assert (code, err) == (0, ""), err
    assert out.startswith(
        "study t-digits: 0/6 finished (COMPLETE 0, PRUNED 0, FAIL 1, RUNNING 0, WAITING 1; 1 retried)"
    )
    summary = json.loads((tmp_path / "runs" / "t-digits" / "summary.json").read_text())
    assert summary["reasons"] == {"heartbeat_stale": 1}


@pytest.mark.parametrize("by", ["config", "name"])
def test_dashboard_serves_the_study(tmp_path: Path, by: str) -> None:
    """From the config, or (as collect and status) from the study's name and where its store is alone."""
    import socket
    import time
    import urllib.error
    import urllib.parse
    import urllib.request

    cfg = make_fixture_study(tmp_path)
    where = ["-c", str(cfg)] if by == "config" else ["fixture", "--results", str(tmp_path / "runs")]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hpc_tune", "dashboard", *where, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        opener = urllib.request.build_opener(
            type(
                "NoRedirect",
                (urllib.request.HTTPRedirectHandler,),
                {"redirect_request": lambda self, *a, **k: None},
            )
        )
        deadline, status, location = time.monotonic() + 60, None, None
        while time.monotonic() < deadline and status is None:
            try:
                opener.open(f"http://127.0.0.1:{port}/", timeout=2)
            except urllib.error.HTTPError as exc:  # the unfollowed redirect
                status, location = exc.code, exc.headers.get("Location")
            except OSError:
                time.sleep(0.3)
        assert status == 302 and location is not None
        assert urllib.parse.urlsplit(location).path == "/dashboard"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
            studies = json.loads(response.read())
        assert [s["study_name"] for s in studies["study_summaries"]] == ["fixture"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("command", ["worker", "run", "collect"])
def test_password_on_the_command_line_is_refused(tmp_path: Path, command: str) -> None:
    cfg = write_config(tmp_path)
    url = "postgresql+psycopg2://alice:Sup3rSecret@db.example.org/optuna"
    extra = ["--local"] if command == "run" else []
    code, out, err = invoke(command, "-c", str(cfg), "--storage", url, *extra)
    assert (code, out) == (2, "")
    assert err == (
        "Error: --storage holds a password, which every user can read in `ps`; put it in PGPASSFILE (or "
        "HPCTUNE_STORAGE) (postgresql+psycopg2://alice:***@db.example.org/optuna)\n"
    )
    assert not (tmp_path / "runs").exists()
