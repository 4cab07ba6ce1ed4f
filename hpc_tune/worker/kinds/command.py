"""The command kind: an existing training script, run as it is, once per trial.

Parameters go in through placeholders (``--lr {lr}``, ``optimizer.lr={lr}``) and ``HPCTUNE_*`` variables;
metrics come back as lines on its stdout (script_protocol.py). What a demanding user relies on:
- every epoch reaches the pruner as it is printed; a pruned, timed-out or interrupted trial's whole process
  group (DataLoader workers included) gets SIGTERM, then SIGKILL after ``kill_grace_s``: no orphans, and
  leftovers of a script that exited are killed too;
- exit code != 0 fails the trial with reason ``exit:N`` and the end of stderr in the trial's JSON; stdout and
  stderr are kept in ``runs/<study>/trials/trial-N/``, which is also the script's ``{trial_dir}``;
- walltime: USR2 is forwarded to the script; if it then leaves a file at ``{checkpoint}``, the continuation
  runs with ``{resume}`` = 1 and that file in place; if not, the trial starts over, never counted as a
  failure or as budget.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shlex
import signal
import string
import subprocess
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from hpc_tune.config import CommandTask, LoadedConfig
from hpc_tune.errors import TaskError, TrialAbort
from hpc_tune.storage.records import TRIALS_DIR
from hpc_tune.tasks.base import LoadedTask, command_environment
from hpc_tune.worker.kinds.base import Outcome, TrialContext
from hpc_tune.worker.script_protocol import MetricsReader
from hpc_tune.worker.signals import SignalGuard

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 20
_POLL_S = 0.2  # how often the walltime flag and the time limit are looked at while the script is silent
_EOF = object()


def trial_dir(study_dir: Path, number: int) -> Path:
    """The script's own folder for trial ``number``: its logs, and whatever it writes there."""
    return study_dir / TRIALS_DIR / f"trial-{number}"


class _Placeholders(string.Formatter):
    """``str.format`` on our values, with two differences: a name is looked up whole (a Hydra-style
    parameter ``optimizer.lr`` is one name, not an attribute), and in a shell command every value is quoted,
    so a categorical choice with a space or a ``;`` stays one argument."""

    def __init__(self, values: Mapping[str, Any], quote: bool) -> None:
        self.values = values
        self.quote = quote

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        if field_name not in self.values:  # the config checked this; a conditional may be inactive
            raise TaskError(f"placeholder {{{field_name}}} has no value in this trial", "task.command")
        return self.values[field_name], field_name

    def format_field(self, value: Any, format_spec: str) -> str:
        text = format(value, format_spec)
        return shlex.quote(text) if self.quote else text


def expand(command: str | list[str], values: Mapping[str, Any]) -> list[str]:
    """The argv to start: ``bash -c`` with quoted values for a string, the list itself otherwise."""
    if isinstance(command, str):
        return ["bash", "-c", _Placeholders(values, quote=True).format(command)]
    plain = _Placeholders(values, quote=False)
    return [plain.format(part) for part in command]


def placeholder_values(ctx: TrialContext, study: str, folder: Path) -> dict[str, Any]:
    return {
        **ctx.params,
        "epochs": ctx.epochs,
        "seed": ctx.seed,
        "trial": ctx.trial.number,
        "trial_dir": str(folder),
        "checkpoint": str(ctx.checkpoint),
        "resume": 1 if ctx.resume else 0,
        "study": study,
    }


def environment_for(values: Mapping[str, Any], params: Mapping[str, Any], extra: Mapping[str, str]) -> dict:
    """The worker's environment (CUDA_VISIBLE_DEVICES, SLURM_*), the task's ``env:`` and HPCTUNE_* values:
    ``HPCTUNE_EPOCHS``, ``HPCTUNE_PARAM_LR``, ``HPCTUNE_PARAMS`` (all parameters as JSON), ..."""
    env = command_environment()
    env.update(extra)
    for name, value in values.items():
        if name not in params:
            env[f"HPCTUNE_{name.upper()}"] = str(value)
    for name, value in params.items():
        env["HPCTUNE_PARAM_" + "".join(c if c.isalnum() else "_" for c in name.upper())] = str(value)
    env["HPCTUNE_PARAMS"] = json.dumps(dict(params))
    return env


def start_command(
    argv: list[str], cwd: Path, env: Mapping[str, str], stderr: IO[bytes]
) -> subprocess.Popen[bytes]:
    """The task's command, its stdout piped to the reader, in its own process group: stopping the group
    reaches every child it starts (a launcher, a data loader's workers)."""
    try:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            start_new_session=True,
        )
    except OSError as exc:  # the program vanished or lost its x bit since check
        raise TaskError(f"cannot start the command: {exc.strerror or exc}", argv[0]) from None


