"""progress_of and format_progress over real Optuna studies whose trials carry hand-set start and completion
times, so rates and the ETA are exact numbers for a fixed ``now``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from hpc_tune.collector.progress import RunningTrial, format_progress, progress_of
from hpc_tune.slurm import StudyStatus, TaskState

NOW = datetime(2024, 5, 1, 12, 0)


def at(hh_mm: str) -> datetime:
    hours, minutes, *seconds = (int(part) for part in hh_mm.split(":"))
    return NOW.replace(hour=hours, minute=minutes, second=seconds[0] if seconds else 0)


def add(
    study: optuna.Study,
    state: TrialState,
    start: str | None,
    end: str | None = None,
    epochs: int = 0,
    **attrs: Any,
) -> None:
    trial = create_trial(
        state=state,
        value=0.5 if state == TrialState.COMPLETE else None,
        intermediate_values={step: 0.1 * step for step in range(1, epochs + 1)},
        user_attrs=attrs.get("user_attrs"),
        system_attrs=attrs.get("system_attrs"),
    )
    trial.datetime_start = at(start) if start else None
    trial.datetime_complete = at(end) if end else None
    study.add_trial(trial)


def new_study(trials: int | None = None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="demo")
    if trials is not None:
        study.set_user_attr("trials", trials)
    return study


def busy_study() -> optuna.Study:
    """One trial before the 1 h window, three finished in it, one running on an array task, one waiting."""
    study = new_study()
    add(study, TrialState.COMPLETE, "10:00", "10:40", epochs=4)
    add(study, TrialState.COMPLETE, "10:50", "11:20", epochs=3)  # 20 of its 30 min in the window
    add(study, TrialState.PRUNED, "11:20", "11:30", epochs=1)
    add(study, TrialState.FAIL, "11:30", "11:45")
    worker = {"host": "node3", "pid": 7, "job_id": "905", "array_job_id": "900", "array_task_id": 2}
    add(study, TrialState.RUNNING, "11:40", epochs=2, user_attrs={"worker": worker})
    add(study, TrialState.WAITING, None)
    return study


def test_rates_over_the_window_and_eta_to_the_budget() -> None:
    p = progress_of(busy_study(), budget=10, now=NOW)
    assert p.counts == {"RUNNING": 1, "COMPLETE": 2, "PRUNED": 1, "FAIL": 1, "WAITING": 1}
    assert (p.finished, p.left, p.span, p.finished_in_window) == (4, 6, timedelta(hours=1), 3)
    assert p.trials_per_hour == pytest.approx(3.0)
    # 2 of trial 1's 3 epochs (2/3 of its run fell in the window) + 1 + the running trial's 2, in 60 min.
    assert p.epochs_per_min == pytest.approx(5.0 / 60)
    assert (p.eta, p.eta_unknown) == (timedelta(hours=2), None)
    assert p.running == [
        RunningTrial(
            number=4,
            epoch=2,
            epochs_reported=2,
            host="node3",
            array_job_id="900",
            array_task_id=2,
            started=at("11:40"),
        )
    ]
    assert p.running[0].task == "900_2" and p.array_job_ids == ["900"] and not p.done


def test_format_progress_with_and_without_slurm() -> None:
    p = progress_of(busy_study(), budget=10, now=NOW)
    head = (
        "study demo: 4/10 finished (COMPLETE 2, PRUNED 1, FAIL 1, RUNNING 1, WAITING 1; 0 retried)\n"
        "throughput: 3.0 trials/h, 0.08 epochs/min over the last 1 h; ETA 2 h (6 trials left)\n"
    )
    running = "running (1):\n  trial  epoch  host   task   running for\n      4      2  node3  900_2  20 min"
    assert format_progress(p, None) == head + running

    def task(state: str, task_id: int | None, reason: str, array: str = "900") -> TaskState:
        ref = f"{array}_{task_id}" if task_id is not None else array
        return TaskState(array, task_id, ref, ref, state, "hpctune-demo", reason)

    jobs = StudyStatus(
        "demo",
        "hpctune-demo",
        [
            task("RUNNING", 0, "None"),
            task("RUNNING", 2, "None"),
            task("PENDING", 3, "Resources"),
            task("PENDING", 4, "Priority"),
            task("COMPLETED", 1, "None"),
            task("PENDING", None, "Dependency", array="901"),
        ],
    )
    assert format_progress(p, jobs) == (
        head
        + "slurm: array 900: RUNNING 2, PENDING 2 (Priority, Resources); collector PENDING (Dependency)\n"
        + running
    )
    empty = StudyStatus("demo", "hpctune-demo", [])
    assert format_progress(p, empty) == head + "slurm: no job named hpctune-demo in squeue\n" + running


def test_a_young_study_is_measured_from_its_first_trial() -> None:
    study = new_study(trials=4)
    add(study, TrialState.COMPLETE, "11:50", "11:55", epochs=5)
    add(study, TrialState.RUNNING, "11:55", epochs=1)
    p = progress_of(study, budget=None, now=NOW)
    assert p.budget == 4  # the study's own "trials" attribute, as collect reads it
    assert p.span == timedelta(minutes=10) and p.trials_per_hour == pytest.approx(6.0)
    assert p.epochs_per_min == pytest.approx(0.6)
    assert p.eta == timedelta(minutes=30)
    assert "over the last 10 min; ETA 30 min (3 trials left)" in format_progress(p, None)


def test_a_retried_fail_uses_no_budget_and_no_throughput() -> None:
    study = new_study()
    add(study, TrialState.FAIL, "11:10", "11:20")
    retry = {"failed_trial": 0, "retry_history": [0]}
    add(study, TrialState.COMPLETE, "11:20", "11:40", epochs=2, system_attrs=retry)
    add(study, TrialState.RUNNING, "11:40")
    p = progress_of(study, budget=3, now=NOW)
    assert (p.finished, p.retried, p.finished_in_window, p.left) == (1, 1, 1, 2)
    assert p.trials_per_hour == pytest.approx(1 / (50 / 60))  # one trial in the 50 min since the first start
    assert format_progress(p, None).startswith(
        "study demo: 1/3 finished (COMPLETE 1, PRUNED 0, FAIL 1, RUNNING 1, WAITING 0; 1 retried)\n"
    )


@pytest.mark.parametrize(
    ("build", "budget", "why"),
    [
        (lambda s: add(s, TrialState.RUNNING, "11:00", epochs=3), 5, "no trial finished yet"),
        (
            lambda s: (add(s, TrialState.COMPLETE, "09:00", "10:00"), add(s, TrialState.RUNNING, "10:00")),
            5,
            "no trial finished in the last 1 h",
        ),
        (lambda s: add(s, TrialState.COMPLETE, "11:00", "11:30"), 5, "no trial is running"),
        (
            lambda s: (add(s, TrialState.COMPLETE, "11:00", "11:30"), add(s, TrialState.RUNNING, "11:30")),
            None,
            "no budget: the study has no 'trials' attribute and no config was given",
        ),
    ],
    ids=["nothing-finished", "nothing-recent", "nothing-running", "no-budget"],
)
def test_eta_unknown_says_why(build: Any, budget: int | None, why: str) -> None:
    study = new_study()
    build(study)
    p = progress_of(study, budget=budget, now=NOW)
    assert (p.eta, p.eta_unknown, p.done) == (None, why, False)
    assert format_progress(p, None).splitlines()[1].endswith(f"; ETA unknown ({why})")


def test_no_rate_from_the_first_seconds_of_a_study() -> None:
    study = new_study()
    add(study, TrialState.COMPLETE, "11:59:20", "11:59:50", epochs=1)
    add(study, TrialState.RUNNING, "11:59:50")
    p = progress_of(study, budget=3, now=NOW)
    assert (p.span, p.trials_per_hour, p.epochs_per_min, p.eta) == (timedelta(seconds=40), None, None, None)
    assert format_progress(p, None).splitlines()[1] == (
        "throughput: too early to measure (first trial started 40 s ago); "
        "ETA unknown (too early to measure the throughput)"
    )


def test_done_only_when_the_budget_is_used_and_nothing_runs() -> None:
    study = new_study()
    add(study, TrialState.COMPLETE, "11:00", "11:30", epochs=2)
    add(study, TrialState.RUNNING, "11:30", epochs=1)
    p = progress_of(study, budget=1, now=NOW)
    assert not p.done and p.eta is None and p.eta_unknown is None
    assert (
        format_progress(p, None)
        .splitlines()[1]
        .endswith("; budget used; the last trials are still to finish")
    )
    study.tell(1, 0.7)
    p = progress_of(study, budget=1, now=NOW)
    assert p.done
    assert format_progress(p, None).splitlines()[1].endswith("; done: budget used, nothing running")


def test_an_empty_study() -> None:
    p = progress_of(new_study(), budget=3, now=NOW)
    assert (p.span, p.trials_per_hour, p.epochs_per_min, p.eta_unknown) == (
        None,
        None,
        None,
        "no trial finished yet",
    )
    assert format_progress(p, None) == (
        "study demo: 0/3 finished (COMPLETE 0, PRUNED 0, FAIL 0, RUNNING 0, WAITING 0; 0 retried)\n"
        "throughput: no trial started yet; ETA unknown (no trial finished yet)"
    )


def test_a_local_worker_has_a_host_and_no_task() -> None:
    study = new_study()
    add(study, TrialState.RUNNING, "11:58", user_attrs={"worker": {"host": "laptop", "pid": 1}})
    add(study, TrialState.RUNNING, "11:59")  # a trial of a worker from before provenance was recorded
    p = progress_of(study, budget=2, now=NOW)
    assert [(t.epoch, t.host, t.task) for t in p.running] == [(None, "laptop", None), (None, None, None)]
    assert p.array_job_ids == []
    assert format_progress(p, None).splitlines()[-3:] == [
        "  trial  epoch  host    task  running for",
        "      0      -  laptop  -     2 min",
        "      1      -  -       -     1 min",
    ]


# --- GPU-hours so far and at the budget: `hpctune status` on a real journal study ---------------------------

HOURS_STUDY = "t-hours"
TWO_GPUS = {"kind": "gpu", "count": 2, "ids": ["0", "1"]}
# trial: (state, the seconds its record says it ran, reason); trial 4 continues trial 3, handed on at the
# walltime, and is running: its record holds its seconds so far (as a record written at an epoch would), so
# that nothing here depends on the clock.
HOURS_TRIALS = {
    0: (TrialState.COMPLETE, 3600.0, None),
    1: (TrialState.PRUNED, 1800.0, "pruned"),
    2: (TrialState.FAIL, 900.0, "oom"),
    3: (TrialState.FAIL, 2700.0, "walltime"),
    4: (TrialState.RUNNING, 600.0, None),
}


def _journal_study(study_dir: Any, budget: int | None) -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study_dir.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(study_dir / "journal.log")))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=study_dir.name, storage=storage, direction="maximize")
    if budget is not None:
        study.set_user_attr("trials", budget)
    return study


def hours_study(root: Any, budget: int, trials: dict[int, tuple[TrialState, float, str | None]]) -> Any:
    """runs/t-hours on the embedded journal store, as hpctune's workers leave it: the trials in the storage,
    one record each with its 2 GPUs and ``device_seconds``, and two workers' timelines."""
    from hpc_tune.storage.records import TrialRecord, write_trial
    from hpc_tune.storage.timelines import Segment, WorkerTimeline, timeline_path

    study_dir = root / "runs" / HOURS_STUDY
    study = _journal_study(study_dir, budget)
    start = datetime.now() - timedelta(hours=3)
    for number, (state, seconds, reason) in trials.items():
        system = {"failed_trial": 3, "retry_history": [3]} if number == 4 else {}
        trial = create_trial(
            state=state,
            value=0.5 if state == TrialState.COMPLETE else None,
            intermediate_values={1: 0.4},
            user_attrs={"reason": reason} if reason else {},
            system_attrs=system,
        )
        trial.datetime_start = start
        trial.datetime_complete = None if state == TrialState.RUNNING else start + timedelta(seconds=seconds)
        study.add_trial(trial)
        record = TrialRecord(study=HOURS_STUDY, trial=number, params={}, state=state.name, reason=reason)
        record.devices, record.duration_s, record.device_seconds = TWO_GPUS, seconds, 2 * seconds
        write_trial(study_dir, record)
    t0 = 1_767_000_000.0
    for pid, idle in ((11, (40.0, 5.0, 3.0)), (12, (70.0, 20.0, 9.0))):
        segments = [
            Segment("starting", t0, t0 + idle[0]),
            Segment("waiting", t0 + idle[0], t0 + idle[0] + idle[1]),
            Segment("trial", t0 + idle[0] + idle[1], t0 + 1000, pid - 11),
            Segment("exiting", t0 + 1000, t0 + 1000 + idle[2]),
        ]
        WorkerTimeline("node", pid, {}, TWO_GPUS, segments, path=timeline_path(study_dir, "node", pid)).save()
    return study_dir


