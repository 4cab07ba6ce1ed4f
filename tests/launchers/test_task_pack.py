"""``slurm.trials_per_gpu`` on this machine: the supervisor that ``hpctune worker`` becomes, run for real
(``python -m hpc_tune worker``) on the embedded journal store, with a cheap objective task. The SLURM side
(an array, the walltime signal and the requeue) is in test_task_pack_slurm.py.

No GPU is lent to these tests: a task "holds a GPU" here only where a test says it fakes one.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hpc_tune.attrs import TRIALS_PER_GPU, worker_of
from hpc_tune.config import load_config
from hpc_tune.config.lint import lint, lint_for_task
from hpc_tune.launchers.environment import pack_worker_environment
from hpc_tune.launchers.mps import start_mps
from hpc_tune.launchers.task_pack import as_pack_worker, packs
from hpc_tune.policy.budget import budget_state
from hpc_tune.policy.pack_size import CUDA_CONTEXT_BYTES
from hpc_tune.preflight import pack_line
from hpc_tune.slurm.allocation import devices_held
from hpc_tune.storage.records import read_trials
from hpc_tune.storage.timelines import read_timelines
from tests.conftest import running_with_epochs, study_of, wait_until, worker_env, write_config

# Each epoch sleeps: a trial's time is the task's, not the CPU's, so that two workers finish twice as many
# trials on a machine whose two cores are busy with the rest of the suite.
OBJECTIVE = """
import os, sys, time, types

if os.environ.get("PACK_TEST_FAKE_GPU"):
    # No GPU is lent to these tests: a stand-in for the torch.cuda of an objective that used one, whose
    # trials peak at 1 GiB of an 80 GiB device (what the worker reads of a loaded torch).
    cuda = types.SimpleNamespace(
        is_initialized=lambda: True,
        current_device=lambda: 0,
        max_memory_reserved=lambda device: 2**30,
        get_device_properties=lambda device: types.SimpleNamespace(total_memory=80 * 2**30),
        reset_peak_memory_stats=lambda device: None,
    )
    sys.modules.setdefault("torch", types.SimpleNamespace(cuda=cuda))

def objective(trial):
    x = trial.suggest_float("x", 0.0, 1.0)
    if os.environ.get("PACK_TEST_RAISE"):
        raise ValueError("broken on purpose")
    # A size-1 worker of auto holds its third trial until the test lets it go.
    hold = os.environ.get("PACK_TEST_HOLD")
    while hold and trial.number >= 2 and os.environ["HPCTUNE_PACK_SIZE"] == "1" and not os.path.exists(hold):
        time.sleep(0.05)
    for epoch in range(1, 4):
        time.sleep(float(os.environ.get("PACK_TEST_SLEEP", "0.1")))
        trial.report(x, epoch)
    return x
"""


def objective_config(tmp_path: Path, **overrides: object) -> Path:
    (tmp_path / "obj.py").write_text(OBJECTIVE)
    settings: dict[str, object] = {
        "task": "obj.py:objective",
        "metric": "value",
        "space": {"x": {"type": "float", "low": 0.0, "high": 1.0}},
        "pruner": {"type": "none"},
        "sampler": {"type": "tpe", "seed": 1, "n_startup_trials": 4},
        "trials": 8,
        "epochs": 3,
    }
    settings.update(overrides)
    return write_config(tmp_path, **settings)


def supervisor(cfg: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hpc_tune", "worker", "-c", str(cfg)],
        env=worker_env(**env),
        cwd=cfg.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class Output:
    """A process's output read as it comes, so that a test can act when a line appears."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._thread = threading.Thread(target=lambda: self.lines.extend(iter(proc.stdout.readline, "")))
        self._thread.start()

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def text(self) -> str:
        self._thread.join(timeout=60)
        return "".join(self.lines)


