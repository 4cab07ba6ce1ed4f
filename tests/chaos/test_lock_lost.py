"""The study lock's connection dies while the lock is held (a database restart or fail-over at the worst
moment): the lock is reported lost, and a trial that turns out to be beyond the budget is voided."""

from __future__ import annotations

from pathlib import Path

import optuna
import psycopg2
import pytest
from optuna.trial import TrialState

from hpc_tune import attrs
from hpc_tune.config import load_config
from hpc_tune.policy.budget import budget_state
from hpc_tune.policy.shared_study import open_study
from hpc_tune.storage import optuna_adapter as adapter
from hpc_tune.storage.lock import LockLost
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage
from hpc_tune.worker.signals import SignalGuard
from hpc_tune.worker.trial_source import TrialSource
from tests.conftest import write_config

pytestmark = pytest.mark.postgres


def _terminate_lock_holder(postgres_server, database: str) -> int:  # type: ignore[no-untyped-def]
    conn = psycopg2.connect(host="127.0.0.1", port=postgres_server.port, user="postgres", dbname=database)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND query LIKE %s AND pid <> pg_backend_pid()",
            (database, "%pg_advisory_xact_lock%"),
        )
        killed = cur.rowcount
    conn.close()
    return killed


def test_a_lock_whose_connection_died_is_reported_lost(tmp_path: Path, pg_url: str, postgres_server) -> None:  # type: ignore[no-untyped-def]
    database = pg_url.rsplit("/", 1)[1]
    store = open_store(resolve_storage(pg_url, tmp_path))
    with pytest.raises(LockLost), store.lock("s", "budget"):
        assert _terminate_lock_holder(postgres_server, database) == 1
    with store.lock("s", "budget"):  # the pool recovers: the next lock works
        pass


def test_a_trial_beyond_the_budget_after_a_lost_lock_is_voided(tmp_path: Path, pg_url: str) -> None:
    cfg = write_config(tmp_path, storage=pg_url, trials=1)
    loaded = load_config(cfg)
    shared = open_study(loaded, None)
    worker = {"worker": {"host": "n1", "pid": 1}}
    source = TrialSource(shared, loaded.config, loaded.study_dir, worker, SignalGuard())
    study_id = adapter.study_id(shared.study)
    # Two workers that both counted 0 trials while the lock was lost each created one: one too many.
    first, second = (
        shared.storage.create_new_trial(study_id, optuna.trial.create_trial(state=TrialState.RUNNING))
        for _ in range(2)
    )
    assert not source._void_if_over_budget(first)  # within the budget: kept
    assert source._void_if_over_budget(second)  # the newer one is the excess
    trials = shared.study.get_trials(deepcopy=False)
    assert trials[1].state == TrialState.FAIL and trials[1].system_attrs[attrs.VOID] is True
    assert trials[1].user_attrs["reason"] == "over_budget"
    assert budget_state(trials, 1).counted == 1  # the voided trial counts for nothing