def _expected_hours_line(study_dir: Any, budget: int) -> str:
    """The line, computed here from the files the test wrote (not through hpctune's reading of them)."""
    import json

    records = [json.loads(p.read_text()) for p in sorted((study_dir / "trials").glob("trial-*.json"))]
    timelines = [json.loads(p.read_text()) for p in sorted((study_dir / "workers").glob("*.json"))]
    so_far = sum(r["device_seconds"] for r in records) / 3600
    idle = sum(
        (s["end"] - s["start"]) * t["devices"]["count"] / 3600
        for t in timelines
        for s in t["segments"]
        if s["activity"] != "trial"
    )
    running = [r["device_seconds"] / 3600 for r in records if r["state"] == "RUNNING"]
    retried = {3}  # trial 4 continues it: its hours count, its place in the budget does not
    finished = [r for r in records if r["state"] != "RUNNING" and r["trial"] not in retried]
    per_finished = (so_far - sum(running)) / len(finished)
    projected = (
        so_far
        + per_finished * (budget - len(finished) - len(running))
        + sum(max(per_finished - h, 0.0) for h in running)
    )
    at_budget = f"about {projected:.3g} at the budget of {budget} trials"
    return f"GPU-hours: {so_far:.3g} so far (+{idle:.3g} idle); {at_budget}"