def run_held(cfg: Path, until: str, *, usr2: bool = False, **env: str) -> tuple[int, str]:
    """Run the supervisor with its size-1 worker's third trial held (see OBJECTIVE) until ``until`` is in
    its output, then (after a USR2 to it, with ``usr2``) let the trial go; its exit code and output."""
    hold = cfg.parent / "release"
    proc = supervisor(cfg, **env, PACK_TEST_HOLD=str(hold))
    output = Output(proc)
    try:
        assert wait_until(lambda: output.has(until), timeout=60), output.text()
        if usr2:
            proc.send_signal(signal.SIGUSR2)
        hold.touch()
        proc.wait(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, output.text()


def test_a_worker_killed_by_a_signal_has_its_trial_failed_and_rerun_and_the_budget_stays_exact(
    tmp_path: Path,
) -> None:
    cfg = objective_config(tmp_path, trials=6, slurm={"trials_per_gpu": 2})
    proc = supervisor(cfg, PACK_TEST_SLEEP="0.4")
    at_work = running_with_epochs(cfg)

    def victim() -> optuna.trial.FrozenTrial | None:
        return next(iter(at_work()), None)

    assert wait_until(lambda: victim() is not None, timeout=60)
    target = victim()
    assert target is not None
    os.kill(worker_of(target)["pid"], signal.SIGKILL)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    assert "1 trial(s) of killed workers re-run" in out
    trials = study_of(cfg).get_trials(deepcopy=False)
    killed = trials[target.number]
    assert killed.state == TrialState.FAIL and killed.user_attrs["reason"] == "worker_killed"
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == target.number]
    assert retry.params == killed.params and retry.state == TrialState.COMPLETE
    state = budget_state(trials, 6)
    assert state.finished == 6 and state.running == 0 and state.waiting == 0
    assert "workers done: 3 process(es) for 2 slot(s)" in out  # a replacement took the killed one's slot


