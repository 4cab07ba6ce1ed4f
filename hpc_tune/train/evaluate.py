"""Validation, as fast as the device allows without changing the numbers beyond float rounding.

- ``torch.inference_mode`` (no autograd bookkeeping at all, cheaper than ``no_grad``);
- eval batch = train batch × ``eval_batch_multiplier`` (no activations are kept, so a larger batch fits);
- pre-collated in-memory tensors kept on the device (see data.py);
- when the step runs eagerly, each BatchNorm folded into the convolution before it and each ReLU moved
  after the max-pool that follows it (eval_graph.py; float rounding only, checked on the first batch);
- on a CPU, freed activations kept by the process instead of being handed back to the OS (device.py);
- loss and metric sums accumulated on the device, read back ONCE per evaluation (one sync, not one per batch);
- an optional ``torch.compile``d eval step, shared compile cache per study, and a logged fallback to eager
  whenever compilation is disabled or fails — never a crashed trial because of the compiler.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from hpc_tune.train.data import Batches
from hpc_tune.train.device import is_oom, keep_freed_host_memory, synchronize
from hpc_tune.train.eval_graph import EvalGraph, build_eval_graph
from hpc_tune.train.precision import PrecisionPolicy, autocast

log = logging.getLogger(__name__)

CompileSetting = Literal["auto", "on", "off"]

# Measured in benchmarks/eval_speed.py on a 2-core CPU (docs/benchmarks.md, "Eval speed"):
# compiling did not pay for itself on CPU, so ``auto`` compiles only on CUDA. See docs/design-notes.md.
COMPILE_ON_CPU_BY_DEFAULT = False

_warned: set[str] = set()


def _warn_once(key: str, message: str, *args: object) -> None:
    # One line per cause per process: a study of 500 trials must not print 500 identical fallback warnings.
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def should_compile(setting: CompileSetting, device: torch.device) -> bool:
    if setting == "off":
        return False
    if setting == "on":
        return True
    return device.type == "cuda" or COMPILE_ON_CPU_BY_DEFAULT


def compile_mode(device: torch.device) -> str:
    """CUDA: CUDA graphs remove the per-kernel launch cost that dominates small eval batches; CPU: the default
    mode (no CUDA graphs exist, and max-autotune's search costs minutes for a few percent)."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def use_compile_cache(cache_dir: Path | None) -> None:
    """Point Inductor (and Triton, which nests its cache under it) at the study's shared directory, so
    that the first trial compiles and every later trial of the study - in any worker - loads the result."""
    if cache_dir is None:
        return
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_dir.resolve())


@dataclass
class EvalResult:
    loss: float
    metrics: dict[str, float]
    n: int
    seconds: float

    @property
    def samples_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("inf")


# The first batch's outputs of the model and of its eval graph may differ by this share of their largest
# magnitude (TF32 convolutions on a GPU round at ~1e-3); a wrong rewrite is off by the outputs' own order.
GRAPH_TOLERANCE = 1e-2


