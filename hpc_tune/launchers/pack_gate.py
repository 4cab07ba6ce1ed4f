"""One change of an array task's worker count (``trials_per_gpu: auto``): the gate its new workers wait at.

The new size's workers start while the previous ones still run, so that their start-up (the interpreter, the
imports, opening the study: seconds) is not spent with the devices idle; they wait at a gate, the read end of
a pipe whose write end only the supervisor holds, until the previous workers have exited (closing it opens the
gate: worker/resources.py). On GPUs the previous workers go on taking trials until every new one has written
its pid to a second pipe (ready); on a CPU task they end after their trial at once, as the start-up needs the
cores the trials run on, and a trial whose threads compete with it loses more than the start-up gains
(measured: docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection

from hpc_tune.worker.resources import PACK_GATE_ENV, PACK_READY_ENV


class SizeChange:
    """The pipes and pids of one size change, from the resize until the gate opens (``close``)."""

    def __init__(self, previous: Collection[int], *, wait_for_ready: bool) -> None:
        self.previous = set(previous)  # the pids of the size being replaced
        self.gate = os.pipe()
        self.ready: tuple[int, int] | None = None  # until every new worker has said it is ready
        self.ready_pids: set[int] = set()
        if wait_for_ready:
            self.ready = os.pipe()
            os.set_blocking(self.ready[0], False)

    def for_worker(self) -> tuple[dict[str, str], tuple[int, ...]]:
        """What a new worker's environment adds, and the file descriptors it inherits."""
        env, fds = {PACK_GATE_ENV: str(self.gate[0])}, (self.gate[0],)
        if self.ready is not None:
            env[PACK_READY_ENV] = str(self.ready[1])
            fds += (self.ready[1],)
        return env, fds

    def all_ready(self, running: Collection[int]) -> bool:
        """Whether every new worker still ``running`` has said it is ready (then the ready pipe is closed)."""
        if self.ready is None:
            return True
        with contextlib.suppress(OSError):  # BlockingIOError: nothing more to read now
            while chunk := os.read(self.ready[0], 4096):
                self.ready_pids |= {int(p) for p in chunk.split() if p.isdigit()}
        if set(running) - self.previous - self.ready_pids:
            return False
        _close(self.ready)
        self.ready = None
        return True

    def close(self) -> None:
        """Open the gate: the new workers go on (and stop waiting for news of their readiness)."""
        _close(self.ready)
        _close(self.gate)
        self.ready = None


def _close(fds: tuple[int, int] | None) -> None:
    for fd in fds or ():
        with contextlib.suppress(OSError):
            os.close(fd)
