from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest
from sqlalchemy.pool import NullPool, QueuePool

from hpc_tune.config import redact_url, scrub
from hpc_tune.errors import StorageError, StorageUnavailableError
from hpc_tune.storage.connections import PoolKind, engine_kwargs, resolve_pool
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage


def test_redact_hides_password_keeps_rest() -> None:
    url = "postgresql+psycopg2://alice:hunter2@db.example.org:5432/optuna"
    shown = redact_url(url)
    assert "hunter2" not in shown
    assert shown == "postgresql+psycopg2://alice:***@db.example.org:5432/optuna"
    assert redact_url("postgresql://alice@db/optuna") == "postgresql://alice@db/optuna"


def test_scrub_removes_password_from_driver_text() -> None:
    url = "postgresql://alice:hunter2@db/x"
    assert (
        scrub("could not connect: password hunter2 rejected", url)
        == "could not connect: password *** rejected"
    )


def test_resolve_embedded_and_url(tmp_path: Path) -> None:
    spec = resolve_storage(None, tmp_path / "s")
    assert spec.journal_path == tmp_path / "s" / "journal.log" and spec.url is None
    spec = resolve_storage("postgresql+psycopg2://u@h/db", tmp_path)
    assert spec.is_postgres and spec.journal_path is None
    with pytest.raises(StorageError, match="unsupported storage 'redis'"):
        resolve_storage("redis://h/0", tmp_path)
    with pytest.raises(StorageError, match="not a database URL"):
        resolve_storage("::nonsense::", tmp_path)
    with pytest.raises(StorageError, match="gRPC storage proxy is not supported: it has no heartbeat"):
        resolve_storage("grpc://login1:13000", tmp_path)


def test_postgres_engine_holds_two_connections_per_worker(tmp_path: Path) -> None:
    spec = resolve_storage("postgresql://u@h/db", tmp_path)
    kwargs = engine_kwargs(spec, "persistent")
    assert kwargs["poolclass"] is QueuePool and (kwargs["pool_size"], kwargs["max_overflow"]) == (2, 1)
    assert kwargs["pool_pre_ping"] is True and kwargs["connect_args"] == {"connect_timeout": 10}
    assert engine_kwargs(spec, "none")["poolclass"] is NullPool
    assert engine_kwargs(resolve_storage(None, tmp_path)) == {}


def test_unreachable_database_is_tempfail_and_redacted(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://alice:hunter2@127.0.0.1:1/optuna"
    with pytest.raises(StorageUnavailableError) as info:
        open_store(resolve_storage(url, tmp_path), attempts=1)
    assert info.value.exit_code == 75
    assert "hunter2" not in str(info.value)
    assert "alice:***@127.0.0.1:1" in str(info.value)


@pytest.mark.postgres
def test_postgres_storage_keeps_the_lock_and_storage_connections(pg_url: str, tmp_path: Path) -> None:
    spec = resolve_storage(pg_url, tmp_path)
    store = open_store(spec, heartbeat_interval=1, grace_period=3, pool="persistent")
    storage = store.storage
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    with store.lock("s"):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # the second kept connection
    assert len(study.trials) == 4
    pool = storage.engine.pool
    assert isinstance(pool, QueuePool) and pool.checkedin() == 2  # both kept for the next trial
    none = open_store(spec, pool="none").storage
    assert isinstance(none.engine.pool, NullPool)


def _lock_is_exclusive(
    spec_url: str | None, tmp_path: Path, pool: PoolKind = "auto"
) -> list[tuple[str, float]]:
    """Two threads take the study lock of one store: the lock, not the threads, decides who waits."""
    store = open_store(resolve_storage(spec_url, tmp_path / "study"), pool=pool)
    events: list[tuple[str, float]] = []

    def hold(tag: str) -> None:
        with store.lock("s"):
            events.append((f"{tag}-in", time.monotonic()))
            time.sleep(0.3)
            events.append((f"{tag}-out", time.monotonic()))

    threads = [threading.Thread(target=hold, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return events


def _assert_serialized(events: list[tuple[str, float]]) -> None:
    order = [name for name, _ in sorted(events, key=lambda e: e[1])]
    first = order[0].split("-")[0]
    assert order[:2] == [f"{first}-in", f"{first}-out"], order


def test_file_lock_serializes(tmp_path: Path) -> None:
    _assert_serialized(_lock_is_exclusive(None, tmp_path))


@pytest.mark.postgres
def test_advisory_lock_serializes(pg_url: str, tmp_path: Path) -> None:
    _assert_serialized(_lock_is_exclusive(pg_url, tmp_path))


def test_auto_pool_holds_no_idle_connection_for_many_workers() -> None:
    assert resolve_pool("auto", {}) == "persistent"
    assert resolve_pool("auto", {"HPCTUNE_WORKERS": "4"}) == "persistent"
    assert resolve_pool("auto", {"HPCTUNE_WORKERS": "32"}) == "none"
    assert resolve_pool("auto", {"SLURM_ARRAY_TASK_COUNT": "64"}) == "none"
    assert resolve_pool("persistent", {"HPCTUNE_WORKERS": "64"}) == "persistent"


@pytest.mark.postgres
def test_advisory_lock_serializes_without_a_pool(pg_url: str, tmp_path: Path) -> None:
    """Many workers (no pool): waiters poll with pg_try_advisory_xact_lock and hold no connection."""
    _assert_serialized(_lock_is_exclusive(pg_url, tmp_path, pool="none"))
