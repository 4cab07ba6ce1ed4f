"""Command tasks: an existing script tuned as it is. Real processes throughout: the scripts below are run by
real workers (in-process or as `hpctune worker` processes), with real signals and process groups."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpc_tune import attrs
from hpc_tune.config import load_config
from hpc_tune.errors import TaskError
from hpc_tune.storage.records import read_trials
from hpc_tune.tasks.base import command_environment
from hpc_tune.worker.loop import run_worker
from tests.conftest import wait_until, worker_env, write_config
from tests.worker.test_loop import load, start_worker

HPCTUNE = str(Path(sys.executable).parent / "hpctune")
PY = sys.executable
SPACE = {
    "lr": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
    "opt": {"type": "categorical", "choices": ["adam w", "sgd;rm"]},  # a space and a ; stay one argument
}

# An argparse script as people have them: its own arguments, one JSON line per epoch. It also writes what it
# received to its trial folder, for the test to compare.
ARGPARSE_SCRIPT = """
import argparse, json, os, sys
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, required=True)
p.add_argument("--opt", required=True)
p.add_argument("--epochs", type=int, required=True)
p.add_argument("--seed", type=int, required=True)
p.add_argument("--out", required=True)
a = p.parse_args()
seen = {"lr": a.lr, "opt": a.opt, "epochs": a.epochs, "seed": a.seed,
        "env": {k: v for k, v in os.environ.items() if k.startswith(("HPCTUNE", "CUDA", "SLURM"))}}
open(os.path.join(a.out, "seen.json"), "w").write(json.dumps(seen))
print("starting", flush=True)
print("warning: noise", file=sys.stderr)
for epoch in range(1, a.epochs + 1):
    print(json.dumps({"epoch": epoch, "train_loss": 1.0 / epoch}))
    # peaks at epoch 2, so that best and last differ
    print(json.dumps({"epoch": epoch, "val_acc": a.lr * (10 - abs(epoch - 2))}))
