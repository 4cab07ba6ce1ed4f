"""What one worker of a task holds: its share of the task's devices, and the peak memory of its trials.

With ``slurm.trials_per_gpu: N`` a task's GPU(s) run N trials at once, so a trial's GPU-hours are its
duration x GPUs / N: the task bills its GPUs once, not N times. The supervisor (launchers/task_pack.py) tells
its workers N in HPCTUNE_PACK_SIZE, and their slot in HPCTUNE_PACK_SLOT.

A trial's peak memory is recorded in its JSON for ``slurm.trials_per_gpu: auto`` (policy/pack_size.py).

The worker layer must not import torch (a command or objective worker may never need it), so what it can say
itself is the process's peak RSS from ``getrusage``. A GPU's figures come from where torch already is: the
engine kind measures its own device (train/engine.py), and an objective that imported torch and used CUDA is
read through the module it loaded, never by importing it here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any

from hpc_tune.storage.records import TrialRecord

log = logging.getLogger(__name__)

PACK_SLOT_ENV = "HPCTUNE_PACK_SLOT"
PACK_SIZE_ENV = "HPCTUNE_PACK_SIZE"
# For a worker started while the workers of the task's previous size still run: the read end of the pipe it
# waits on, and the write end of the one it says it is ready on (file descriptors).
PACK_GATE_ENV = "HPCTUNE_PACK_GATE"
PACK_READY_ENV = "HPCTUNE_PACK_READY"


def pack_size(environ: Mapping[str, str]) -> int:
    """How many workers share this worker's task (1 unless a supervisor started it)."""
    value = environ.get(PACK_SIZE_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1


def wait_at_pack_gate(environ: Mapping[str, str]) -> bool:
    """Say this worker is ready, then wait until the supervisor opens its gate; whether it had one.

    ``trials_per_gpu: auto`` starts the next size's workers while the previous ones still run, so that the
    new ones' start-up (the interpreter, the imports, opening the study: seconds) does not leave the devices
    idle; the gate opens (the supervisor closes the pipe's other end) once the old ones have exited, so that
    each size is measured alone (when the old ones are told to end: launchers/pack_gate.py). A signal
    meanwhile is handled as usual: SIGTERM raises, and after USR2 the supervisor opens the gate, so that the
    worker sees the walltime before it asks for a trial.
    """
    gate, ready = (environ.get(key, "").strip() for key in (PACK_GATE_ENV, PACK_READY_ENV))
    if not gate.isdigit():
        return False
    try:
        if ready.isdigit():
            with contextlib.suppress(OSError):  # the supervisor is gone: nobody waits for the news
                os.write(int(ready), f"{os.getpid()}\n".encode())
            with contextlib.suppress(OSError):
                os.close(int(ready))
        while os.read(int(gate), 64):
            pass
    except OSError as exc:  # not our pipe (a variable inherited by hand): nothing to wait for
        log.debug("pack gate %s: %s", gate, exc)
    finally:
        with contextlib.suppress(OSError):
            os.close(int(gate))
        for key in (PACK_GATE_ENV, PACK_READY_ENV):  # closed: a trial's own processes have no gate
            os.environ.pop(key, None)
    return True


def shared_devices(devices: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """The task's devices as one worker's trials hold them: with ``shared_by`` when several share them."""
    n = pack_size(environ)
    return devices if n == 1 else {**devices, "shared_by": n}


def process_peak_memory() -> int | None:
    """The peak RSS in bytes of this process or of the largest child it waited for (a command task's
    script runs as one); None where getrusage does not exist."""
    try:
        import resource
    except ImportError:  # not on a POSIX system
        return None
    peak = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    return int(peak) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, KiB on Linux


def _cuda_of_loaded_torch() -> tuple[int, int] | None:
    """(peak reserved, total) of the current CUDA device when the objective's own torch has used CUDA; the
    peak is reset so that the next trial of this worker measures its own."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        if cuda is None or not cuda.is_initialized():
            return None
        device = cuda.current_device()
        peak, total = (
            int(cuda.max_memory_reserved(device)),
            int(cuda.get_device_properties(device).total_memory),
        )
        cuda.reset_peak_memory_stats(device)
    except Exception as exc:  # noqa: BLE001 - a figure for the auto rule is not worth a failed trial
        log.debug("no CUDA memory figures: %s", exc)
        return None
    return peak, total


def fill_peak_memory(record: TrialRecord) -> None:
    """Complete ``record`` with the trial's peak memory unless its kind measured it (the engine on a GPU)."""
    if record.peak_memory_bytes is not None:
        return
    gpu = _cuda_of_loaded_torch()
    if gpu is not None:
        record.peak_memory_bytes, record.device_memory_bytes = gpu
        return
    record.peak_memory_bytes = process_peak_memory()
