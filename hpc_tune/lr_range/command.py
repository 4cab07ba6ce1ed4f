"""The range test of a command task: the script runs its own sweep, hpctune reads it.

hpctune cannot step through a script's training loop, so the script does the sweep when
``HPCTUNE_LR_RANGE=1`` is set, and prints one JSON line per step on stdout::

    {"lr": 0.00012, "loss": 2.297}

It finds the sweep in ``HPCTUNE_LR_RANGE_MIN``, ``HPCTUNE_LR_RANGE_MAX`` and ``HPCTUNE_LR_RANGE_STEPS``
(exponential from min to max, one optimizer step each). The command runs as a trial's would: the same
placeholders (``{lr}`` is the sweep's first rate, ``{epochs}`` 1), the same environment and ``task.env``,
its own process group. hpctune smooths the losses and stops the script (SIGTERM to its group, SIGKILL after
``kill_grace_s``) once the loss diverged, so a script needs no stopping rule of its own.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from hpc_tune.config import CommandTask, LoadedConfig
from hpc_tune.errors import LrRangeError
from hpc_tune.lr_range.curve import LossCurve, LrRun, smoothing_for
from hpc_tune.lr_range.plan import RangePlan, SweepRun
from hpc_tune.tasks.base import LoadedTask
from hpc_tune.worker.kinds.command import environment_for, expand, start_command
from hpc_tune.worker.script_protocol import json_object

LR_RANGE_ENV = "HPCTUNE_LR_RANGE"
LR_RANGE_MIN_ENV = "HPCTUNE_LR_RANGE_MIN"
LR_RANGE_MAX_ENV = "HPCTUNE_LR_RANGE_MAX"
LR_RANGE_STEPS_ENV = "HPCTUNE_LR_RANGE_STEPS"
LOGS_DIR = "lr-range"


def command_runs(
    task: LoadedTask, loaded: LoadedConfig, plan: RangePlan, on_run: Callable[[LrRun], None] | None = None
) -> list[LrRun]:
    """Run the script once per run of ``plan``; its output is kept in ``runs/<study>/lr-range/run-N/``."""
    assert task.command is not None and task.cwd is not None
    runs = []
    for number, spec in enumerate(plan.runs):
        folder = loaded.study_dir / LOGS_DIR / f"run-{number}"
        run = _Script(task.command, task.cwd, loaded, plan, spec, folder).run()
        runs.append(run)
        if on_run is not None:
            on_run(run)
    return runs


def read_point(line: str) -> tuple[float, float] | None:
    """``(lr, loss)`` of a protocol line; None for any other line. A loss of NaN, null or Infinity is a
    non-finite point (``json.dumps(float("nan"))`` prints NaN, which Python reads back)."""
    data = json_object(line)
    if data is None or "lr" not in data or "loss" not in data:
        return None
    lr, loss = data["lr"], data["loss"]
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0:
        return None
    if loss is None or isinstance(loss, bool) or not isinstance(loss, int | float):
        return float(lr), math.nan
    return float(lr), float(loss)


class _Script:
    """One run of the script: started, read line by line, stopped when the curve says so."""

    def __init__(
        self, spec: CommandTask, cwd: Path, loaded: LoadedConfig, plan: RangePlan, run: SweepRun, folder: Path
    ) -> None:
        self.spec = spec
        self.cwd = cwd
        self.config = loaded.config
        self.plan = plan
        self.sweep = run
        self.folder = folder
        self.stopped_by_us = False
        self.timed_out = False

    def _values(self) -> dict[str, Any]:
        return {
            **self.sweep.params,
            "epochs": 1,
            "seed": self.config.train.seed,
            "trial": 0,
            "trial_dir": str(self.folder),
            "checkpoint": str(self.folder / "checkpoint.pt"),
            "resume": 0,
            "study": self.config.study,
        }

    def run(self) -> LrRun:
        self.folder.mkdir(parents=True, exist_ok=True)
        values = self._values()
        argv = expand(self.spec.command, values)
        env = environment_for(values, self.sweep.params, self.spec.env)
        env.update(
            {
                LR_RANGE_ENV: "1",
                LR_RANGE_MIN_ENV: repr(self.plan.start),
                LR_RANGE_MAX_ENV: repr(self.plan.end),
                LR_RANGE_STEPS_ENV: str(self.plan.steps),
            }
        )
        curve = LossCurve(smoothing_for(self.plan.steps))
        with open(self.folder / "stdout.log", "wb") as out, open(self.folder / "stderr.log", "wb") as err:
            process = start_command(argv, self.cwd, env, err)
            timer = None
            if self.spec.trial_timeout_s is not None:
                timer = threading.Timer(self.spec.trial_timeout_s, self._time_out, (process,))
                timer.daemon = True
                timer.start()
            try:
                self._read(process, out, curve)
                if not self.stopped_by_us:  # its stdout closed: it is ending, let it say how
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=self.spec.kill_grace_s)
            finally:
                if timer is not None:
                    timer.cancel()
                if process.poll() is None:
                    self._stop(process)
                _killpg(process.pid, signal.SIGKILL)  # whatever the script left behind
                process.wait()
                if process.stdout is not None:
                    process.stdout.close()
        return self._result(curve, process.returncode)

    def _read(self, process: subprocess.Popen[bytes], out: IO[bytes], curve: LossCurve) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            out.write(raw)
            point = read_point(raw.decode("utf-8", errors="replace"))
            if point is None:
                continue
            if not curve.add(*point) or len(curve.lr) >= self.plan.steps:
                self._stop(process)
                return

    def _time_out(self, process: subprocess.Popen[bytes]) -> None:
        self.timed_out = True
        self._stop(process)

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the whole group, SIGKILL after ``kill_grace_s``: what a pruned trial gets."""
        self.stopped_by_us = True
        _killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=self.spec.kill_grace_s)
        _killpg(process.pid, signal.SIGKILL)

    def _result(self, curve: LossCurve, returncode: int) -> LrRun:
        label = self.sweep.label("the script's optimizer")
        if self.timed_out:
            raise LrRangeError(
                f"the command ran longer than trial_timeout_s={self.spec.trial_timeout_s:g} for {label} "
                f"({LR_RANGE_ENV}=1; see {self.folder})",
                self.config.task_spec,
            )
        if not curve.lr or (returncode != 0 and not self.stopped_by_us):
            said = _last_line(self.folder / "stderr.log")
            how = "exited 0" if returncode == 0 else f"failed (exit {returncode})"
            raise LrRangeError(
                f'the command {how} with {len(curve.lr)} {{"lr": ..., "loss": ...}} lines on stdout for '
                f"{label} ({LR_RANGE_ENV}=1; see {self.folder})" + (f": {said}" if said else ""),
                self.config.task_spec,
            )
        return curve.run(
            label, steps=self.plan.steps, optimizer=self.sweep.optimizer, batch_size=self.sweep.batch_size
        )


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _last_line(path: Path) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = [line.strip() for line in deque(handle, maxlen=20) if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""
