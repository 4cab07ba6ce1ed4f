"""The signals a worker acts on, and the one rule that keeps the study consistent under them.

SIGTERM/SIGINT (scancel, Ctrl-C, the end of a time limit) end the worker: its running trial is failed and
re-run, so nothing is left RUNNING. They are raised as :class:`WorkerInterrupted` in the main thread, but
never inside a storage critical section (ask/tell): raising in the middle of ``study.tell()`` could leave a
trial RUNNING that nobody owns, so the signal is noted and raised when the section ends.

SIGUSR2 (``--signal=B:USR2@N``, walltime near) only sets a flag: the engine checkpoints at the next epoch
boundary and the trial is handed on to a continuation.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)


class WorkerInterrupted(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT; BaseException so task code's ``except Exception`` lets
    it through."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)


class SignalGuard:
    def __init__(self) -> None:
        self.walltime = threading.Event()
        self.interrupted_by: int | None = None
        self._critical = 0
        self._previous: dict[int, Any] = {}

    def _interrupt(self, signum: int, frame: FrameType | None) -> None:
        if self._critical == 0:
            raise WorkerInterrupted(signum)
        self.interrupted_by = signum  # raised once, when the critical section ends

    def _walltime(self, signum: int, frame: FrameType | None) -> None:
        log.warning("USR2: walltime near; checkpointing at the next epoch boundary")
        self.walltime.set()

    @contextlib.contextmanager
    def installed(self) -> Iterator[SignalGuard]:
        """Handle the signals while the worker runs (main thread only: Python delivers signals there)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig, handler in (
            (signal.SIGTERM, self._interrupt),
            (signal.SIGINT, self._interrupt),
            (signal.SIGUSR2, self._walltime),
        ):
            self._previous[sig] = signal.signal(sig, handler)
        # A supervisor (launchers/task_pack.py) starts its workers with these blocked, so that one still
        # starting up is not killed by their default action: what came meanwhile is delivered now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self._previous)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A storage critical section: SIGTERM/SIGINT wait until it ends. Only the main thread counts (Python
        runs signal handlers there); the heartbeat thread's calls pass through."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._critical == 0 and self.interrupted_by is not None:
            # Delivered once: the cleanup's own storage calls must not raise it again.
            signum, self.interrupted_by = self.interrupted_by, None
            raise WorkerInterrupted(signum)
