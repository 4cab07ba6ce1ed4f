"""The one shared study: every worker, the ``run --local`` parent, ``cancel`` and ``collect`` open it here.

A study per array task is the classic mistake (nothing learned is shared); every worker of a study opens the
same name on the same storage. Opening also does the "exactly once" set-up under the study lock: the
baseline is enqueued once however many workers start together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.trial import FrozenTrial
from sqlalchemy.exc import SQLAlchemyError

from hpc_tune.errors import StorageError, StorageUnavailableError, StudyNotFoundError
from hpc_tune.study.config import LoadedConfig, WorkerConfig
from hpc_tune.study.lock import study_lock
from hpc_tune.study.recovery import StaleTrialHandler, fail_running_trials
from hpc_tune.study.retrying import RetryingStorage
from hpc_tune.study.storage import StorageSpec, engine_kwargs, first_line, open_storage, resolve_storage
from hpc_tune.study.strategy import make_pruner, make_sampler

BASELINE_ATTR = "baseline"
# The epochs the study's (unpromoted) trials run, set when the study is first opened and never overwritten:
# `check` compares it with the config, since trials of different lengths would be ranked together.
EPOCHS_ATTR = "epochs"
# `check` looks the study up once and quickly: an outage is the workers' business, not a reason to wait.
LOOKUP_DEADLINE_S = 5.0


@dataclass(frozen=True)
class SharedStudy:
    """An open study with the storage object it runs on (passed around instead of reaching into the study)
    and where that storage is."""

    study: optuna.Study
    storage: RetryingStorage
    spec: StorageSpec


def open_storage_for(
    spec: StorageSpec, worker: WorkerConfig | None, study_dir: Path | None, *, liveness: bool
) -> RetryingStorage:
    """The storage with the study's connection settings when ``worker`` is given, and with its liveness
    (heartbeat, stale-trial retries) when ``liveness`` too; without, a plain reader/writer that fails nobody's
    trials."""
    if worker is None:
        return open_storage(spec)
    live = liveness and study_dir is not None
    return open_storage(
        spec,
        heartbeat_interval=worker.heartbeat_interval if live else None,
        grace_period=worker.grace_period if live else None,
        stale_trial_callback=StaleTrialHandler(study_dir, worker.max_retry) if live else None,  # type: ignore[arg-type]
        pool=worker.pool,
        retry_deadline_s=worker.db_retry_deadline_s,
    )


def open_study(
    loaded: LoadedConfig, storage_url: str | None, *, worker_index: int = 0, with_heartbeat: bool = True
) -> SharedStudy:
    """Create or load the one shared study; enqueue the baseline exactly once."""
    config = loaded.config
    spec = resolve_storage(storage_url if storage_url is not None else config.storage, loaded.study_dir)
    storage = open_storage_for(spec, config.worker, loaded.study_dir, liveness=with_heartbeat)
    study = optuna.create_study(
        study_name=config.study,
        storage=storage,
        sampler=make_sampler(config, worker_index),
        pruner=make_pruner(config),
        direction=config.direction,
        load_if_exists=True,
    )
    if config.baseline:
        with study_lock(spec.url, config.study, loaded.study_dir, "enqueue"):
            if not study.user_attrs.get("baseline_enqueued"):
                study.enqueue_trial(dict(config.baseline), user_attrs={BASELINE_ATTR: True})
                study.set_user_attr("baseline_enqueued", True)
    attrs = study.user_attrs
    if attrs.get("trials") != config.trials or attrs.get("metric") != config.metric:
        study.set_user_attr("trials", config.trials)
        study.set_user_attr("metric", config.metric)
    if EPOCHS_ATTR not in attrs:
        study.set_user_attr(EPOCHS_ATTR, config.effective_epochs())
    return SharedStudy(study, storage, spec)


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
        storage = open_storage(spec, attempts=1, pool="none", retry_deadline_s=LOOKUP_DEADLINE_S)
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
    spec: StorageSpec, study_name: str, liveness: WorkerConfig | None = None, study_dir: Path | None = None
) -> SharedStudy:
    """Load an existing study (never create one). With ``liveness`` (the study's worker settings) and its
    ``study_dir``, the trials of workers that died without a word are failed and retried first, as a worker
    would."""
    if spec.journal_path is not None and not spec.journal_path.is_file():
        raise StudyNotFoundError(f"no study '{study_name}' (no embedded store)", spec.journal_path)
    storage = open_storage_for(spec, liveness, study_dir, liveness=liveness is not None)
    # Names only: get_all_study_summaries would read every trial of every study in the database.
    names = [s.study_name for s in storage.get_all_studies()]
    if study_name not in names:
        known = f"; studies there: {', '.join(sorted(names)[:5])}" if names else ""
        raise StudyNotFoundError(f"no study '{study_name}'{known}", spec.display)
    study = optuna.load_study(study_name=study_name, storage=storage)
    if liveness is not None and study_dir is not None:
        optuna.storages.fail_stale_trials(study)
    return SharedStudy(study, storage, spec)


def fail_running(
    shared: SharedStudy, loaded: LoadedConfig, belongs: Callable[[FrozenTrial], bool], reason: str
) -> list[int]:
    """Fail and re-run the RUNNING trials of workers that cannot do it themselves (a killed local child,
    cancelled array tasks), with the study's own settings."""
    return fail_running_trials(
        shared.study,
        shared.storage,
        url=shared.spec.url,
        study_dir=loaded.study_dir,
        max_retry=loaded.config.worker.max_retry,
        belongs=belongs,
        reason=reason,
    )
