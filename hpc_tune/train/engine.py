"""fit(): train and validate one trial, epoch by epoch, with a per-epoch callback for reporting and pruning.

The engine knows nothing about Optuna: the worker's ``on_epoch`` reports the record and raises its own pruning
exception, which passes through here after device memory has been released.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hpc_tune.config import TrainConfig
from hpc_tune.errors import NonFiniteLoss, OutOfMemory
from hpc_tune.tasks.base import TaskParts
from hpc_tune.train.batch_probe import BatchPlan, plan_for_device
from hpc_tune.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from hpc_tune.train.data import Batches, in_memory_tensors
from hpc_tune.train.device import (
    free_memory,
    is_oom,
    keep_freed_host_memory,
    loader_settings,
    resolve_device,
    synchronize,
)
from hpc_tune.train.evaluate import Evaluator, use_compile_cache
from hpc_tune.train.faults import Fault
from hpc_tune.train.precision import (
    PrecisionPolicy,
    autocast,
    device_caps,
    make_grad_scaler,
    resolve_precision,
)
from hpc_tune.train.schedule import build_scheduler

log = logging.getLogger(__name__)

EpochRecord = dict[str, float | int]

# A finite-loss check needs a device→host sync; every N steps (and at each epoch end) costs nothing measurable
# and still stops a diverged trial long before the epoch is over on large datasets.
NONFINITE_CHECK_EVERY = 32


@dataclass
class FitResult:
    records: list[EpochRecord]  # every epoch of the trial exactly once, restored ones included
    epochs_run: int  # len(records): epochs completed by this trial over all its runs
    interrupted: bool  # stop_requested() was true: a checkpoint holds the state after the last record
    # When epochs validate on a subset (train.val_fraction, max_val_batches): the whole validation set's
    # results for the last epoch's weights ("of": "final") and, when another epoch's subset value was better,
    # for that epoch's weights ("of": "best"). A trial's value is taken from these, never from a subset.
    full_validation: list[EpochRecord] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _uses_conv2d(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def _memory_format(model: torch.nn.Module, device: torch.device) -> torch.memory_format | None:
    """channels_last (NHWC) for conv models on every device: cuDNN's tensor-core kernels want it, and on the
    2-core CPU measured here oneDNN ran the shapes CNN 1.5x faster in training and 2x in eval with it."""
    return torch.channels_last if _uses_conv2d(model) else None


def _sample(dataset: torch.utils.data.Dataset, n: int = 64) -> tuple[Tensor, Tensor] | None:
    tensors = in_memory_tensors(dataset)
    if tensors is not None:
        return tensors[0][:n], tensors[1][:n]
    try:
        items = [dataset[i] for i in range(min(n, len(dataset)))]  # type: ignore[arg-type]
        return torch.stack([torch.as_tensor(a) for a, _ in items]), torch.as_tensor([b for _, b in items])
    except Exception:  # noqa: BLE001 - an odd dataset only loses the batch probe, not the trial
        return None


def fit(
    parts: TaskParts,
    *,
    epochs: int,
    options: TrainConfig,
    on_epoch: Callable[[EpochRecord], None],
    checkpoint_path: Path | None = None,
    resume: bool = False,
    stop_requested: Callable[[], bool] | None = None,
    faults: Sequence[Fault] = (),
    compile_cache_dir: Path | None = None,
    select: tuple[str, str] | None = None,
    on_memory: Callable[[int, int], None] | None = None,
) -> FitResult:
    """Train ``parts.model`` for ``epochs`` (the epochs this trial runs, which is also the schedule's T_max).

    ``on_memory(peak, total)``: on CUDA, told once at the end (pruned, failed or not) the most memory the
    trial's training and validation reserved (the batch probe's tries excluded) and the GPU's total: what
    decides how many trials can share it (``slurm.trials_per_gpu: auto``).

    ``select`` = (metric, direction) names the best epoch when epochs validate on a subset: its weights are
    kept (in host memory and in checkpoints) and validated on the whole set at the end (``full_validation``).

    Raises NonFiniteLoss / OutOfMemory (both TrialAbort) for the worker to record as the trial's reason; any
    exception from ``on_epoch`` propagates unchanged. Seeding comes from ``options.seed``: pass
    ``options.model_copy(update={"seed": s})`` for reruns with other seeds.
    """
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    run = _Run(
        parts,
        epochs=epochs,
        options=options,
        faults=faults,
        compile_cache_dir=compile_cache_dir,
        select=select,
    )
    oom_detail: str | None = None
    try:
        return run.loop(on_epoch, checkpoint_path, resume, stop_requested)
    except Exception as exc:
        if not is_oom(exc):
            raise
        oom_detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    finally:
        if on_memory is not None and run.device.type == "cuda":
            on_memory(*run.memory_used())
        run.release()
    # Raised outside the except block so that the OOM's traceback (holding the activations) is already gone.
    raise OutOfMemory(oom_detail)


class _BestEpoch:
    """Reduced validation (``val_fraction``, ``max_val_batches``): the subset picks the best epoch, whose
    weights are kept in host memory (and in checkpoints), and the whole set then measures it and the last
    epoch's weights."""

    def __init__(self, select: tuple[str, str] | None) -> None:
        self.select = select
        self.best: tuple[int, float, dict[str, Tensor]] | None = None  # (epoch, subset value, weights)

    def keep_if_best(self, record: EpochRecord, model: torch.nn.Module, evaluator: Evaluator) -> None:
        if self.select is None or not evaluator.subset:
            return
        metric, direction = self.select
        value = record.get(metric)
        if value is None or not math.isfinite(float(value)):
            return
        if self.best is not None:
            kept = self.best[1]
            if (float(value) <= kept) if direction == "maximize" else (float(value) >= kept):
                return
        weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.best = (int(record["epoch"]), float(value), weights)

    def validate_fully(self, model: torch.nn.Module, evaluator: Evaluator, epochs: int) -> list[EpochRecord]:
        if not evaluator.subset:
            return []
        out = [_full_record(evaluator, epochs, "final")]
        if self.best is not None and self.best[0] != epochs:
            model.load_state_dict(self.best[2])
            out.append(_full_record(evaluator, self.best[0], "best"))
        return out


