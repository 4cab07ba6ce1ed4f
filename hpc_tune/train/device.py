"""Device choice and the device-dependent knobs (DataLoader settings, memory clean-up, OOM detection)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import os
import platform
from typing import Any, Literal

import torch

log = logging.getLogger(__name__)


def resolve_device(setting: Literal["auto", "cpu", "cuda"]) -> torch.device:
    """``auto`` takes the GPU when there is one; an explicit ``cuda`` without one is an error, not CPU."""
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from hpc_tune.errors import ConfigError

            raise ConfigError("train.device is cuda but no CUDA device is visible", "train.device")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def loader_settings(device: torch.device, num_workers: Literal["auto"] | int) -> dict[str, Any]:
    """DataLoader keyword arguments for a dataset that must be read sample by sample.

    On CUDA, workers overlap decoding with GPU work and pinned memory makes host→device copies asynchronous;
    persistent workers avoid re-forking every epoch. On CPU the workers would compete with the compute threads
    for the same cores, so ``auto`` uses none (in-memory tensors never reach a DataLoader at all).
    """
    if num_workers == "auto":
        workers = min(8, max(1, (os.cpu_count() or 2) // 2)) if device.type == "cuda" else 0
    else:
        workers = int(num_workers)
    settings: dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        settings["persistent_workers"] = True
        settings["prefetch_factor"] = 4
    return settings


# glibc's mallopt parameters (malloc.h) and the values set: allocations up to 32 MiB (glibc's largest mmap
# threshold on 64-bit) come from the heap, and up to 1 GiB of freed heap stays with the process.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 2**20
_TRIM_THRESHOLD = 2**30
_host_memory_kept: bool | None = None


def keep_freed_host_memory() -> bool:
    """Let this process keep the CPU memory it frees, as CUDA's caching allocator does on a GPU.

    PyTorch allocates CPU tensors with glibc's malloc, which serves blocks of a few MiB (a CNN's activations)
    with mmap and hands them back to the OS when freed, or trims them off the heap. Every validation then
    page-faults its activations in again: measured on the shapes CNN at batch 256, 4,300 to 13,800 page
    faults and up to twice the time per eval pass. Whether it happens depends on malloc's adaptive threshold,
    so the same benchmark measured 2.3x in one run and 1.0x in the next. Fixed thresholds keep freed blocks
    for reuse. The cost is that the process holds on to its peak heap, which a worker running trial after
    trial reaches anyway. Only glibc has these knobs; elsewhere nothing changes. Returns whether the
    thresholds are set.
    """
    global _host_memory_kept
    if _host_memory_kept is None:
        _host_memory_kept = False
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _host_memory_kept = bool(
                    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
                    and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
                )
            except (OSError, AttributeError) as exc:
                log.debug("malloc thresholds left as they are: %s", exc)
    return _host_memory_kept


def is_oom(exc: BaseException) -> bool:
    """CUDA OOM arrives as OutOfMemoryError, or as a plain RuntimeError from some kernels and older paths."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory() -> None:
    """Give cached GPU blocks back so that the NEXT trial in this worker starts with a clean allocator.

    CPU tensors are freed by reference counting as soon as the trial's objects go; a full gc.collect() there
    costs ~0.2 s per trial for nothing, so it runs only when there is a GPU allocator to clean.
    """
    if torch.cuda.is_available():
        gc.collect()  # reference cycles (e.g. an exception's traceback) may still hold CUDA tensors
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def synchronize(device: torch.device) -> None:
    """Timings of asynchronous CUDA work are meaningless without a sync."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