class CommandRunner:
    def __init__(self, task: LoadedTask, loaded: LoadedConfig, guard: SignalGuard) -> None:
        assert task.command is not None and task.cwd is not None
        self.spec: CommandTask = task.command
        self.cwd = task.cwd
        self.config = loaded.config
        self.study_dir = loaded.study_dir
        self.guard = guard

    def run(self, ctx: TrialContext) -> Outcome:
        folder = trial_dir(self.study_dir, ctx.trial.number)
        folder.mkdir(parents=True, exist_ok=True)
        ctx.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        values = placeholder_values(ctx, self.config.study, folder)
        argv = expand(self.spec.command, values)
        ctx.record.command = argv[2] if isinstance(self.spec.command, str) else shlex.join(argv)
        env = environment_for(values, ctx.params, self.spec.env)
        with open(folder / "stdout.log", "ab") as out_log, open(folder / "stderr.log", "ab") as err_log:
            for log_file in (out_log, err_log):  # a continuation appends: one log per chain link is kept
                log_file.write(f"--- trial {ctx.trial.number}: {ctx.record.command}\n".encode())
                log_file.flush()
            process = start_command(argv, self.cwd, env, err_log)
            ended = _Run(process, ctx, self.spec, self.config.metric, out_log, self.guard).watch()
        return self._outcome(ctx, ended, process.returncode, folder)

    def _outcome(self, ctx: TrialContext, ended: str, returncode: int, folder: Path) -> Outcome:
        record, metric = ctx.record, self.config.metric
        if ended == "timeout":
            record.stderr_tail = _tail(folder / "stderr.log")
            raise TrialAbort("timeout", f"ran longer than trial_timeout_s={self.spec.trial_timeout_s:g}")
        finished = bool(record.epochs) and int(record.epochs[-1]["epoch"]) >= ctx.epochs
        if ended == "walltime" and not (returncode == 0 and finished):
            return Outcome(handed_on=True)
        if returncode != 0:
            record.stderr_tail = _tail(folder / "stderr.log")
            reason = f"exit:{returncode}" if returncode > 0 else f"signal:{signal.Signals(-returncode).name}"
            raise TrialAbort(reason, f"see {folder / 'stderr.log'}")
        reported = [e[metric] for e in record.epochs if e.get(metric) is not None]
        if not reported:
            record.stderr_tail = _tail(folder / "stderr.log")
            raise TrialAbort(f"metric_not_reported:{metric}", f"see {folder / 'stdout.log'}")
        if self.spec.value == "last":
            return Outcome(value=float(reported[-1]))
        return Outcome(value=(record.best or {}).get(metric))


class _Run:
    """Watching one running script: its output, the pruner, the walltime flag and the time limit."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        ctx: TrialContext,
        spec: CommandTask,
        metric: str,
        out_log: IO[bytes],
        guard: SignalGuard,
    ) -> None:
        self.process = process
        self.ctx = ctx
        self.spec = spec
        self.reader = MetricsReader(metric, spec.metrics_regex)
        self.out_log = out_log
        self.guard = guard
        self.lines: queue.Queue[Any] = queue.Queue()

    def _pump(self) -> None:
        """Thread: copy stdout to the log as it comes and hand each line to the main thread."""
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.out_log.write(raw)
            self.out_log.flush()
            self.lines.put(raw.decode("utf-8", errors="replace"))
        self.lines.put(_EOF)

    def watch(self) -> str:
        """Run to the end; returns how it ended: "exit", "walltime" or "timeout". A prune or an interrupt
        raises, after the process group is stopped."""
        pump = threading.Thread(target=self._pump, name="command-stdout", daemon=True)
        pump.start()
        deadline = time.monotonic() + self.spec.trial_timeout_s if self.spec.trial_timeout_s else None
        ended = "exit"
        try:
            while True:
                try:
                    line = self.lines.get(timeout=_POLL_S)
                except queue.Empty:
                    line = None
                if line is _EOF:
                    break
                if line is not None:
                    for epoch in self.reader.feed(line):
                        self.ctx.report_epoch(epoch)  # may raise TrialPruned: the finally stops the script
                if ended != "walltime" and self.ctx.walltime_requested():
                    ended = "walltime"
                    self._forward_usr2()
                if deadline is not None and time.monotonic() > deadline:
                    ended = "timeout"
                    self._stop()
                    break
                if line is None and self.process.poll() is not None:
                    # The script is gone but something it started still holds stdout: kill the leftovers,
                    # then read what is left.
                    _killpg(self.process.pid, signal.SIGKILL)
            for epoch in self.reader.close():
                self.ctx.report_epoch(epoch)
            self.process.wait()
        finally:
            with self.guard.critical():  # a second Ctrl-C must not leave the script running
                if self.process.poll() is None:
                    self._stop()
                _killpg(self.process.pid, signal.SIGKILL)  # whatever the script left behind
                self.process.wait()
                pump.join(timeout=self.spec.kill_grace_s)
                if self.process.stdout is not None:
                    self.process.stdout.close()
        return ended

    def _stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL after the grace period."""
        _killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=self.spec.kill_grace_s)
        except subprocess.TimeoutExpired:
            log.warning("trial %d: the script ignored SIGTERM; killing it", self.ctx.trial.number)
        _killpg(self.process.pid, signal.SIGKILL)

    def _forward_usr2(self) -> None:
        """USR2 to the script itself, not to its group: DataLoader workers would die of it. Under ``bash -c``
        the script is bash's child unless bash exec'ed it (a single command)."""
        targets = [self.process.pid]
        if isinstance(self.spec.command, str):
            children = _children(self.process.pid)
            if children and _comm(self.process.pid) == "bash":
                targets = children
        log.warning("trial %d: walltime near, USR2 forwarded to the script", self.ctx.trial.number)
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGUSR2)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        text = " ".join((task / "children").read_text() for task in tasks)
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _tail(path: Path, lines: int = STDERR_TAIL_LINES) -> list[str]:
    """The last lines of a log, for the trial's JSON: why it failed, without opening the log."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
    except OSError:
        return []