def _full_record(evaluator: Evaluator, epoch: int, of: str) -> EpochRecord:
    result = evaluator(full=True)
    return {"epoch": epoch, "of": of, "val_loss": result.loss, **result.metrics, "val_samples": result.n}


def _inject(loss: Tensor, active: list[Fault]) -> Tensor:
    """Test-only faults (see faults.py): they feed the REAL nan/OOM handling, not a shortcut."""
    for fault in active:
        if fault.kind == "nan":
            loss = loss * float("nan")
        elif fault.kind == "oom":
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory (simulated by HPCTUNE_FAULT=oom@{fault.epoch})"
            )
    return loss


def _batch_plan(
    model: torch.nn.Module,
    parts: TaskParts,
    device: torch.device,
    precision: PrecisionPolicy,
    options: TrainConfig,
    cache_dir: Path | None,
) -> BatchPlan:
    """The batch probe's plan (CUDA): the micro-batch that fits and the eval batch; on CPU, as requested."""
    plan = plan_for_device(
        model,
        parts.loss_fn,
        _sample(parts.train_set) if device.type == "cuda" else None,
        requested=parts.batch_size,
        eval_requested=parts.batch_size * options.eval_batch_multiplier,
        device=device,
        policy=precision,
        grad_accum=options.grad_accum,
        memory_fraction=options.memory_fraction,
        cache_dir=cache_dir,
    )
    if plan.accum_steps > 1:
        log.info(
            "batch %d as %d x %d (gradient accumulation)",
            plan.train_batch,
            plan.accum_steps,
            plan.micro_batch,
        )
    return plan


def _finite(loss_sum: Tensor, epoch: int) -> float:
    value = float(loss_sum)
    if not math.isfinite(value):
        raise NonFiniteLoss(f"train loss is {value} in epoch {epoch}")
    return value