def _make_step(
    model: Callable[[Tensor], Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    metric_fns: tuple[Callable[[Tensor, Tensor], Tensor], ...],
) -> Callable[[Tensor, Tensor], Tensor]:
    def eval_step(x: Tensor, y: Tensor) -> Tensor:
        out = model(x)
        # loss_fn is a batch mean; × n makes it a sum so that uneven batches weigh exactly by their size.
        sums = [loss_fn(out.float(), y) * y.shape[0]]
        sums += [fn(out, y).float() for fn in metric_fns]
        return torch.stack(sums)

    return eval_step


class EvalStep:
    """A compiled eval step that turns itself into the eager one on the first compiler error."""

    def __init__(self, eager: Callable[[Tensor, Tensor], Tensor], compile_it: bool, mode: str) -> None:
        self.eager = eager
        self.compiled: Callable[[Tensor, Tensor], Tensor] | None = None
        if compile_it:
            try:
                # dynamic=False: one static graph for the full batch; the ragged last batch runs eagerly
                # instead of triggering a second (dynamic-shape) compilation.
                self.compiled = torch.compile(eager, mode=mode, dynamic=False)
            except Exception as exc:  # noqa: BLE001 - any compiler problem means "run eagerly"
                _warn_once(
                    f"create:{type(exc).__name__}",
                    "torch.compile unavailable (%s: %s); evaluating eagerly",
                    type(exc).__name__,
                    exc,
                )
        self.full_batch: int | None = None

    @property
    def is_compiled(self) -> bool:
        return self.compiled is not None

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        if self.compiled is None:
            return self.eager(x, y)
        if self.full_batch is None:
            self.full_batch = x.shape[0]
        if x.shape[0] != self.full_batch:
            return self.eager(x, y)
        try:
            return self.compiled(x, y)
        except Exception as exc:
            if is_oom(exc):
                raise
            _warn_once(
                f"run:{type(exc).__name__}",
                "compiled eval failed (%s: %s); falling back to eager",
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            self.compiled = None
            return self.eager(x, y)


class Evaluator:
    """Evaluates ``model`` on a fixed validation set; build once per trial, call once per epoch."""

    def __init__(
        self,
        model: nn.Module,
        val_set: Dataset,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        metrics: Mapping[str, Callable[[Tensor, Tensor], Tensor]],
        *,
        batch_size: int,
        device: torch.device,
        precision: PrecisionPolicy | None = None,
        max_batches: int | None = None,
        fraction: float = 1.0,
        compile: CompileSetting = "auto",
        loader_kwargs: dict[str, object] | None = None,
        memory_format: torch.memory_format | None = None,
        rewrite: bool = True,
    ) -> None:
        """``rewrite=False`` evaluates the model as written, never its eval graph (the benchmark's ablation
        and the tests)."""
        self.model = model
        self.device = device
        if device.type == "cpu":
            keep_freed_host_memory()
        self.precision = precision or PrecisionPolicy(None, False)
        self.metric_names = tuple(metrics)
        size = len(val_set)  # type: ignore[arg-type]
        limit = min(size, math.ceil(fraction * size))
        if max_batches is not None:
            limit = min(limit, max_batches * batch_size)
        self._batches_of = functools.partial(
            Batches,
            val_set,
            batch_size=batch_size,
            device=device,
            shuffle=False,
            loader_kwargs=dict(loader_kwargs or {}),
            memory_format=memory_format,
        )
        # Every epoch validates on ``batches``; a subset one when the validation is reduced, and then the
        # whole set is only built (and held on the device) for the full validations at the end.
        self.batches = self._batches_of(limit=limit if limit < size else None)
        self.subset = limit < size
        self._full: Batches | None = None
        compile_it = should_compile(compile, device)
        # Inductor rewrites the graph itself; the eager step gets eval_graph's rewrites.
        self.graph: EvalGraph | None = build_eval_graph(model) if rewrite and not compile_it else None
        self._graph_checked = False
        self._model_step = _make_step(model, loss_fn, tuple(metrics.values()))
        self.step = EvalStep(
            _make_step(self.graph, loss_fn, tuple(metrics.values())) if self.graph else self._model_step,
            compile_it,
            compile_mode(device),
        )

    def _check_graph(self, x: Tensor) -> None:
        """Once per trial: the eval graph must give the model's outputs, or the model runs as written."""
        self._graph_checked = True
        assert self.graph is not None
        try:
            with torch.autocast(self.device.type, enabled=False):
                expected, got = self.model(x), self.graph(x)
            same = isinstance(expected, Tensor) and isinstance(got, Tensor) and expected.shape == got.shape
            if same:
                expected, got = expected.float(), got.float()
                finite = expected[torch.isfinite(expected)]
                scale = float(finite.abs().max()) if finite.numel() else 1.0
                # rtol 0: the bound is relative to the largest output, not to each (possibly tiny) one.
                same = torch.allclose(got, expected, rtol=0.0, atol=GRAPH_TOLERANCE * scale, equal_nan=True)
        except Exception as exc:
            if is_oom(exc):
                raise
            same = False  # the graph cannot even run what the model runs
        if not same:
            _warn_once(
                "eval_graph",
                "the rewritten eval graph changed this model's outputs beyond rounding; validating the model "
                "as written",
            )
            self.graph = None
            self.step = EvalStep(self._model_step, False, compile_mode(self.device))

    def __call__(self, full: bool = False) -> EvalResult:
        """This epoch's validation; ``full``: on the whole validation set even when epochs use a subset."""
        batches = self.batches
        if full and self.subset:
            if self._full is None:
                self._full = self._batches_of(limit=None)
            batches = self._full
        was_training = self.model.training
        self.model.eval()
        synchronize(self.device)
        start = time.perf_counter()
        total: Tensor | None = None
        try:
            if self.graph is not None:
                self.graph.refresh()  # this epoch's weights and running statistics
            with torch.inference_mode(), autocast(self.device, self.precision):
                for x, y in batches:
                    if self.graph is not None and not self._graph_checked:
                        self._check_graph(x)
                    sums = self.step(x, y)
                    total = sums if total is None else total + sums
            values = total.tolist() if total is not None else [0.0] * (1 + len(self.metric_names))
        finally:
            self.model.train(was_training)
        seconds = time.perf_counter() - start
        n = max(batches.n, 1)
        return EvalResult(
            loss=values[0] / n,
            metrics={name: v / n for name, v in zip(self.metric_names, values[1:], strict=True)},
            n=batches.n,
            seconds=seconds,
        )

    def release(self) -> None:
        self.graph = None
        self.batches.release()
        if self._full is not None:
            self._full.release()
        if self.step.compiled is not None:
            self.step.compiled = None
            # Every trial compiles a new model instance through the same eval_step code object; without a
            # reset dynamo hits its recompile limit after a few trials and silently runs eagerly (and CUDA
            # graph pools of old trials would stay allocated). One trial at a time per worker makes the
            # reset safe.
            torch.compiler.reset()


def naive_evaluate(
    model: nn.Module,
    val_set: Dataset,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    metrics: Mapping[str, Callable[[Tensor, Tensor], Tensor]],
    batch_size: int,
    device: torch.device | None = None,
) -> EvalResult:
    """The reference loop a typical script runs (eager, no_grad, DataLoader, train batch size, a .item() per
    batch). Kept as the ground truth for tests and the baseline of the eval benchmark."""
    device = device or torch.device("cpu")
    loader = torch.utils.data.DataLoader(val_set, batch_size=batch_size, shuffle=False)
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    loss_sum, n = 0.0, 0
    metric_sums = dict.fromkeys(metrics, 0.0)
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x)
            loss_sum += loss_fn(out, y).item() * y.shape[0]
            for name, fn in metrics.items():
                metric_sums[name] += fn(out, y).item()
            n += y.shape[0]
    model.train(was_training)
    seconds = time.perf_counter() - start
    return EvalResult(loss_sum / n, {k: v / n for k, v in metric_sums.items()}, n, seconds)
