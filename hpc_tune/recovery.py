"""Trials whose worker cannot finish them itself — killed, cancelled, silent — are failed on its behalf
and re-enqueued with the same parameters, so nothing stays RUNNING and a dead worker costs no budget.

Who calls what: Optuna's heartbeat check (``StaleTrialHandler``, PostgreSQL), the ``run --local`` parent (a
child died by a signal), ``hpctune cancel`` (after scancel), and a worker interrupted by SIGTERM/SIGINT.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpc_tune.budget import enqueue_retry
from hpc_tune.config import LoadedConfig
from hpc_tune.metrics import TrialRecord, now_iso, read_trial_json, trial_path, write_trial
from hpc_tune.storage import StorageSpec, study_lock


class StaleTrialHandler:
    """Optuna's heartbeat-stale callback: mark the dead trial's JSON, then retry it with the same params."""

    def __init__(self, study_dir: Path, max_retry: int) -> None:
        self.study_dir = study_dir
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        mark_trial_json(self.study_dir, trial.number, "FAIL", "heartbeat_stale")
        enqueue_retry(study, trial, self.max_retry)


def mark_trial_json(study_dir: Path, number: int, state: str, reason: str) -> None:
    """Finish the JSON of a trial whose own worker cannot (it was killed): keep its epochs, set the state."""
    data = read_trial_json(trial_path(study_dir, number))
    if data is None:
        return
    record = TrialRecord(**{k: v for k, v in data.items() if k in TrialRecord.__dataclass_fields__})
    record.state, record.reason = state, reason
    record.finished_at = record.finished_at or now_iso()
    write_trial(study_dir, record)


def fail_trial(study: optuna.Study, trial_id: int, reason: str, *, study_dir: Path, max_retry: int) -> bool:
    """Fail a RUNNING trial on behalf of a dead or interrupted worker and re-enqueue it; False if finished."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial_id, "reason", reason)
        if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    frozen = storage.get_trial(trial_id)
    mark_trial_json(study_dir, frozen.number, "FAIL", reason)
    enqueue_retry(study, frozen, max_retry)
    return True


def fail_trials_of_jobs(
    study: optuna.Study, spec: StorageSpec, loaded: LoadedConfig, job_ids: list[str], timeout: float = 90.0
) -> list[int]:
    """After ``scancel``: wait until the jobs are gone, then fail (and re-enqueue) their RUNNING trials."""
    from hpc_tune.slurm import job_name_for, squeue_study

    deadline = time.monotonic() + timeout
    name = job_name_for(loaded.config.study)
    while time.monotonic() < deadline and any(
        t.active and t.array_job_id in job_ids for t in squeue_study(name)
    ):
        time.sleep(1.0)
    return fail_running_trials(
        study, spec, loaded, lambda t: str(t.user_attrs.get("slurm.array_job_id")) in job_ids, "cancelled"
    )


def fail_running_trials(
    study: optuna.Study,
    spec: StorageSpec,
    loaded: LoadedConfig,
    belongs: Callable[[FrozenTrial], bool],
    reason: str,
) -> list[int]:
    """Fail and re-enqueue the RUNNING trials of a worker that cannot do it itself (killed, cancelled)."""
    failed = []
    with study_lock(spec, loaded.config.study, loaded.study_dir, "budget"):
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if belongs(trial) and fail_trial(
                study,
                trial._trial_id,
                reason,
                study_dir=loaded.study_dir,
                max_retry=loaded.config.worker.max_retry,
            ):
                failed.append(trial.number)
    return failed