class _Run:
    """One trial's training state; split from fit() so that release() can always drop every device tensor."""

    def __init__(
        self,
        parts: TaskParts,
        *,
        epochs: int,
        options: TrainConfig,
        faults: Sequence[Fault],
        compile_cache_dir: Path | None,
        select: tuple[str, str] | None = None,
    ) -> None:
        self.parts = parts
        self.best_epoch = _BestEpoch(select)
        self.epochs = epochs
        self.options = options
        self.faults = list(faults)
        self.compile_cache_dir = compile_cache_dir
        self.device = resolve_device(options.device)
        seed_everything(options.seed)
        self.shuffle = torch.Generator().manual_seed(options.seed)
        self.precision = resolve_precision(options.amp, device_caps(self.device))
        if self.device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(options.memory_fraction, self.device)
        else:
            keep_freed_host_memory()  # training's activations and gradients are reused, not faulted in again
        self.memory_format = _memory_format(parts.model, self.device)
        self.model = parts.model.to(self.device)
        if self.memory_format is not None:
            self.model = self.model.to(memory_format=self.memory_format)
        self.plan = _batch_plan(self.model, parts, self.device, self.precision, options, compile_cache_dir)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # the probe's largest tries are not the trial's
        loader_kwargs = loader_settings(self.device, options.num_workers)
        self.train_batches = Batches(
            parts.train_set,
            batch_size=self.plan.train_batch,
            device=self.device,
            shuffle=True,
            generator=self.shuffle,
            loader_kwargs=loader_kwargs,
            memory_format=self.memory_format,
        )
        self.optimizer = parts.make_optimizer(self.model.parameters())
        self.scheduler, self.schedule_plan = build_scheduler(
            self.optimizer, options.schedule, epochs=epochs, steps_per_epoch=len(self.train_batches)
        )
        self.scaler = make_grad_scaler(self.device, self.precision)
        use_compile_cache(compile_cache_dir)
        self.evaluator = Evaluator(
            self.model,
            parts.val_set,
            parts.loss_fn,
            parts.metrics,
            batch_size=self.plan.eval_batch,
            device=self.device,
            precision=self.precision,
            max_batches=options.max_val_batches,
            fraction=options.val_fraction,
            compile=options.compile,
            loader_kwargs=loader_kwargs,
            memory_format=self.memory_format,
        )

    # -- the loop -------------------------------------------------------------------------------------------

    def loop(
        self,
        on_epoch: Callable[[EpochRecord], None],
        checkpoint_path: Path | None,
        resume: bool,
        stop_requested: Callable[[], bool] | None,
    ) -> FitResult:
        records: list[EpochRecord] = []
        first = 1
        if resume and checkpoint_path is not None and Path(checkpoint_path).is_file():
            records = self.restore(Path(checkpoint_path))
            first = len(records) + 1
            log.info("resumed from %s after epoch %d", checkpoint_path, first - 1)
        for epoch in range(first, self.epochs + 1):
            record = self.run_epoch(epoch)
            records.append(record)
            self.best_epoch.keep_if_best(record, self.model, self.evaluator)
            on_epoch(record)
            if epoch < self.epochs and stop_requested is not None and stop_requested():
                if checkpoint_path is None:
                    log.warning("stop requested but no checkpoint_path: the trial cannot be resumed")
                else:
                    self.save(Path(checkpoint_path), records)
                return FitResult(records, len(records), interrupted=True)
        full = self.best_epoch.validate_fully(self.model, self.evaluator, self.epochs)
        return FitResult(records, len(records), interrupted=False, full_validation=full)

    def run_epoch(self, epoch: int) -> EpochRecord:
        start = time.perf_counter()
        self.model.train()
        active = [f for f in self.faults if f.fires_at(epoch)]
        loss_sum = torch.zeros((), device=self.device)
        n_seen = 0
        lr = self.optimizer.param_groups[0]["lr"]
        for step, (x, y) in enumerate(self.train_batches):
            lr = self.optimizer.param_groups[0]["lr"]
            loss_sum += self.train_step(x, y, first_step=step == 0, active=active)
            n_seen += y.shape[0]
            if (step + 1) % NONFINITE_CHECK_EVERY == 0:
                _finite(loss_sum, epoch)
        for fault in active:
            if fault.kind == "sleep":
                time.sleep(fault.seconds)
        train_loss = _finite(loss_sum, epoch) / max(n_seen, 1)
        synchronize(self.device)
        train_seconds = time.perf_counter() - start
        result = self.evaluator()
        record: EpochRecord = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": result.loss,
            **result.metrics,
            "lr": lr,
            "epoch_time_s": time.perf_counter() - start,
            "train_samples_per_s": n_seen / train_seconds if train_seconds > 0 else 0.0,
            "eval_samples_per_s": result.samples_per_s,
        }
        return record

    def train_step(self, x: Tensor, y: Tensor, *, first_step: bool, active: list[Fault]) -> Tensor:
        """One optimizer step over an effective batch, as ``accum_steps`` micro-batches; returns loss SUM."""
        self.optimizer.zero_grad(set_to_none=True)
        n = y.shape[0]
        total = torch.zeros((), device=self.device)
        for xs, ys in zip(x.split(self.plan.micro_batch), y.split(self.plan.micro_batch), strict=True):
            with autocast(self.device, self.precision):
                loss = self.parts.loss_fn(self.model(xs), ys)
            if first_step:
                loss = _inject(loss, active)
            # Weight each micro-batch by its share so the gradient equals the full batch's mean-loss gradient.
            self.scaler.scale(loss * (ys.shape[0] / n)).backward()
            total += loss.detach().float() * ys.shape[0]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return total

    # -- checkpoints ----------------------------------------------------------------------------------------

    def save(self, path: Path, records: list[EpochRecord]) -> None:
        save_checkpoint(
            path,
            {
                "epoch": len(records),
                "epochs": self.epochs,
                "records": records,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": capture_rng(self.shuffle),
                "best": self.best_epoch.best,
            },
        )

    def restore(self, path: Path) -> list[EpochRecord]:
        state: dict[str, Any] = load_checkpoint(path)
        if state["epochs"] != self.epochs:
            log.warning(
                "checkpoint planned %d epochs, this run %d: the schedule continues from the checkpoint",
                state["epochs"],
                self.epochs,
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"], self.shuffle)
        self.best_epoch.best = state.get("best")
        return [dict(r) for r in state["records"]]

    def memory_used(self) -> tuple[int, int]:
        """(peak reserved, total) bytes of this run's GPU: reserved, not allocated, since the allocator's
        cached blocks are memory no other process on the GPU can have."""
        total = torch.cuda.get_device_properties(self.device).total_memory
        return int(torch.cuda.max_memory_reserved(self.device)), int(total)

    def release(self) -> None:
        """Drop every device tensor this run holds, then return cached blocks to the driver: the next trial in
        this worker (or the worker's OOM retry) must not inherit a fragmented allocator."""
        self.evaluator.release()
        self.train_batches.release()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer.state.clear()
        free_memory()
