"""Trials whose worker cannot finish them itself — killed, cancelled, silent — are failed on its behalf
and re-run with the same parameters (retries.py), so nothing stays RUNNING and a dead worker costs no budget.

Who calls what: Optuna's heartbeat check (``StaleTrialHandler``, PostgreSQL), the ``run --local`` parent (a
child died by a signal), ``hpctune cancel`` (after scancel), and a worker interrupted by SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hpc_tune.study import optuna_adapter as adapter
from hpc_tune.study.lock import study_lock
from hpc_tune.study.records import TrialRecord, now_iso, read_trial_json, trial_path, write_trial
from hpc_tune.study.retries import enqueue_rerun

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
        storage.set_trial_user_attr(trial_id, "reason", reason)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    frozen = storage.get_trial(trial_id)
    mark_trial_json(study_dir, frozen.number, "FAIL", reason)
    enqueue_rerun(study, frozen, max_retry=max_retry, study_dir=study_dir)
    return True


def fail_running_trials(
    study: optuna.Study,
    storage: BaseStorage,
    *,
    url: str | None,
    study_dir: Path,
    max_retry: int,
    belongs: Callable[[FrozenTrial], bool],
    reason: str,
) -> list[int]:
    """Fail and re-run the RUNNING trials of a worker that cannot do it itself (killed, cancelled)."""
    failed = []
    with study_lock(url, study.study_name, study_dir, "budget"):
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if belongs(trial) and fail_trial(
                study, storage, adapter.trial_id(trial), reason, study_dir=study_dir, max_retry=max_retry
            ):
                failed.append(trial.number)
    return failed
