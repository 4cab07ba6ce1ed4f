"""One sweep of the learning-rate range test on the engine: the trial's own training step, with a learning
rate that grows every step.

It drives the engine's ``_Run`` rather than a loop of its own, so that the range is measured on what a trial
will run: the device ``train.device`` resolves to, the precision ``train.amp`` gives there (fp32 on CPU), the
batch probe's micro-batches and gradient accumulation on CUDA, channels_last for conv models, the gradient
scaler, and the task's own batch size, loss and optimizer. Only the schedule is replaced. Like ``fit``, it
knows nothing of what the curve means: ``on_step`` gets every (lr, loss) and says whether to go on.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from hpc_tune.config import ScheduleConfig, TrainConfig
from hpc_tune.errors import TaskError
from hpc_tune.tasks.base import TaskParts
from hpc_tune.train.device import is_oom, resolve_device
from hpc_tune.train.engine import _Run


@dataclass(frozen=True)
class SweepInfo:
    """What the sweep ran on, for the result's reader."""

    optimizer: str  # the optimizer's class, e.g. AdamW
    batch_size: int  # the effective batch (the batch probe may have split it into micro-batches)
    device: str
    precision: str


def sweep(
    parts: TaskParts,
    options: TrainConfig,
    lrs: Sequence[float],
    on_step: Callable[[float, float], bool],
    *,
    cache_dir: Path | None = None,
) -> SweepInfo:
    """One optimizer step per learning rate of ``lrs`` (every parameter group gets it), cycling through the
    training data when it has fewer batches, until ``on_step(lr, mean loss)`` returns False.

    ``cache_dir``: where the batch probe keeps what it measured (the study's, so that trials reuse it).
    """
    if len(lrs) < 2 or lrs[0] <= 0:
        raise ValueError("a sweep needs at least two positive learning rates")
    # No schedule of its own, no compiled evaluation and a one-batch validation set: only training runs here.
    quiet = options.model_copy(
        update={
            "schedule": ScheduleConfig(type="none", warmup_epochs=0),
            "compile": "off",
            "max_val_batches": 1,
            "val_fraction": 1.0,
        }
    )
    run: _Run | None = None
    try:
        # The cache is the batch probe's, which only CUDA runs: on CPU nothing is written or exported.
        cache = cache_dir if resolve_device(options.device).type == "cuda" else None
        run = _Run(parts, epochs=1, options=quiet, faults=(), compile_cache_dir=cache)
        if len(run.train_batches) == 0:
            raise TaskError("the training set is empty", "build()")
        for group in run.optimizer.param_groups:
            group["lr"] = group["initial_lr"] = float(lrs[0])
        factors = [lr / lrs[0] for lr in lrs]
        run.scheduler = LambdaLR(run.optimizer, lambda step: factors[min(step, len(factors) - 1)])
        for lr, (x, y) in zip(lrs, _forever(run), strict=False):
            total = run.train_step(x, y, first_step=False, active=[])
            if not on_step(float(lr), float(total) / max(int(y.shape[0]), 1)):
                break
        return SweepInfo(
            type(run.optimizer).__name__, run.plan.train_batch, str(run.device), run.precision.name
        )
    except Exception as exc:
        if not is_oom(exc):
            raise
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    finally:
        if run is not None:
            run.release()
    # Raised outside the except block, as fit() does: the traceback holding the activations is gone by now.
    raise TaskError(f"out of memory in the range test ({detail})", f"batch {parts.batch_size}")


def _forever(run: _Run) -> Iterator[tuple[Tensor, Tensor]]:
    """The training batches, epoch after epoch (each epoch in a new shuffled order)."""
    return itertools.chain.from_iterable(itertools.repeat(run.train_batches))
