"""``hpctune lr-range``: the range test of a config's task, its suggestion, its JSON and its figure.

The engine (``build()``) and a command are tested; an objective(trial) is refused, because its training
loop runs inside Optuna's call and cannot be handed a growing learning rate from outside.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpc_tune.config import LoadedConfig
from hpc_tune.errors import LrRangeError, TaskError
from hpc_tune.lr_range.command import command_runs
from hpc_tune.lr_range.curve import LrRun
from hpc_tune.lr_range.engine import engine_runs
from hpc_tune.lr_range.plan import DEFAULT_STEPS, DEFAULT_WIDEN, plan_range
from hpc_tune.lr_range.plot import write_figure
from hpc_tune.lr_range.result import LR_RANGE_PNG, LrRangeResult, write_result
from hpc_tune.lr_range.suggest import suggest
from hpc_tune.tasks.base import load_task


@dataclass(frozen=True)
class RangeTest:
    """What ``range_test`` found and wrote."""

    result: LrRangeResult
    json_path: Path
    space_line: str  # the suggestion as the space's YAML line, the parameter's when: kept
    png_path: Path | None  # None: not drawn (``png_note`` says why)
    png_note: str | None = None


def range_test(
    loaded: LoadedConfig,
    *,
    steps: int = DEFAULT_STEPS,
    widen: float = DEFAULT_WIDEN,
    param: str | None = None,
    on_run: Callable[[LrRun], None] | None = None,
) -> RangeTest:
    """Run the test, write ``lr-range.json`` and ``lr-range.png`` into the study's folder.

    Raises LrRangeError when no run's loss fell before it diverged, after writing both files: the figure
    shows what happened.
    """
    config = loaded.config
    task = load_task(config.task, loaded.root, has_space=config.space is not None)
    if task.kind == "objective":
        raise TaskError(
            "the learning-rate range test needs the engine (a build() task) or a command task: an "
            "objective(trial) trains in its own loop, which hpctune cannot step through",
            task.spec,
        )
    plan = plan_range(config, steps=steps, widen=widen, param=param)
    device = precision = None
    if task.kind == "build":
        sweeps = engine_runs(task, loaded, plan, on_run)
        runs, device, precision = sweeps.runs, sweeps.device, sweeps.precision
    else:
        runs = command_runs(task, loaded, plan, on_run)
    suggestion, readings = suggest(runs)
    result = LrRangeResult(
        study=config.study,
        task=config.task_spec,
        param=plan.param,
        space_low=plan.space.low,
        space_high=plan.space.high,
        start_lr=plan.start,
        end_lr=plan.end,
        steps=plan.steps,
        device=device,
        precision=precision,
        runs=runs,
        readings=readings,
        suggestion=suggestion,
    )
    json_path = write_result(loaded.study_dir, result)
    png_path = loaded.study_dir / LR_RANGE_PNG
    note = write_figure(png_path, result)
    if suggestion is None:
        why = "; ".join(f"{r.label}: {r.note}" for r in readings if r.note)
        raise LrRangeError(
            f"no run's loss fell before it diverged ({why})",
            png_path if note is None else json_path,
        )
    line = result.space_line(plan.space.when)
    assert line is not None
    return RangeTest(result, json_path, line, None if note else png_path, note)
