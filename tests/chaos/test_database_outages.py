"""Database outages under running workers: a restart, a long outage, and one past the retry deadline.

Everything is real: worker processes (``python -m hpc_tune worker``) on the PostgreSQL server the suite
starts, which the tests stop and start (``pg_ctl stop -m fast`` drops every connection, like a fail-over).
The outage's length is the fault itself, so it is a timed pause; everything else waits for conditions.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpc_tune.collector.collect import reason_of
from hpc_tune.policy.budget import budget_state
from hpc_tune.policy.reruns import retried_numbers
from tests.chaos.helpers import (
    PLAIN_SPACE,
    assert_nothing_lost,
    finish,
    running,
    start_worker,
    write_plain_objective,
)
from tests.conftest import wait_until, write_config
from tests.worker.test_loop import load, load_when_created

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# Heartbeats every second, a trial is stale after 3 s: outages below are longer than that, so a liveness
# check that does not know about the outage would fail every healthy trial.
FAST_LIVENESS = {"heartbeat_interval": 1, "grace_period": 3, "max_retry": 1}


def _restart_under_workers(postgres_server, cfg: Path, workers: int, outage_s: float, **env: str):  # type: ignore[no-untyped-def]
    procs = [start_worker(cfg, i, **env) for i in range(workers)]
    study, study_dir = load_when_created(cfg)
    assert wait_until(lambda: len(running(study)) >= 2, timeout=120)
    postgres_server.stop("fast")
    time.sleep(outage_s)  # the outage itself
    postgres_server.start()
    return finish(procs), study_dir


def test_restart_with_the_engine_and_median_pruning(tmp_path: Path, pg_url: str, postgres_server) -> None:  # type: ignore[no-untyped-def]
    cfg = write_config(
        tmp_path,
        storage=pg_url,
        trials=12,
        epochs=4,
        pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
        worker=FAST_LIVENESS,
    )
    results, study_dir = _restart_under_workers(postgres_server, cfg, 4, 6.0, HPCTUNE_FAULT="sleep@1:0.4")
    assert [code for code, _ in results] == [0] * 4, results
    assert_nothing_lost(load(cfg)[0], study_dir, total=12)


def test_restart_with_a_plain_objective_that_reports_and_prunes(
    tmp_path: Path, pg_url: str, postgres_server
) -> None:  # type: ignore[no-untyped-def]
    task = write_plain_objective(tmp_path, epochs=5, sleep=0.3)
    cfg = write_config(
        tmp_path,
        storage=pg_url,
        task=task,
        space=PLAIN_SPACE,
        trials=12,
        pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
        worker=FAST_LIVENESS,
    )
    results, study_dir = _restart_under_workers(postgres_server, cfg, 4, 6.0)
    assert [code for code, _ in results] == [0] * 4, results
    study = load(cfg)[0]
    assert_nothing_lost(study, study_dir, total=12)
    assert any(t.state == TrialState.PRUNED for t in study.trials) or all(
        t.state == TrialState.COMPLETE for t in study.trials
    )


# A script tuned as it is: it keeps printing epochs while its worker waits for the database; every line
# must still reach the study, in order, once.
COMMAND_SCRIPT = """
import json, sys, time
lr, hidden = float(sys.argv[1]), int(sys.argv[2])
for epoch in range(1, 6):
    time.sleep(0.3)
    print(json.dumps({"epoch": epoch, "val_acc": lr * hidden * epoch / 50}), flush=True)
"""


def test_restart_under_a_command_task_fails_nothing(tmp_path: Path, pg_url: str, postgres_server) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "train.py"
    script.write_text(COMMAND_SCRIPT)
    cfg = write_config(
        tmp_path,
        storage=pg_url,
        task={"command": f"python {script} {{lr}} {{hidden}}"},
        space=PLAIN_SPACE,
        trials=12,
        epochs=5,
        pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
        worker=FAST_LIVENESS,
    )
    results, study_dir = _restart_under_workers(postgres_server, cfg, 4, 6.0)
    assert [code for code, _ in results] == [0] * 4, results
    assert_nothing_lost(load(cfg)[0], study_dir, total=12)


def test_database_down_90_seconds_workers_wait_and_go_on(
    tmp_path: Path, pg_url: str, postgres_server
) -> None:  # type: ignore[no-untyped-def]
    task = write_plain_objective(tmp_path, epochs=4, sleep=0.5)
    cfg = write_config(tmp_path, storage=pg_url, task=task, space=PLAIN_SPACE, trials=6, worker=FAST_LIVENESS)
    results, study_dir = _restart_under_workers(postgres_server, cfg, 2, 90.0)
    assert [code for code, _ in results] == [0, 0], results
    assert_nothing_lost(load(cfg)[0], study_dir, total=6)


def test_database_down_past_the_deadline_exits_75_then_retries_count_once(
    tmp_path: Path, pg_url: str, postgres_server
) -> None:  # type: ignore[no-untyped-def]
    task = write_plain_objective(tmp_path, epochs=6, sleep=0.5)
    cfg = write_config(
        tmp_path,
        storage=pg_url,
        task=task,
        space=PLAIN_SPACE,
        trials=6,
        pruner={"type": "none"},
        worker={**FAST_LIVENESS, "db_retry_deadline_s": 4},
    )
    results, study_dir = _restart_under_workers(postgres_server, cfg, 2, 15.0)
    assert [code for code, _ in results] == [75, 75], results
    for _, out in results:
        assert "Error: the study database did not answer for 4 s" in out, out
    study = load(cfg)[0]
    stranded = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    assert len(stranded) == 2  # left to the liveness check of the next worker

    ((code, out),) = finish([start_worker(cfg, 0)])
    assert code == 0, out
    trials = load(cfg)[0].get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    for number in stranded:
        assert trials[number].state == TrialState.FAIL
        assert reason_of(trials[number], None, retried) == "heartbeat_stale"
        reruns = [t for t in trials if t.system_attrs.get("failed_trial") == number]
        assert len(reruns) == 1 and reruns[0].state == TrialState.COMPLETE
    state = budget_state(trials, 6)
    assert state.counted == 6 and state.finished == 6 and state.running == 0 and state.waiting == 0