def test_auto_on_cpu_measures_one_then_two_workers_and_records_the_choice(tmp_path: Path) -> None:
    """The 2 new workers start while the size-1 one finishes its third trial (held until they have
    started), behind a gate that opens once it is gone: then they run (and are measured) alone."""
    cfg = objective_config(tmp_path, trials=12, slurm={"trials_per_gpu": "auto"})
    # The task's cores, as SLURM says them: the cap of auto on a CPU (this machine has 2).
    began = time.time()
    code, out = run_held(cfg, "2 worker(s) share this task's", SLURM_CPUS_PER_TASK="2", PACK_TEST_SLEEP="0.1")
    ended = time.time()
    assert code == 0, out
    assert "trials_per_gpu auto: measuring 1 worker" in out and "1 -> 2 worker(s)" in out
    assert "the new ones start, the current ones end after their trial" in out
    assert "are ready" not in out  # on a CPU task the old ones do not wait for them (see _resize)
    study = study_of(cfg)
    choice = study.user_attrs[TRIALS_PER_GPU]
    assert choice["n"] == 2, choice
    assert "the most workers per task is 2, the task's cores" in choice["why"]
    assert set(choice["throughput_per_device_hour"]) == {"1", "2"}
    assert choice["throughput_per_device_hour"]["2"] > 1.1 * choice["throughput_per_device_hour"]["1"]
    assert choice["capacity_bytes"] and choice["peak_memory_bytes"]  # the workers' RSS, the machine's memory
    trials = study.get_trials(deepcopy=False)
    assert budget_state(trials, 12).finished == 12
    records = read_trials(load_config(cfg).study_dir).records
    assert all(r["peak_memory_bytes"] > 0 for r in records.values())
    # The trials of the size-2 workers hold half the task's cores each while they run.
    shared = [r for r in records.values() if (r["devices"] or {}).get("shared_by") == 2]
    assert shared and all(r["device_seconds"] == pytest.approx(r["duration_s"], abs=0.002) for r in shared)
    # The size-2 workers started up while the size-1 worker finished its last trial: their share of the
    # cores starts when the gate opened, once it was gone, so the task's 2 cores are held once.
    timelines = read_timelines(load_config(cfg).study_dir)
    (first,) = [t for t in timelines if "shared_by" not in t.devices]
    second = [t for t in timelines if t.devices.get("shared_by") == 2]
    assert len(second) == 2
    assert first.started_ahead_at is None
    for timeline in second:
        assert timeline.started_ahead_at is not None
        assert timeline.started_ahead_at < first.segments[-1].end <= timeline.segments[0].start
        assert timeline.segments[0].activity == "waiting"
    collected = subprocess.run(
        [sys.executable, "-m", "hpc_tune", "collect", "-c", str(cfg)],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert collected.returncode == 0, collected.stderr
    line = "trials_per_gpu auto: 2 worker(s) per array task (the most workers per task is 2, the task's cores"
    assert line in collected.stdout
    summary = json.loads((load_config(cfg).study_dir / "summary.json").read_text())
    assert 0 < summary["device_hours"]["allocated"] <= 2 * (ended - began) / 3600


def test_the_walltime_signal_reaches_workers_waiting_for_the_old_size_to_drain(tmp_path: Path) -> None:
    """USR2 while auto grows from 1 to 2 workers: the 2 new ones, started while the old one's trial 2 is held,
    run no trial and end for the walltime; the old one finishes its trial, and nothing is left RUNNING."""
    cfg = objective_config(tmp_path, trials=12, slurm={"trials_per_gpu": "auto"})
    code, out = run_held(cfg, "2 worker(s) share this task's", usr2=True, SLURM_CPUS_PER_TASK="2")
    assert code == 0, out
    trials = study_of(cfg).get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, out
    timelines = read_timelines(load_config(cfg).study_dir)
    second = [t for t in timelines if t.devices.get("shared_by") == 2]
    assert len(second) == 2
    for timeline in second:
        assert timeline.started_ahead_at is not None
        assert [s.activity for s in timeline.segments] == ["exiting"]
    logs = sorted((load_config(cfg).study_dir / "logs").glob("pack-*.slot*.log"))
    assert sum("worker done: 0 trial(s) (none); stopped by walltime" in p.read_text() for p in logs) == 2, out


def test_auto_on_a_gpu_lets_the_old_workers_go_on_until_the_new_ones_are_ready(tmp_path: Path) -> None:
    """On a GPU the new workers' start-up (CPU work) should not idle the device: the size-1 worker is told to
    end only once both new ones have said they are ready (its third trial is held until then), and auto
    sizes by the trials' GPU memory. The GPU is faked (CUDA_VISIBLE_DEVICES and a stand-in torch.cuda)."""
    cfg = objective_config(tmp_path, trials=12, slurm={"trials_per_gpu": "auto"})
    ready = "the new worker(s) are ready: the current ones end after their trial"
    env = {"SLURM_CPUS_PER_TASK": "2", "CUDA_VISIBLE_DEVICES": "0", "PACK_TEST_FAKE_GPU": "1"}
    code, out = run_held(cfg, ready, **env)
    assert code == 0, out
    assert "1 -> 2 worker(s): the new ones start while the current ones go on" in out
    assert out.index("2 worker(s) share this task's 1 GPU(s)") < out.index(ready)
    choice = study_of(cfg).user_attrs[TRIALS_PER_GPU]
    assert choice["n"] == 2 and choice["capacity_source"] == "GPU memory", choice
    assert choice["peak_memory_bytes"] == 2**30 + CUDA_CONTEXT_BYTES
    trials = study_of(cfg).get_trials(deepcopy=False)
    assert budget_state(trials, 12).finished == 12
    (first,) = [t for t in read_timelines(load_config(cfg).study_dir) if "shared_by" not in t.devices]
    assert [s.trial for s in first.segments if s.activity == "trial"] == [0, 1, 2]


def test_a_failing_worker_fails_the_task_with_its_error_line(tmp_path: Path) -> None:
    cfg = objective_config(tmp_path, trials=6, slurm={"trials_per_gpu": 2})
    proc = supervisor(cfg, PACK_TEST_RAISE="1")
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 4, out  # the worker's own code: TaskError's
    (line,) = [x for x in out.splitlines() if x.startswith("Error: ")]
    assert line.startswith("Error: a worker of the task failed: the first 3 trials all failed"), line
    assert line.endswith("(obj.py:objective)"), line


def test_pack_workers_get_their_share_of_threads_and_memory(tmp_path: Path) -> None:
    loaded = load_config(objective_config(tmp_path, slurm={"trials_per_gpu": 4}))
    assert packs(loaded, {}) and not packs(loaded, {"HPCTUNE_PACK_SLOT": "0"})
    env = pack_worker_environment(1, 4, "postgresql://u@h/db", {}, study_workers=8, cores=8)
    assert env["OMP_NUM_THREADS"] == "2" and env["HPCTUNE_PACK_SLOT"] == "1"
    assert env["HPCTUNE_STORAGE"] == "postgresql://u@h/db" and env["HPCTUNE_WORKERS"] == "8"
    assert (
        pack_worker_environment(0, 4, None, {"OMP_NUM_THREADS": "1"}, study_workers=4, cores=8)[
            "OMP_NUM_THREADS"
        ]
        == "1"
    )
    child = as_pack_worker(loaded, {"HPCTUNE_PACK_SLOT": "0", "HPCTUNE_PACK_SIZE": "4"})
    assert child.config.train.memory_fraction == pytest.approx(loaded.config.train.memory_fraction / 4)


STARTING_WORKER = """
import os, signal
from hpc_tune.worker.signals import SignalGuard
os.kill(os.getpid(), signal.SIGUSR2)  # the walltime signal while the worker still imports: it waits
guard = SignalGuard()
with guard.installed():
    print("walltime" if guard.walltime.wait(5) else "lost")
"""


def test_a_signal_that_came_while_a_worker_started_is_handled_once_it_handles_signals() -> None:
    """The supervisor starts its workers with USR2, SIGTERM and SIGINT blocked (as here): one still importing
    is not killed by USR2's default action, and the walltime signal is not lost either."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR2, signal.SIGTERM, signal.SIGINT])
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", STARTING_WORKER], stdout=subprocess.PIPE, text=True, env=worker_env()
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    out = proc.communicate(timeout=60)[0]
    assert (proc.returncode, out.strip()) == (0, "walltime")


def test_check_says_what_trials_per_gpu_does_and_warns_above_the_cores(tmp_path: Path) -> None:
    gpu = {"gres": "gpu:1", "cpus_per_task": 8}
    config = load_config(objective_config(tmp_path, slurm={**gpu, "trials_per_gpu": 4})).config
    assert pack_line(config) == (
        "trials_per_gpu: 4 workers per array task on its GPU(s) (gpu:1), 2 thread(s) each and "
        "train.memory_fraction 0.225; CUDA MPS when nvidia-cuda-mps-control is on the node's PATH"
    )
    assert not [f for f in lint(config) if f.key == "slurm.trials_per_gpu"]
    config = load_config(objective_config(tmp_path, slurm={"cpus_per_task": 2, "trials_per_gpu": 4})).config
    (found,) = [f for f in lint(config) if f.key == "slurm.trials_per_gpu"]
    assert "is 4 but slurm.cpus_per_task is 2" in found.message
    config = load_config(objective_config(tmp_path, slurm={**gpu, "trials_per_gpu": "auto"})).config
    assert "measures 1, 2, 4, ... workers (at most 8)" in (pack_line(config) or "")
    (found,) = [f for f in lint_for_task(config, "command") if f.key == "slurm.trials_per_gpu"]
    assert "a command's GPU memory cannot be measured" in found.message
    assert not [f for f in lint_for_task(config, "build") if f.key == "slurm.trials_per_gpu"]
    assert pack_line(load_config(objective_config(tmp_path)).config) is None


def test_mps_starts_and_quits_a_daemon_per_task_stand_in(tmp_path: Path) -> None:
    """A STAND-IN: no GPU and no CUDA MPS exist here, so a fake ``nvidia-cuda-mps-control`` on PATH and a
    fake CUDA_VISIBLE_DEVICES check only the calls (start with -d, the variables, quit on stdin)."""
    calls = tmp_path / "calls.log"
    fake = tmp_path / "bin" / "nvidia-cuda-mps-control"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "args=$* pipe=$CUDA_MPS_PIPE_DIRECTORY log=$CUDA_MPS_LOG_DIRECTORY" >> {calls}\n'
        f'[ "$1" = -d ] || {{ read line; echo "stdin=$line" >> {calls}; }}\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {"PATH": f"{fake.parent}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "0"}
    mps = start_mps(devices_held(env), env, "array-7_1")
    assert mps.on and mps.state.startswith("on (daemon in ")
    pipe = mps.env["CUDA_MPS_PIPE_DIRECTORY"]
    assert Path(pipe).is_dir() and "hpctune-mps-array-7_1-" in pipe
    mps.quit(env)
    lines = calls.read_text().splitlines()
    assert lines[0] == f"args=-d pipe={pipe} log={Path(pipe).parent / 'log'}"
    assert lines[1].startswith("args= pipe=" + pipe) and lines[2] == "stdin=quit"
    assert not Path(pipe).exists()  # the task's folder went with the daemon
    # Off without a GPU, without the binary, or with a daemon the site already runs.
    no_gpu = {**env, "CUDA_VISIBLE_DEVICES": ""}
    assert start_mps(devices_held(no_gpu), no_gpu, "t").state == "off (the task holds no GPU)"
    no_binary = {"PATH": str(tmp_path), "CUDA_VISIBLE_DEVICES": "0"}
    assert "is not on PATH" in start_mps(devices_held(no_binary), no_binary, "t").state
    site = {**env, "CUDA_MPS_PIPE_DIRECTORY": "/run/mps"}
    assert "already names an MPS daemon" in start_mps(devices_held(site), site, "t").state
