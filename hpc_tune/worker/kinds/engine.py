"""The engine kind: a task's ``build()`` gives model, data and loss; the accelerated loop trains it.

What this kind adds to a trial: compiled evaluation, AMP, the batch probe, and a checkpoint at every epoch
boundary so that a walltime hand-on resumes where it stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hpc_tune.config import Config, LoadedConfig
from hpc_tune.tasks.base import LoadedTask
from hpc_tune.worker.kinds.base import Outcome, TrialContext

if TYPE_CHECKING:
    from hpc_tune.worker.signals import SignalGuard


class EngineRunner:
    def __init__(self, task: LoadedTask, loaded: LoadedConfig, guard: SignalGuard) -> None:
        self.task = task
        self.config: Config = loaded.config
        self.study_dir = loaded.study_dir

    def run(self, ctx: TrialContext) -> Outcome:
        from hpc_tune.train.engine import fit  # torch import is paid only by workers that train

        options = self.config.train
        if ctx.seed != options.seed:  # a re-run with another seed: the engine seeds from its options
            options = options.model_copy(update={"seed": ctx.seed})
        parts = self.task.build(ctx.params, ctx.fidelity, ctx.seed, options)
        result = fit(
            parts,
            epochs=ctx.epochs,
            options=options,
            on_epoch=ctx.report_epoch,
            checkpoint_path=ctx.checkpoint,
            resume=ctx.resume,
            stop_requested=ctx.walltime_requested,
            faults=ctx.faults,
            compile_cache_dir=self.study_dir / "inductor-cache",
            select=(self.config.metric, self.config.direction),
            on_memory=lambda peak, total: _record_memory(ctx, peak, total),
        )
        if result.interrupted:
            return Outcome(handed_on=True)
        ctx.checkpoint.unlink(missing_ok=True)
        if result.full_validation:
            ctx.record.set_full_validation(result.full_validation, self.config.metric, self.config.direction)
        return Outcome(value=(ctx.record.best or {}).get(self.config.metric))


def _record_memory(ctx: TrialContext, peak: int, total: int) -> None:
    """The GPU's figures, which only the engine (where torch is) can read: the runner records the process's
    RSS where they are missing (worker/resources.py)."""
    ctx.record.peak_memory_bytes, ctx.record.device_memory_bytes = peak, total
