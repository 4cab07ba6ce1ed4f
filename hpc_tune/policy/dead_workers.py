"""Trials whose worker cannot finish them itself — killed, cancelled, silent — are failed on its behalf
and re-run with the same parameters (reruns.py), so nothing stays RUNNING and a dead worker costs no budget.

Who calls what: Optuna's heartbeat check (``StaleTrialHandler``, PostgreSQL), the ``run --local`` parent (a
child died by a signal) and the collector of local ``hpc_tune.launch`` workers (``dead_local_workers``),
``hpctune cancel`` (after scancel), and a worker interrupted by SIGTERM/SIGINT. The locked loop over the
RUNNING trials is ``shared_study.fail_running``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Collection
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs
from hpc_tune.policy.reruns import enqueue_rerun
from hpc_tune.storage.records import TrialRecord, now_iso, read_trial_json, trial_path, write_trial

log = logging.getLogger(__name__)


class StaleTrialHandler:
    """Optuna's heartbeat-stale callback: mark the dead trial's JSON, then retry it with the same params.

    Optuna calls it from ``fail_stale_trials`` in whichever worker noticed; that worker holds no study lock
    there, but only the one worker whose ``set_trial_state_values(FAIL)`` succeeded gets the call."""

    def __init__(self, study_dir: Path, max_retry: int) -> None:
        self.study_dir = study_dir
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        mark_trial_json(self.study_dir, trial.number, "FAIL", "heartbeat_stale")
        enqueue_rerun(study, trial, max_retry=self.max_retry, study_dir=self.study_dir)


def mark_trial_json(study_dir: Path, number: int, state: str, reason: str) -> None:
    """Finish the JSON of a trial whose own worker cannot (it was killed): keep its epochs, set the state."""
    data = read_trial_json(trial_path(study_dir, number))
    if data is None:
        return
    record = TrialRecord(**{k: v for k, v in data.items() if k in TrialRecord.__dataclass_fields__})
    record.state, record.reason = state, reason
    record.finished_at = record.finished_at or now_iso()
    try:
        write_trial(study_dir, record)
    except OSError as exc:  # the study in the database is the truth; the JSON only adds detail
        log.warning("cannot mark %s: %s", trial_path(study_dir, number), exc.strerror or exc)


def fail_trial(
    study: optuna.Study,
    storage: BaseStorage,
    trial_id: int,
    reason: str,
    *,
    study_dir: Path,
    max_retry: int,
) -> bool:
    """Fail a RUNNING trial on behalf of a dead or interrupted worker and re-run it; False if finished."""
    try:
        storage.set_trial_user_attr(trial_id, attrs.REASON, reason)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    frozen = storage.get_trial(trial_id)
    mark_trial_json(study_dir, frozen.number, "FAIL", reason)
    enqueue_rerun(study, frozen, max_retry=max_retry, study_dir=study_dir)
    return True


def dead_local_workers(dead_pids: Collection[int] | None = None) -> Callable[[FrozenTrial], bool]:
    """Which trials belong to dead workers of this machine: workers on this host whose pid is in
    ``dead_pids`` (a parent that saw its child die knows), or, without it, whose pid no longer exists (the
    journal store has no heartbeat, and nobody else watches local ``hpc_tune.launch`` workers)."""
    host = socket.gethostname()

    def belongs(trial: FrozenTrial) -> bool:
        worker = attrs.worker_of(trial)
        pid = worker.get("pid")
        if worker.get("host") != host or not isinstance(pid, int):
            return False
        return pid in dead_pids if dead_pids is not None else not _alive(pid)

    return belongs


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True
