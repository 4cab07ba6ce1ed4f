"""The signal guard: SIGTERM/SIGINT never land in the middle of a storage call, they are raised after it.

A signal that landed inside the journal store's file lock left the lock broken and the trial failed with
``exception:FileNotFoundError`` instead of ``interrupted`` (seen once in CI). Here the signal is sent by the
storage call itself, at the worst moment, so the test is deterministic; the storage is a real journal store.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import optuna
import pytest

from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage
from hpc_tune.worker.signals import SignalGuard, WorkerInterrupted


class SignalledMidCall:
    """Forwards to a real storage; ``set_trial_intermediate_value`` first receives SIGINT, then writes."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name != "set_trial_intermediate_value":
            return target

        def interrupted_then_write(*args: Any) -> Any:
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler at the next bytecode
            return target(*args)

        return interrupted_then_write


@pytest.mark.parametrize("guarded", [True, False])
def test_a_signal_during_a_storage_call_is_raised_after_it(tmp_path: Path, guarded: bool) -> None:
    storage = open_store(resolve_storage(None, tmp_path)).storage
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    storage.inner = SignalledMidCall(storage.inner)  # type: ignore[assignment]
    guard = SignalGuard()
    if guarded:
        storage.guard = guard.critical
    with guard.installed(), pytest.raises(WorkerInterrupted):
        trial.report(0.5, 1)
    reported = study.get_trials()[0].intermediate_values
    # Guarded (as every worker's storage is): the call completed before the signal was raised.
    assert reported == ({1: 0.5} if guarded else {})
