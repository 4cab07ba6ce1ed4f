"""The one place that touches Optuna's private names.

hpc_tune runs trials with ask/tell across many processes, which Optuna's public API covers only in part: our
own heartbeat thread needs the storage's heartbeat interface, the budget needs to read a study's trials
through the per-ask cache the sampler uses, and retries keep Optuna's own retry attributes so that
``RetryHeartbeatStaleTrialCallback.retried_trial_number`` still works on our studies. Every such use is a
function here, and ``tests/study/test_optuna_adapter.py`` checks each of them against the installed Optuna,
so an Optuna release that renames one fails in one clear place instead of somewhere in a worker.

Importing this module also silences the two warnings that ask/tell workers trigger on purpose: the
heartbeat API is "experimental", and Optuna warns that heartbeats belong to ``study.optimize()``.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial

__all__ = [
    "FAILED_TRIAL_ATTR",
    "RETRY_HISTORY_ATTR",
    "BaseHeartbeat",
    "cached",
    "heartbeat_enabled",
    "original_trial_number",
    "read_trials_for_ask",
    "retry_history",
    "silence_optuna_warnings",
    "stale_trial_ids",
    "study_id",
    "trial_id",
    "trial_snapshot",
]

# The system attributes Optuna's RetryHeartbeatStaleTrialCallback writes on a retry: the first trial of the
# chain, and every trial number of the chain before this one.
FAILED_TRIAL_ATTR = "failed_trial"
RETRY_HISTORY_ATTR = "retry_history"


def silence_optuna_warnings() -> None:
    """The heartbeat and stale-trial APIs are marked experimental; we rely on them deliberately."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


silence_optuna_warnings()


def cached(storage: optuna.storages.RDBStorage) -> BaseStorage:
    """What ``optuna.create_study(storage=url)`` builds around an RDBStorage: a cache of finished trials, so
    a read of a 10,000-trial study fetches only what changed. We wrap the storage ourselves (to retry its
    calls), so Optuna no longer adds this layer for us."""
    return _CachedStorage(storage)


def heartbeat_enabled(storage: BaseStorage) -> bool:
    return isinstance(storage, BaseHeartbeat) and is_heartbeat_enabled(storage)


def stale_trial_ids(storage: BaseStorage, study_id: int) -> list[int]:
    """The RUNNING trials whose last heartbeat is older than the grace period (database clock)."""
    assert isinstance(storage, BaseHeartbeat)
    return list(storage._get_stale_trial_ids(study_id))


def study_id(study: optuna.Study) -> int:
    return int(study._study_id)


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (its ``number`` is per study; storage calls take the id)."""
    return int(trial._trial_id)


def trial_snapshot(trial: optuna.Trial) -> FrozenTrial | None:
    """The FrozenTrial a live Trial keeps up to date with its own writes (params, reports), saving a read."""
    snapshot = getattr(trial, "_cached_frozen_trial", None)
    return snapshot if isinstance(snapshot, FrozenTrial) else None


def read_trials_for_ask(study: optuna.Study) -> list[FrozenTrial]:
    """Read the study's trials into the cache that the sampler of the next ``Trial`` reads from.

    ``study.ask()`` resets that cache and reads every trial; the budget check reads them anyway, so reading
    once here and letting the sampler reuse the list halves the reads per trial.
    """
    study._thread_local.cached_all_trials = None
    return list(study._get_trials(deepcopy=False, use_cache=True))


def retry_history(trial: FrozenTrial) -> list[int]:
    return [int(n) for n in trial.system_attrs.get(RETRY_HISTORY_ATTR, [])]


def original_trial_number(trial: FrozenTrial) -> int | None:
    value: Any = trial.system_attrs.get(FAILED_TRIAL_ATTR)
    return None if value is None else int(value)