"""


def script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def command_config(tmp_path: Path, task: dict, **overrides: object) -> Path:
    return write_config(
        tmp_path,
        **{
            "study": "t-cmd",
            "task": task,
            "space": SPACE,
            "trials": 3,
            "epochs": 4,
            "pruner": {"type": "none"},
            **overrides,
        },
    )


def records(cfg: Path) -> dict[int, dict]:
    return read_trials(load_config(cfg).study_dir).records


def test_argparse_script_list_form_gets_its_values_and_reports_every_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train = script(tmp_path, "train.py", ARGPARSE_SCRIPT)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setenv("SLURM_JOB_PARTITION", "gpu")
    command = [PY, str(train), "--lr", "{lr}", "--opt", "{opt}", "--epochs", "{epochs}", "--seed", "{seed}"]
    cfg = command_config(tmp_path, {"command": [*command, "--out", "{trial_dir}"]}, train={"seed": 7})
    report = run_worker(load_config(cfg))
    assert report.by_state == {"COMPLETE": 3}
    study, study_dir = load(cfg)
    for trial in study.trials:
        record = records(cfg)[trial.number]
        seen = json.loads((study_dir / "trials" / f"trial-{trial.number}" / "seen.json").read_text())
        assert seen["lr"] == pytest.approx(trial.params["lr"]) and seen["opt"] == trial.params["opt"]
        assert seen["epochs"] == 4 and seen["seed"] == 7
        env = seen["env"]
        assert env["CUDA_VISIBLE_DEVICES"] == "3" and env["SLURM_JOB_PARTITION"] == "gpu"
        assert float(env["HPCTUNE_PARAM_LR"]) == pytest.approx(trial.params["lr"])
        assert json.loads(env["HPCTUNE_PARAMS"])["opt"] == trial.params["opt"]
        assert env["HPCTUNE_EPOCHS"] == "4" and env["HPCTUNE_TRIAL"] == str(trial.number)
        assert env["HPCTUNE_RESUME"] == "0" and env["HPCTUNE_CHECKPOINT"].endswith(f"trial-{trial.number}.pt")
        # each epoch once, train and validation lines merged, every one told to the study
        assert [e["epoch"] for e in record["epochs"]] == [1, 2, 3, 4]
        assert all("train_loss" in e for e in record["epochs"])
        assert trial.intermediate_values == {
            e["epoch"]: pytest.approx(e["val_acc"]) for e in record["epochs"]
        }
        assert trial.value == pytest.approx(10 * trial.params["lr"])  # best = epoch 2
        assert record["command"].startswith(PY)
        logs = study_dir / "trials" / f"trial-{trial.number}"
        assert "starting" in (logs / "stdout.log").read_text()
        assert "warning: noise" in (logs / "stderr.log").read_text()


def test_shell_form_with_hydra_overrides_and_value_last(tmp_path: Path) -> None:
    hydra = script(
        tmp_path,
        "hydra_app.py",
        "import json, sys\n"
        "cfg = dict(arg.split('=', 1) for arg in sys.argv[1:])\n"
        "lr, epochs = float(cfg['optimizer.lr']), int(cfg['trainer.max_epochs'])\n"
        "assert cfg['model.opt'] in ('adam w', 'sgd;rm'), cfg\n"
        "for epoch in range(1, epochs + 1):\n"
        "    print(json.dumps({'epoch': epoch, 'val_acc': lr * (10 - abs(epoch - 2))}))\n",
    )
    cfg = command_config(
        tmp_path,
        {
            "command": f"cd {tmp_path} && python {hydra.name} optimizer.lr={{lr}} model.opt={{opt}} "
            "trainer.max_epochs={epochs}",
            "value": "last",
        },
    )
    assert run_worker(load_config(cfg)).by_state == {"COMPLETE": 3}
    for trial in load(cfg)[0].trials:
        assert trial.value == pytest.approx(trial.params["lr"] * 8)  # the last epoch's, not the best


def test_plain_text_script_through_metrics_regex(tmp_path: Path) -> None:
    legacy = script(
        tmp_path,
        "legacy.py",
        "import sys\nlr = float(sys.argv[1])\n"
        "for e in range(1, 4):\n"
        "    print(f'Epoch {e}/3 - loss {1/e:.3f} - val_acc: {lr * e:.5f}')\n",
    )
    regex = r"Epoch (?P<epoch>\d+)/\d+ - loss (?P<train_loss>[\d.]+) - val_acc: (?P<val_acc>[\d.]+)"
    cfg = command_config(tmp_path, {"command": [PY, str(legacy), "{lr}"], "metrics_regex": regex}, epochs=3)
    assert run_worker(load_config(cfg)).by_state == {"COMPLETE": 3}
    for trial in load(cfg)[0].trials:
        assert trial.value == pytest.approx(trial.params["lr"] * 3, abs=1e-5)
        assert sorted(trial.intermediate_values) == [1, 2, 3]


def test_report_helper_works_without_optuna_or_torch_in_the_script(tmp_path: Path) -> None:
    one_line = script(
        tmp_path,
        "one_line.py",
        "import sys\n"
        "for missing in ('optuna', 'torch', 'sqlalchemy', 'numpy'):\n"
        "    sys.modules[missing] = None  # importing them now raises ImportError\n"
        "import hpc_tune\n"
        "lr = float(sys.argv[1])\n"
        "for e in range(1, 4):\n"
        "    hpc_tune.report(e, val_acc=lr * e, train_loss=1.0 / e)\n",
    )
    cfg = command_config(tmp_path, {"command": [PY, str(one_line), "{lr}"]}, epochs=3)
    assert run_worker(load_config(cfg)).by_state == {"COMPLETE": 3}
    assert all(t.value == pytest.approx(t.params["lr"] * 3) for t in load(cfg)[0].trials)


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status.rsplit(")", 1)[1].split()[0] == "Z"  # a zombie waiting for init runs nothing


# Trial 0 learns well; the others start badly and would then run for ten minutes, with a DataLoader-like
# child that ignores SIGTERM. Pruning must end both, the child with SIGKILL after the grace period.
PRUNED_SCRIPT = """
import json, os, subprocess, sys, time
trial, out = int(sys.argv[1]), sys.argv[2]
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
open(os.path.join(out, "pids"), "w").write(f"{os.getpid()} {child.pid}")
for epoch in range(1, 6):
    print(json.dumps({"epoch": epoch, "val_acc": 0.9 if trial == 0 else 0.1}), flush=True)
    if trial > 0:
        time.sleep(600)
