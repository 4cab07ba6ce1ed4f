"""The range test of a ``build()`` task: each run builds the task afresh (new weights, new optimizer) and
sweeps it on hpctune's engine (hpc_tune/train/lr_range.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hpc_tune.config import LoadedConfig
from hpc_tune.lr_range.curve import LossCurve, LrRun, smoothing_for
from hpc_tune.lr_range.plan import RangePlan
from hpc_tune.tasks.base import LoadedTask


@dataclass
class EngineSweeps:
    runs: list[LrRun] = field(default_factory=list)
    device: str | None = None
    precision: str | None = None


def engine_runs(
    task: LoadedTask, loaded: LoadedConfig, plan: RangePlan, on_run: Callable[[LrRun], None] | None = None
) -> EngineSweeps:
    """Every run of ``plan`` at full fidelity with the trials' seed and ``train:`` options."""
    from hpc_tune.train.lr_range import sweep  # torch is paid only by a test that trains

    options = loaded.config.train
    lrs = plan.lrs()
    out = EngineSweeps()
    for spec in plan.runs:
        parts = task.build(dict(spec.params), None, options.seed, options)
        curve = LossCurve(smoothing_for(plan.steps))
        info = sweep(parts, options, lrs, curve.add, cache_dir=loaded.study_dir / "inductor-cache")
        run = curve.run(
            spec.label(info.optimizer, info.batch_size),
            steps=plan.steps,
            optimizer=spec.optimizer or info.optimizer,
            batch_size=info.batch_size,
        )
        out.runs.append(run)
        out.device, out.precision = info.device, info.precision
        if on_run is not None:
            on_run(run)
    return out
