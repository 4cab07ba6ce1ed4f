"""The retrying storage layer: which errors are transient, back-off until a deadline, idempotent writes.

Faults here are injected by a storage that raises on chosen calls (the real outage is in tests/chaos/, with
a real PostgreSQL restart); the storage underneath is a real Optuna journal store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy
import tenacity
from optuna.trial import TrialState

from hpc_tune import attrs
from hpc_tune.errors import StorageUnavailableError
from hpc_tune.storage import optuna_adapter as adapter
from hpc_tune.storage.failures import is_transient
from hpc_tune.storage.retrying import RetryingStorage, RetryPolicy, retry_transient, retry_wait
from hpc_tune.storage.server.connect import NOT_RUNNING
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage

FAST = RetryPolicy(deadline_s=5.0, first_wait_s=0.001, max_wait_s=0.002)


def _blip(text: str = "server closed the connection unexpectedly") -> Exception:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(text))


def _wrapped_blip() -> Exception:
    try:
        raise _blip("terminating connection due to administrator command")
    except sqlalchemy.exc.OperationalError as cause:
        try:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit."
            ) from cause
        except optuna.exceptions.StorageInternalError as exc:
            return exc


def test_transient_errors_are_connection_level_only() -> None:
    assert is_transient(_blip())
    assert is_transient(_blip("FATAL: sorry, too many clients already"))
    assert is_transient(_blip("the database system is shutting down"))
    assert is_transient(_wrapped_blip())  # Optuna wraps what its session raised: the cause decides
    assert not is_transient(_blip('FATAL: password authentication failed for user "x"'))
    assert not is_transient(optuna.exceptions.StorageInternalError("bad data"))
    assert not is_transient(ValueError("a bug, not a blip"))


def test_retry_transient_retries_until_it_works_and_never_retries_bugs() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _wrapped_blip()
        return "ok"

    assert retry_transient(flaky, FAST) == "ok" and len(calls) == 3
    bugs: list[int] = []

    def broken() -> None:
        bugs.append(1)
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        retry_transient(broken, FAST)
    assert len(bugs) == 1


def test_retry_transient_gives_up_at_the_deadline() -> None:
    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise _blip()

    with pytest.raises(sqlalchemy.exc.OperationalError):
        retry_transient(down, RetryPolicy(deadline_s=0.05, first_wait_s=0.001, max_wait_s=0.005))
    assert len(calls) > 2


class Faulty(RetryingStorage):
    """Raises a transient error on the named inner calls, ``after`` (the write happened, its reply was
    lost) or before they reach the storage."""

    def __init__(self, inner: Any, fail: dict[str, int], after: bool) -> None:
        super().__init__(inner, policy=FAST, where="test")
        self.fail = dict(fail)
        self.after = after
        real = inner

        class Proxy:
            def __getattr__(proxy, name: str) -> Any:
                target = getattr(real, name)
                if name not in self.fail or not callable(target):
                    return target

                def call(*args: Any, **kwargs: Any) -> Any:
                    if self.fail.get(name, 0) > 0:
                        self.fail[name] -= 1
                        if self.after:
                            target(*args, **kwargs)
                        raise _blip()
                    return target(*args, **kwargs)

                return call

        self.inner = Proxy()  # type: ignore[assignment]


def _journal(tmp_path: Path) -> Any:
    return open_store(resolve_storage(None, tmp_path)).storage.inner


def test_a_lost_reply_never_creates_a_trial_twice(tmp_path: Path) -> None:
    storage = Faulty(_journal(tmp_path), {"create_new_trial": 1}, after=True)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    study.tell(trial, 1.0)
    trials = study.get_trials()
    assert len(trials) == 1 and trials[0].state == TrialState.COMPLETE
    assert attrs.CREATE_TOKEN in trials[0].system_attrs
    assert storage.last_outage is not None and not storage.settled(60)


def test_a_workers_new_trial_is_found_by_its_worker_identity(tmp_path: Path) -> None:
    storage = Faulty(_journal(tmp_path), {"create_new_trial": 1}, after=True)
    study = optuna.create_study(study_name="s", storage=storage)
    worker = {attrs.WORKER: {"host": "n1", "pid": 7}}
    template = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=worker)
    trial_id = storage.create_new_trial(adapter.study_id(study), template_trial=template)
    trials = study.get_trials()
    assert len(trials) == 1 and adapter.trial_id(trials[0]) == trial_id
    assert attrs.CREATE_TOKEN not in trials[0].system_attrs  # no extra row per trial


def test_a_lost_reply_of_tell_reports_success(tmp_path: Path) -> None:
    storage = Faulty(_journal(tmp_path), {"set_trial_state_values": 0}, after=True)
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask()
    storage.fail["set_trial_state_values"] = 1  # the COMPLETE commits, then the connection breaks
    study.tell(trial, 0.5)
    frozen = study.get_trials()[0]
    assert frozen.state == TrialState.COMPLETE and frozen.value == 0.5


def test_an_objectives_own_calls_are_retried(tmp_path: Path) -> None:
    storage = Faulty(
        _journal(tmp_path), {"set_trial_intermediate_value": 2, "set_trial_param": 1}, after=False
    )
    study = optuna.create_study(study_name="s", storage=storage)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        trial.report(x, 1)
        trial.report(x, 2)
        return x

    study.optimize(objective, n_trials=2)
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2
    assert all(len(t.intermediate_values) == 2 for t in study.get_trials())


def test_past_the_deadline_the_storage_is_unavailable(tmp_path: Path) -> None:
    storage = Faulty(_journal(tmp_path), {"get_all_studies": 10_000}, after=False)
    storage.policy = RetryPolicy(deadline_s=0.05, first_wait_s=0.001, max_wait_s=0.005)
    with pytest.raises(StorageUnavailableError) as info:
        storage.get_all_studies()
    assert info.value.exit_code == 75 and "did not answer" in str(info.value)
    assert storage.unavailable


def test_journal_store_has_no_heartbeat(tmp_path: Path) -> None:
    storage = open_store(resolve_storage(None, tmp_path)).storage
    assert isinstance(storage, RetryingStorage) and not adapter.heartbeat_enabled(storage)


def test_a_full_connection_table_is_waited_out_beyond_the_attempts() -> None:
    calls: list[int] = []

    def crowded() -> str:
        calls.append(1)
        if len(calls) < 6:
            raise _blip("FATAL:  sorry, too many clients already")
        return "ok"

    assert (
        retry_transient(crowded, RetryPolicy(deadline_s=5, first_wait_s=0.001, max_wait_s=0.002, attempts=2))
        == "ok"
    )
    refused: list[int] = []

    def down() -> None:
        refused.append(1)
        raise _blip("connection refused")

    with pytest.raises(sqlalchemy.exc.OperationalError):
        retry_transient(down, RetryPolicy(deadline_s=5, first_wait_s=0.001, max_wait_s=0.002, attempts=2))
    assert len(refused) == 2


def test_a_study_server_on_its_way_is_looked_for_soon_not_backed_off_from() -> None:
    """A worker started before the study server has its address asks again within a second, however often it
    already asked; a database that failed is backed off from as before (the wait's values, no timing)."""
    policy = RetryPolicy(first_wait_s=0.5, max_wait_s=8.0)
    wait = retry_wait(policy)

    def state_after(failure: Exception, attempt: int) -> tenacity.RetryCallState:
        state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
        state.attempt_number = attempt
        state.set_exception((type(failure), failure, None))
        return state

    starting = _blip(f"{NOT_RUNNING}: no address.json")
    refused = _blip("connection refused")
    late = [wait(state_after(starting, 12)) for _ in range(50)]
    assert all(0.5 <= w <= 1.0 for w in late)
    backed_off = [wait(state_after(refused, 12)) for _ in range(200)]
    assert all(0 <= w <= 8.0 for w in backed_off) and max(backed_off) > 1.0
