"""The contract with Optuna's private names: each function of the adapter against the installed Optuna.

When an Optuna release renames one of them, this file fails, in one place, with the name in the test's
title, before any worker does."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from hpc_tune import attrs
from hpc_tune.storage import optuna_adapter as adapter
from tests.conftest import wait_until


def _rdb(tmp_path: Path, **kwargs: object) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'db.sqlite'}", **kwargs)  # type: ignore[arg-type]


def test_cached_wraps_an_rdb_storage_like_create_study_does(tmp_path: Path) -> None:
    cached = adapter.cached(_rdb(tmp_path))
    assert type(cached) is type(optuna.storages.get_storage(_rdb(tmp_path)))
    study = optuna.create_study(storage=cached)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(cached.get_all_trials(adapter.study_id(study))) == 2


def test_heartbeat_interface_and_stale_trials(tmp_path: Path) -> None:
    storage = _rdb(tmp_path, heartbeat_interval=1, grace_period=1)
    assert adapter.heartbeat_enabled(storage) and isinstance(storage, adapter.BaseHeartbeat)
    assert not adapter.heartbeat_enabled(_rdb(tmp_path))
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    storage.record_heartbeat(adapter.trial_id(trial))
    # Stale once its heartbeat is older than the grace period (database clock).
    stale = lambda: adapter.stale_trial_ids(storage, adapter.study_id(study))  # noqa: E731
    assert wait_until(lambda: bool(stale()), timeout=10)
    assert stale() == [adapter.trial_id(trial)]


def test_trial_ids_snapshots_and_the_ask_cache(tmp_path: Path) -> None:
    study = optuna.create_study(storage=_rdb(tmp_path))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    trials = adapter.read_trials_for_ask(study)
    assert [t.number for t in trials] == [0, 1, 2]
    assert study._thread_local.cached_all_trials is not None  # what the next Trial's sampler reads
    trial = study.ask()
    x = trial.suggest_float("x", 0, 1)
    snapshot = adapter.trial_snapshot(trial)
    assert snapshot is not None and snapshot.params == {"x": x}
    frozen = study._storage.get_trial(adapter.trial_id(trial))
    assert frozen.number == trial.number and adapter.trial_id(frozen) == adapter.trial_id(trial)


def test_retry_attributes_are_optunas_own(tmp_path: Path) -> None:
    study = optuna.create_study(storage=_rdb(tmp_path))
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    study.tell(trial, state=TrialState.FAIL)
    failed = study.get_trials()[0]
    RetryHeartbeatStaleTrialCallback()(study, failed)
    retry = study.get_trials()[1]
    assert adapter.retry_history(retry) == RetryHeartbeatStaleTrialCallback.retry_history(retry) == [0]
    assert adapter.original_trial_number(retry) == RetryHeartbeatStaleTrialCallback.retried_trial_number(
        retry
    )
    assert retry.system_attrs[attrs.FAILED_TRIAL] == 0 and attrs.RETRY_HISTORY in retry.system_attrs


@pytest.mark.postgres
def test_bulk_read_builds_exactly_the_trials_optuna_builds(pg_url: str) -> None:
    """Every kind of value a trial row can hold, read both ways, with each filter the cache uses."""
    optuna_reader = optuna.storages.RDBStorage(pg_url)
    bulk_reader = adapter.BulkReadRDBStorage(pg_url)
    study = optuna.create_study(storage=optuna_reader, study_name="both", direction="minimize")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 1e-3, 1.0, log=True)
        trial.suggest_int("n", 1, 9, step=2)
        trial.suggest_categorical("opt", ["adamw", "sgd", None])
        trial.suggest_float("q", 0.0, 1.0, step=0.25)
        trial.set_user_attr("worker", {"host": "n1", "pid": trial.number})
        trial.report(float("nan") if trial.number == 1 else x, 1)
        trial.report(float("inf"), 2)
        if trial.number == 2:
            raise optuna.TrialPruned()
        if trial.number == 3:
            raise RuntimeError("a failure")
        return float("-inf") if trial.number == 4 else x

    study.optimize(objective, n_trials=7, catch=(RuntimeError,))
    running = study.ask()
    running.suggest_float("x", 1e-3, 1.0, log=True)
    study.enqueue_trial({"x": 0.5}, user_attrs={"baseline": True})
    study_id = adapter.study_id(study)
    ids = [adapter.trial_id(t) for t in study.get_trials()]
    for states, included, greater in [
        (None, set(), -1),
        ((TrialState.COMPLETE,), set(), -1),
        (None, {ids[1], ids[7]}, ids[4]),
        (None, set(), ids[5]),
    ]:
        expected = optuna_reader._get_trials(study_id, states, included, greater)
        got = bulk_reader._get_trials(study_id, states, included, greater)
        assert [repr(t) for t in got] == [repr(t) for t in expected], (states, included, greater)
    with pytest.raises(KeyError):
        bulk_reader._get_trials(study_id + 1000, None, set(), -1)