def _status(root: Any, *args: str, study: str = HOURS_STUDY) -> str:
    from click.testing import CliRunner

    from hpc_tune.cli import cli

    command = ["status", study, "--results", str(root / "runs"), *args]
    result = CliRunner().invoke(cli, command, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture()
def no_config(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)  # no hpctune.yaml here: the study is found by name on the embedded store
    monkeypatch.delenv("HPCTUNE_STORAGE", raising=False)
    return tmp_path


def test_status_prints_the_hours_so_far_and_the_projection_to_the_budget(no_config: Any) -> None:
    study_dir = hours_study(no_config, 10, HOURS_TRIALS)
    expected = _expected_hours_line(study_dir, 10)
    lines = _status(no_config).splitlines()
    assert lines[0].startswith(f"study {HOURS_STUDY}: 3/10 finished")
    assert lines[2] == expected, (lines, expected)
    watched = _status(no_config, "--watch", "--count", "2", "--interval", "0.1")
    assert watched.count(expected + "\n") == 2


def test_no_projection_before_the_first_finished_trial_nor_without_a_budget(no_config: Any) -> None:
    hours_study(no_config, 4, {0: (TrialState.RUNNING, 900.0, None)})
    line = _status(no_config).splitlines()[2]
    assert line.startswith(f"GPU-hours: {2 * 900 / 3600:.3g} so far (+")
    assert line.endswith("; projection after the first finished trial")

    # A foreign study: no budget, no record, no timeline: trial-hours from Optuna's own times.
    study = _journal_study(no_config / "runs" / "plain", None)
    add(study, TrialState.COMPLETE, "09:00", "09:45")
    add(study, TrialState.COMPLETE, "10:00", "11:30")
    line = _status(no_config, study="plain").splitlines()[2]
    assert line == f"trial-hours: {(45 + 90) / 60:.3g} so far; no projection without a budget"


def test_each_refresh_reads_the_storage_once_and_the_study_folder_once(
    no_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hours reuse the refresh's trials: one more refresh is one more get_trials, one more read of the
    records and one of the timelines, and nothing else."""
    import hpc_tune.collector.hours_projection as hours_module

    hours_study(no_config, 10, HOURS_TRIALS)
    calls: dict[str, int] = {"get_trials": 0, "read_trials": 0, "read_timelines": 0}

    def counting(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(optuna.Study, "get_trials", counting("get_trials", optuna.Study.get_trials))
    for name in ("read_trials", "read_timelines"):
        monkeypatch.setattr(hours_module, name, counting(name, getattr(hours_module, name)))
    seen = []
    for count in ("2", "3"):
        for key in calls:
            calls[key] = 0
        _status(no_config, "--watch", "--count", count, "--interval", "0.1")
        seen.append(dict(calls))
    assert {k: seen[1][k] - seen[0][k] for k in calls} == {
        "get_trials": 1,
        "read_trials": 1,
        "read_timelines": 1,
    }
    assert seen[0]["read_trials"] == seen[0]["read_timelines"] == 2
