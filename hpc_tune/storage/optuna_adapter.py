"""The one place that touches Optuna's private names.

hpc_tune runs trials with ask/tell across many processes, which Optuna's public API covers only in part: our
own heartbeat thread needs the storage's heartbeat interface, the budget needs to read a study's trials
through the per-ask cache the sampler uses, and retries keep Optuna's own retry attributes so that
``RetryHeartbeatStaleTrialCallback.retried_trial_number`` still works on our studies. Every such use is a
function here, and ``tests/storage/test_optuna_adapter.py`` checks each of them against the installed Optuna,
so an Optuna release that renames one fails in one clear place instead of somewhere in a worker.

Importing this module also silences the two warnings that ask/tell workers trigger on purpose: the
heartbeat API is "experimental", and Optuna warns that heartbeats belong to ``study.optimize()``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Container, Iterable
from functools import lru_cache
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.storages import BaseStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.storages._rdb import models
from optuna.study._tell import _tell_with_warning
from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs

__all__ = [
    "BaseHeartbeat",
    "BulkReadRDBStorage",
    "cached",
    "heartbeat_enabled",
    "original_trial_number",
    "read_trials_for_ask",
    "retry_history",
    "silence_optuna_warnings",
    "stale_trial_ids",
    "study_id",
    "tell",
    "trial_id",
    "trial_snapshot",
]


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


class BulkReadRDBStorage(optuna.storages.RDBStorage):
    """Optuna's RDBStorage with a faster read of many trials.

    A worker's first ask reads every trial of the study (the sampler needs them all; later asks read only
    what changed). Optuna builds that read from ORM objects: 5.1 s for 10,000 trials of 20 epochs here, so
    every new array task of a large study waited that long. This reads the same rows with six plain SELECTs
    and builds the same FrozenTrials, with the semantics of ``RDBStorage._get_trials`` (the one method the
    cache above it calls to refresh). ``tests/storage/test_optuna_adapter.py`` compares both on every kind of
    value."""

    def _get_trials(
        self,
        study_id: int,
        states: Container[TrialState] | None,
        included_trial_ids: set[int],
        trial_id_greater_than: int,
    ) -> list[FrozenTrial]:
        included = {i for i in included_trial_ids if i <= trial_id_greater_than}
        trials_table = models.TrialModel.__table__
        where = trials_table.c.study_id == study_id
        if states is not None:
            assert isinstance(states, Iterable)
            where = sqlalchemy.and_(where, trials_table.c.state.in_(list(states)))
        if included and trial_id_greater_than > -1:
            where = sqlalchemy.and_(
                where,
                sqlalchemy.or_(
                    trials_table.c.trial_id.in_(sorted(included)),
                    trials_table.c.trial_id > trial_id_greater_than,
                ),
            )
        elif trial_id_greater_than > -1:
            where = sqlalchemy.and_(where, trials_table.c.trial_id > trial_id_greater_than)
        ids = sqlalchemy.select(trials_table.c.trial_id).where(where).scalar_subquery()

        def children(model: Any, *columns: str) -> dict[int, list[Any]]:
            table = model.__table__
            query = sqlalchemy.select(table.c.trial_id, *(table.c[c] for c in columns)).where(
                table.c.trial_id.in_(ids)
            )
            found: dict[int, list[Any]] = {}
            for row in conn.execute(query):
                found.setdefault(row[0], []).append(row[1:])
            return found

        with self.engine.connect() as conn:
            if (
                conn.execute(
                    sqlalchemy.select(models.StudyModel.__table__.c.study_id).where(
                        models.StudyModel.__table__.c.study_id == study_id
                    )
                ).first()
                is None
            ):
                raise KeyError(f"No study with study_id {study_id} exists.")
            rows = conn.execute(
                sqlalchemy.select(
                    trials_table.c.trial_id,
                    trials_table.c.number,
                    trials_table.c.state,
                    trials_table.c.datetime_start,
                    trials_table.c.datetime_complete,
                )
                .where(where)
                .order_by(trials_table.c.trial_id)
            ).all()
            params = children(
                models.TrialParamModel, "param_id", "param_name", "param_value", "distribution_json"
            )
            values = children(models.TrialValueModel, "objective", "value", "value_type")
            user = children(models.TrialUserAttributeModel, "key", "value_json")
            system = children(models.TrialSystemAttributeModel, "key", "value_json")
            steps = children(
                models.TrialIntermediateValueModel, "step", "intermediate_value", "intermediate_value_type"
            )
        return [
            _frozen_trial(row, params.get(row[0], []), values.get(row[0], []), user, system, steps)
            for row in rows
        ]


@lru_cache(maxsize=1024)
def _distribution(distribution_json: str) -> BaseDistribution:
    return json_to_distribution(distribution_json)


def _frozen_trial(
    row: Any,
    params: list[Any],
    values: list[Any],
    user: dict[int, list[Any]],
    system: dict[int, list[Any]],
    steps: dict[int, list[Any]],
) -> FrozenTrial:
    """What ``RDBStorage._build_frozen_trial_from_trial_model`` builds, from plain rows."""
    trial_id, number, state, started, completed = row
    stored_value = models.TrialValueModel.stored_repr_to_value
    stored_step = models.TrialIntermediateValueModel.stored_repr_to_intermediate_value
    objective_values: list[float] | None = None
    if values:
        objective_values = [0.0] * len(values)
        for objective, value, value_type in values:
            objective_values[objective] = stored_value(value, value_type)
    ordered = sorted(params, key=lambda p: p[0])
    return FrozenTrial(
        number=number,
        state=state,
        value=None,
        values=objective_values,
        datetime_start=started,
        datetime_complete=completed,
        params={name: _distribution(dist).to_external_repr(value) for _, name, value, dist in ordered},
        distributions={name: _distribution(dist) for _, name, _, dist in ordered},
        user_attrs={key: json.loads(value) for key, value in user.get(trial_id, [])},
        system_attrs={key: json.loads(value) for key, value in system.get(trial_id, [])},
        intermediate_values={step: stored_step(value, kind) for step, value, kind in steps.get(trial_id, [])},
        trial_id=trial_id,
    )


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


def tell(study: optuna.Study, trial: optuna.Trial, state: TrialState, value: float | None) -> None:
    """``study.tell(..., skip_if_finished=True)`` without its last step: the public ``tell`` reads the trial
    once more to return it (one query per trial, ~5 ms here), which a worker never uses. This is what
    ``study.optimize()`` calls. A trial already finished (a retried tell whose reply was lost) is skipped."""
    _tell_with_warning(
        study,
        trial,
        value if state == TrialState.COMPLETE else None,
        state,
        skip_if_finished=True,
        suppress_warning=True,
    )


def retry_history(trial: FrozenTrial) -> list[int]:
    return [int(n) for n in trial.system_attrs.get(attrs.RETRY_HISTORY, [])]


def original_trial_number(trial: FrozenTrial) -> int | None:
    value: Any = trial.system_attrs.get(attrs.FAILED_TRIAL)
    return None if value is None else int(value)
