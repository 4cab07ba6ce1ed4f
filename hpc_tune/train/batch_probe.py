"""The largest train and eval batch that fit on the GPU, and the gradient accumulation that keeps the
requested (effective) batch when the safe batch is smaller.

On CUDA the search runs real forward/backward (train) and forward (eval) passes under the process's memory
fraction: first the requested batch (the common case costs one probe), then doubling from 1 until a batch does
not fit, then bisection between the last fit and the first failure. Results are cached per study and model
signature in a JSON file, so the 2nd..Nth trial of the same shape pays nothing. On CPU there is no memory
cliff worth probing for: the configured batch is used as is.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from hpc_tune.errors import OutOfMemory
from hpc_tune.train.device import free_memory, is_oom, synchronize
from hpc_tune.train.precision import PrecisionPolicy, autocast

CACHE_FILE = "batch_probe.json"


@dataclass(frozen=True)
class BatchPlan:
    train_batch: int  # effective batch per optimizer step: never changed by the engine
    micro_batch: int  # what one forward/backward sees
    accum_steps: int
    eval_batch: int
    probed: bool = False


def largest_fitting(fits: Callable[[int], bool], *, limit: int, start: int = 1) -> int:
    """Largest b in [1, limit] with fits(b), assuming fits is monotone; 0 when not even ``start`` fits."""
    if limit < 1:
        raise ValueError("limit must be >= 1")
    if fits(limit):
        return limit
    good, bad = 0, limit
    b = min(start, limit)
    while b < bad:
        if not fits(b):
            bad = b
            break
        good = b
        b *= 2
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


def plan_batches(
    requested: int,
    eval_requested: int,
    *,
    safe_train: int | None = None,
    safe_eval: int | None = None,
    grad_accum: Literal["auto"] | int = "auto",
) -> BatchPlan:
    """Split ``requested`` into ``accum_steps`` micro-batches no larger than ``safe_train``.

    An explicit ``grad_accum`` >= 2 is honoured (or raised if the micro-batch would still not fit).
    """
    accum = 1
    if isinstance(grad_accum, int) and grad_accum >= 2:
        accum = min(grad_accum, requested)
    if safe_train is not None and safe_train >= 1:
        accum = max(accum, math.ceil(requested / safe_train))
    micro = math.ceil(requested / accum)
    eval_batch = eval_requested if safe_eval is None or safe_eval < 1 else min(eval_requested, safe_eval)
    probed = safe_train is not None or safe_eval is not None
    return BatchPlan(requested, micro, accum, eval_batch, probed)


def model_signature(
    model: nn.Module, sample_x: Tensor, policy: PrecisionPolicy, device: torch.device, memory_fraction: float
) -> str:
    """Two trials with equal signatures have the same memory footprint per sample."""
    parts = [
        type(model).__qualname__,
        policy.name,
        f"{memory_fraction:.3f}",
        str(tuple(sample_x.shape[1:])),
        str(sample_x.dtype),
    ]
    parts += [f"{name}:{tuple(p.shape)}:{p.dtype}" for name, p in model.named_parameters()]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        parts += [props.name, str(props.total_memory)]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def read_cache(cache_dir: Path | None, key: str) -> dict[str, int] | None:
    if cache_dir is None:
        return None
    try:
        entry = json.loads((Path(cache_dir) / CACHE_FILE).read_text()).get(key)
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) else None


def write_cache(cache_dir: Path | None, key: str, entry: dict[str, int]) -> None:
    if cache_dir is None:
        return
    path = Path(cache_dir) / CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[key] = entry
    # Atomic replace: parallel workers may probe at once; the last writer wins with an equally valid value.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{CACHE_FILE}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _tile(sample: Tensor, b: int, device: torch.device) -> Tensor:
    index = torch.arange(b) % sample.shape[0]
    return sample[index].to(device)


def probe_cuda(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    sample_x: Tensor,
    sample_y: Tensor,
    *,
    device: torch.device,
    policy: PrecisionPolicy,
    train_limit: int,
    eval_limit: int,
) -> tuple[int, int]:
    """(safe train batch, safe eval batch) by real passes; the model must already be on ``device``."""
    optimizer_bytes = 2 * sum(p.numel() * p.element_size() for p in model.parameters())

    def fits_train(b: int) -> bool:
        reserve = x = y = None
        try:
            # Adam keeps two states per parameter, allocated at the first step: reserve them now.
            reserve = torch.empty(optimizer_bytes, dtype=torch.uint8, device=device)
            x, y = _tile(sample_x, b, device), _tile(sample_y, b, device)
            with autocast(device, policy):
                loss = loss_fn(model(x), y)
            loss.backward()
            synchronize(device)
            return True
        except Exception as exc:
            if not is_oom(exc):
                raise
            return False
        finally:
            model.zero_grad(set_to_none=True)
            del reserve, x, y
            free_memory()

    def fits_eval(b: int) -> bool:
        x = y = None
        try:
            with torch.inference_mode(), autocast(device, policy):
                model(_tile(sample_x, b, device))
            synchronize(device)
            return True
        except Exception as exc:
            if not is_oom(exc):
                raise
            return False
        finally:
            del x, y
            free_memory()

    was_training = model.training
    try:
        model.train()
        safe_train = largest_fitting(fits_train, limit=train_limit)
        model.eval()
        safe_eval = largest_fitting(fits_eval, limit=eval_limit)
    finally:
        model.train(was_training)
    if safe_train < 1:
        raise OutOfMemory("not even a batch of 1 fits under train.memory_fraction")
    return safe_train, max(safe_eval, 1)


def plan_for_device(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    sample: tuple[Tensor, Tensor] | None,
    *,
    requested: int,
    eval_requested: int,
    device: torch.device,
    policy: PrecisionPolicy,
    grad_accum: Literal["auto"] | int,
    memory_fraction: float,
    cache_dir: Path | None,
) -> BatchPlan:
    """The engine's entry point: a probe (or cache hit) on CUDA, the configured batches elsewhere."""
    if device.type != "cuda" or sample is None:
        return plan_batches(requested, eval_requested, grad_accum=grad_accum)
    sample_x, sample_y = sample
    key = f"{model_signature(model, sample_x, policy, device, memory_fraction)}:{requested}:{eval_requested}"
    cached = read_cache(cache_dir, key)
    if cached is not None and {"train", "eval"} <= cached.keys():
        safe_train, safe_eval = int(cached["train"]), int(cached["eval"])
    else:
        safe_train, safe_eval = probe_cuda(
            model,
            loss_fn,
            sample_x,
            sample_y,
            device=device,
            policy=policy,
            train_limit=requested,
            eval_limit=eval_requested,
        )
        with contextlib.suppress(OSError):
            write_cache(cache_dir, key, {"train": safe_train, "eval": safe_eval})
    return plan_batches(
        requested, eval_requested, safe_train=safe_train, safe_eval=safe_eval, grad_accum=grad_accum
    )
