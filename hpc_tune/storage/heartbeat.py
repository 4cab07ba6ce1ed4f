"""Our own heartbeat thread for ask/tell workers.

Optuna beats only inside ``study.optimize()``; with ask/tell a SIGKILLed worker's trial stays RUNNING forever
(measured). This thread calls ``storage.record_heartbeat`` and survives database blips: a heartbeat that
dies on one network hiccup would let other workers fail a healthy trial.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import optuna

from hpc_tune.storage import optuna_adapter as adapter

log = logging.getLogger(__name__)


class TrialHeartbeat:
    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int, interval: float) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0
        self._last_ok = True

    @staticmethod
    def enabled(storage: optuna.storages.BaseStorage) -> bool:
        return adapter.heartbeat_enabled(storage)

    def _beat(self) -> bool:
        assert isinstance(self._storage, adapter.BaseHeartbeat)
        try:
            self._storage.record_heartbeat(self._trial_id)
        except Exception as exc:  # keep beating: the next beat may well get through
            self.failures += 1
            log.warning("heartbeat for trial id %s failed (%s); retrying", self._trial_id, type(exc).__name__)
            return False
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._interval if self._last_ok else min(1.0, self._interval)):
            self._last_ok = self._beat()

    def __enter__(self) -> TrialHeartbeat:
        if self.enabled(self._storage):
            # The first beat in this thread, on the worker's idle pooled connection: a trial without any
            # beat is never found stale, and a beat from the new thread would race the trial's first
            # storage calls for that connection and open an overflow one.
            self._last_ok = self._beat()
            self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self._trial_id}", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._interval + 5)