child.kill()
"""


def test_pruned_trial_stops_the_whole_process_group(tmp_path: Path) -> None:
    pruned = script(tmp_path, "pruned.py", PRUNED_SCRIPT)
    cfg = command_config(
        tmp_path,
        {"command": [PY, str(pruned), "{trial}", "{trial_dir}"], "kill_grace_s": 1},
        trials=2,
        epochs=5,
        pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0},
    )
    report = run_worker(load_config(cfg))
    assert report.by_state == {"COMPLETE": 1, "PRUNED": 1}
    study, study_dir = load(cfg)
    assert study.trials[1].state == TrialState.PRUNED and sorted(study.trials[1].intermediate_values) == [1]
    script_pid, child_pid = map(int, (study_dir / "trials" / "trial-1" / "pids").read_text().split())
    assert wait_until(lambda: _gone(script_pid) and _gone(child_pid), timeout=10)


def test_exit_code_fails_the_trial_with_the_end_of_stderr_and_fails_fast(tmp_path: Path) -> None:
    crash = script(
        tmp_path,
        "crash.py",
        "import sys\nfor i in range(30):\n    print(f'line {i}', file=sys.stderr)\nsys.exit(3)\n",
    )
    cfg = command_config(tmp_path, {"command": [PY, str(crash), "--lr", "{lr}"]}, trials=10)
    with pytest.raises(TaskError, match=r"the first 3 trials all failed \(exit:3\)"):
        run_worker(load_config(cfg))
    trials = load(cfg)[0].trials
    assert len(trials) == 3 and all(t.state == TrialState.FAIL for t in trials)
    record = records(cfg)[0]
    assert record["reason"] == "exit:3"
    assert record["stderr_tail"] == [f"line {i}" for i in range(10, 30)]


def test_a_script_that_never_reports_the_metric_fails_with_that_reason(tmp_path: Path) -> None:
    typo = script(tmp_path, "typo.py", "import json\nprint(json.dumps({'epoch': 1, 'val_accuracy': 0.5}))\n")
    cfg = command_config(tmp_path, {"command": [PY, str(typo)]}, trials=1)
    run_worker(load_config(cfg))
    assert records(cfg)[0]["reason"] == "metric_not_reported:val_acc"


def test_trial_timeout_fails_the_trial(tmp_path: Path) -> None:
    slow = script(tmp_path, "slow.py", "import time\ntime.sleep(600)\n")
    cfg = command_config(tmp_path, {"command": [PY, str(slow)], "trial_timeout_s": 1}, trials=1)
    run_worker(load_config(cfg))
    assert records(cfg)[0]["reason"] == "timeout"


def test_the_database_url_is_not_passed_to_the_script() -> None:
    env = command_environment({"HPCTUNE_STORAGE": "postgresql://u:secret@db/x", "PATH": "/usr/bin"})
    assert "HPCTUNE_STORAGE" not in env and "secret" not in json.dumps(env)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


# Saves a checkpoint at every epoch; on USR2 it finishes the epoch and exits; with resume=1 it goes on from
# the checkpoint. One epoch takes a moment so that USR2 lands in the middle of the trial.
CHECKPOINTING_SCRIPT = """
import json, os, signal, sys, time
lr, epochs, ckpt, resume = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
stop = []
signal.signal(signal.SIGUSR2, lambda *_: stop.append(1))
start = json.load(open(ckpt))["epoch"] + 1 if resume else 1
print(f"start at epoch {start}", flush=True)
for epoch in range(start, epochs + 1):
    time.sleep(0.2)
    print(json.dumps({"epoch": epoch, "val_acc": lr * epoch}), flush=True)
    json.dump({"epoch": epoch}, open(ckpt + ".tmp", "w"))
    os.replace(ckpt + ".tmp", ckpt)
    if stop:
        sys.exit(0)
