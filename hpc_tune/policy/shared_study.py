"""The one shared study: every worker, the ``run --local`` parent, ``cancel`` and ``collect`` open it here.

A study per array task is the classic mistake (nothing learned is shared); every worker of a study opens the
same name on the same storage. Opening also does the "exactly once" set-up under the study lock: the
baseline is enqueued once however many workers start together.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from hpc_tune import attrs
from hpc_tune.config import LoadedConfig, WorkerConfig
from hpc_tune.errors import StorageError, StorageUnavailableError, StudyNotFoundError
from hpc_tune.policy.dead_workers import StaleTrialHandler, fail_trial
from hpc_tune.policy.strategy import make_pruner, make_sampler
from hpc_tune.storage import optuna_adapter as adapter
from hpc_tune.storage.connections import engine_kwargs
from hpc_tune.storage.failures import first_line
from hpc_tune.storage.retrying import RetryingStorage
from hpc_tune.storage.store import StudyStore, open_store
from hpc_tune.storage.url import StorageSpec, spec_of

# `check` looks the study up once and quickly: an outage is the workers' business, not a reason to wait.
LOOKUP_DEADLINE_S = 5.0


@dataclass(frozen=True)
class SharedStudy:
    """An open study with the store it runs on (passed around instead of reaching into the study)."""

    study: optuna.Study
    store: StudyStore

    @property
    def storage(self) -> RetryingStorage:
        return self.store.storage

    @property
    def spec(self) -> StorageSpec:
        return self.store.spec

    @contextlib.contextmanager
    def lock(self, purpose: str = "budget") -> Iterator[None]:
        """The study lock for ``purpose`` (budget, enqueue): see storage/lock.py."""
        with self.store.lock(self.study.study_name, purpose):
            yield


def open_store_for(spec: StorageSpec, worker: WorkerConfig | None, *, liveness: bool) -> StudyStore:
    """The store with the study's connection settings when ``worker`` is given, and with its liveness
    (heartbeat, stale-trial retries) when ``liveness`` too; without, a plain reader/writer that fails nobody's
    trials."""
    if worker is None:
        return open_store(spec)
    return open_store(
        spec,
        heartbeat_interval=worker.heartbeat_interval if liveness else None,
        grace_period=worker.grace_period if liveness else None,
        stale_trial_callback=StaleTrialHandler(spec.study_dir, worker.max_retry) if liveness else None,  # type: ignore[arg-type]
        pool=worker.pool,
        retry_deadline_s=worker.db_retry_deadline_s,
    )


def open_study(
    loaded: LoadedConfig, storage_url: str | None, *, worker_index: int = 0, with_heartbeat: bool = True
) -> SharedStudy:
    """Create or load the one shared study; enqueue the baseline exactly once."""
    config = loaded.config
    spec = spec_of(loaded, storage_url)
    store = open_store_for(spec, config.worker, liveness=with_heartbeat)
    study = optuna.create_study(
        study_name=config.study,
        storage=store.storage,
        sampler=make_sampler(config, worker_index),
        pruner=make_pruner(config),
        direction=config.direction,
        load_if_exists=True,
    )
    shared = SharedStudy(study, store)
    if config.baseline:
        with shared.lock("enqueue"):
            if not study.user_attrs.get(attrs.BASELINE_ENQUEUED):
                study.enqueue_trial(dict(config.baseline), user_attrs={attrs.BASELINE: True})
                study.set_user_attr(attrs.BASELINE_ENQUEUED, True)
    recorded = study.user_attrs
    if recorded.get(attrs.TRIALS) != config.trials or recorded.get(attrs.METRIC) != config.metric:
        study.set_user_attr(attrs.TRIALS, config.trials)
        study.set_user_attr(attrs.METRIC, config.metric)
    if attrs.EPOCHS not in recorded:
        study.set_user_attr(attrs.EPOCHS, config.effective_epochs())
    return shared


def existing_study_attrs(spec: StorageSpec, study_name: str) -> dict[str, Any] | None:
    """The user attributes of the study, or None when there is none yet. Creates nothing (no journal file,
    no Optuna tables in an empty database) and tries the database once, without waiting out an outage:
    for ``check``, which ignores the StorageError an unreachable or unusable storage raises."""
    if spec.journal_path is not None:
        if not spec.journal_path.is_file():
            return None
    elif not _has_optuna_tables(spec):
        return None
    try:
        storage = open_store(spec, attempts=1, pool="none", retry_deadline_s=LOOKUP_DEADLINE_S).storage
        try:
            study_id = storage.get_study_id_from_name(study_name)
        except KeyError:
            return None
        return storage.get_study_user_attrs(study_id)
    except (SQLAlchemyError, RuntimeError, OSError) as exc:  # e.g. tables of another Optuna version
        raise StorageError(f"cannot read the study: {first_line(exc, spec.url)}", spec.display) from None


def _has_optuna_tables(spec: StorageSpec) -> bool:
    """Whether the database holds Optuna's tables (opening RDBStorage would create them)."""
    assert spec.url is not None
    engine = sqlalchemy.create_engine(spec.url, **engine_kwargs(spec, "none"))
    try:
        return sqlalchemy.inspect(engine).has_table("studies")
    except SQLAlchemyError as exc:
        raise StorageUnavailableError(
            f"cannot reach the study database: {first_line(exc, spec.url)}", spec.display
        ) from None
    finally:
        engine.dispose()


def load_existing_study(
    spec: StorageSpec, study_name: str, liveness: WorkerConfig | None = None
) -> SharedStudy:
    """Load an existing study (never create one). With ``liveness`` (the study's worker settings), the
    trials of workers that died without a word are failed and retried first, as a worker would; without, it
    only reads (and writes what the caller writes)."""
    if spec.journal_path is not None and not spec.journal_path.is_file():
        raise StudyNotFoundError(f"no study '{study_name}' (no embedded store)", spec.journal_path)
    store = open_store_for(spec, liveness, liveness=liveness is not None)
    # Names only: get_all_study_summaries would read every trial of every study in the database.
    names = [s.study_name for s in store.storage.get_all_studies()]
    if study_name not in names:
        known = f"; studies there: {', '.join(sorted(names)[:5])}" if names else ""
        raise StudyNotFoundError(f"no study '{study_name}'{known}", spec.display)
    study = optuna.load_study(study_name=study_name, storage=store.storage)
    if liveness is not None:
        optuna.storages.fail_stale_trials(study)
    return SharedStudy(study, store)


def fail_running(
    shared: SharedStudy, loaded: LoadedConfig, belongs: Callable[[FrozenTrial], bool], reason: str
) -> list[int]:
    """Fail and re-run the RUNNING trials of workers that cannot do it themselves (a killed local child,
    cancelled array tasks, see policy/dead_workers.py), under the budget lock and with the study's own
    settings."""
    failed = []
    with shared.lock("budget"):
        for trial in shared.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if belongs(trial) and fail_trial(
                shared.study,
                shared.storage,
                adapter.trial_id(trial),
                reason,
                study_dir=loaded.study_dir,
                max_retry=loaded.config.worker.max_retry,
            ):
                failed.append(trial.number)
    return failed