"""


def _usr2_when_an_epoch_is_recorded(cfg: Path, worker: subprocess.Popen[bytes]) -> None:
    study_dir = load_config(cfg).study_dir
    assert wait_until(lambda: bool((records(cfg).get(0) or {}).get("epochs")), timeout=60), study_dir
    worker.send_signal(signal.SIGUSR2)
    out, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, out.decode()


@pytest.mark.slow
def test_walltime_usr2_reaches_the_script_and_the_continuation_resumes_from_its_checkpoint(
    tmp_path: Path,
) -> None:
    resumable = script(tmp_path, "resumable.py", CHECKPOINTING_SCRIPT)
    cfg = command_config(
        tmp_path,
        {"command": [PY, str(resumable), "{lr}", "{epochs}", "{checkpoint}", "{resume}"]},
        trials=1,
        epochs=12,
        worker={"heartbeat_interval": 1, "grace_period": 3, "max_retry": 0},
    )
    _usr2_when_an_epoch_is_recorded(cfg, start_worker(cfg, 0))
    run_worker(load_config(cfg))  # the next worker takes the continuation
    study, study_dir = load(cfg)
    first, second = study.trials
    assert first.state == TrialState.FAIL and first.user_attrs["reason"] == "walltime"
    assert second.state == TrialState.COMPLETE and second.system_attrs[attrs.FAILURES] == 0
    record = records(cfg)[1]
    assert [e["epoch"] for e in record["epochs"]] == list(range(1, 13))  # every epoch once
    assert second.value == pytest.approx(second.params["lr"] * 12)
    stdout = (study_dir / "trials" / "trial-1" / "stdout.log").read_text()
    resumed_at = int(stdout.split("start at epoch ")[1].split()[0])
    assert 1 < resumed_at <= 12  # continued, not started over


@pytest.mark.slow
def test_walltime_without_a_checkpoint_starts_over_without_counting_a_failure(tmp_path: Path) -> None:
    # USR2's default action ends a script that does not handle it; it saved nothing
    plain = script(
        tmp_path,
        "plain.py",
        "import json, sys, time\nfor e in range(1, 13):\n    time.sleep(0.2)\n"
        "    print(json.dumps({'epoch': e, 'val_acc': e / 12}), flush=True)\n",
    )
    cfg = command_config(
        tmp_path,
        {"command": [PY, str(plain), "{resume}"]},
        trials=1,
        epochs=12,
        worker={"heartbeat_interval": 1, "grace_period": 3, "max_retry": 0},
    )
    _usr2_when_an_epoch_is_recorded(cfg, start_worker(cfg, 0))
    run_worker(load_config(cfg))
    first, second = load(cfg)[0].trials
    assert first.user_attrs["reason"] == "walltime" and second.state == TrialState.COMPLETE
    assert second.system_attrs[attrs.FAILURES] == 0  # max_retry 0: a counted failure would end the chain
    assert [e["epoch"] for e in records(cfg)[1]["epochs"]] == list(range(1, 13))


def test_sigterm_to_the_worker_stops_the_script_and_its_children(tmp_path: Path) -> None:
    pruned = script(tmp_path, "pruned.py", PRUNED_SCRIPT)
    cfg = command_config(
        tmp_path, {"command": [PY, str(pruned), "1", "{trial_dir}"], "kill_grace_s": 1}, trials=1
    )
    worker = start_worker(cfg, 0)
    pids = load_config(cfg).study_dir / "trials" / "trial-0" / "pids"
    assert wait_until(lambda: pids.is_file() and bool(records(cfg).get(0, {}).get("epochs")), timeout=60)
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 143, out.decode()
    script_pid, child_pid = map(int, pids.read_text().split())
    assert wait_until(lambda: _gone(script_pid) and _gone(child_pid), timeout=10)
    trial = load(cfg)[0].trials[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs["reason"] == "interrupted"


@pytest.mark.parametrize(
    ("task", "message", "code"),
    [
        (
            {"command": "nosuchprog --lr {lr}"},
            "Error: command not found: nosuchprog (nosuchprog --lr {lr})",
            4,
        ),
        (
            {"command": "python t.py --lr {lrr}"},
            "Error: task.command: unknown placeholder {lrr} (did you mean {lr}?)",
            2,
        ),
        (
            {"command": "python t.py", "metrics_regex": r"acc (?P<acc>\S+)"},
            "Error: task.metrics_regex has no group for the metric: add (?P<val_acc>...) to it",
            2,
        ),
    ],
)
def test_check_reports_command_mistakes_in_one_line(
    tmp_path: Path, task: dict, message: str, code: int
) -> None:
    cfg = command_config(tmp_path, task)
    result = subprocess.run(
        [HPCTUNE, "check", "-c", str(cfg)], env=worker_env(), capture_output=True, text=True
    )
    assert result.returncode == code
    assert result.stderr.strip().startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
