"""``hpctune run --local``: N worker processes on this machine, one shared study, a progress bar.

The parent is also the liveness monitor for the embedded journal store, which has no heartbeat: it knows its
children's pids, so when one dies from a signal it fails that child's RUNNING trials (reason
``worker_killed``), re-enqueues them with the same parameters and starts a replacement worker.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from hpc_tune import attrs
from hpc_tune.config import LoadedConfig
from hpc_tune.launchers.environment import local_worker_environment
from hpc_tune.policy.budget import budget_state, counts_by_state
from hpc_tune.policy.dead_workers import dead_local_workers
from hpc_tune.policy.shared_study import SharedStudy, fail_running, open_study

POLL_S = 0.5


@dataclass
class LocalReport:
    exit_codes: list[int] = field(default_factory=list)
    recovered_trials: list[int] = field(default_factory=list)
    replacements: int = 0
    logs: list[Path] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def failed_workers(self) -> list[int]:
        """Exit codes of workers that stopped on an error (killed ones are recovered, not failed)."""
        return [c for c in self.exit_codes if c > 0]


@dataclass
class WorkerProcess:
    """One ``hpctune worker`` process this launcher started (``run --local`` and an array task's pack of
    workers, launchers/task_pack.py, both)."""

    index: int
    proc: subprocess.Popen[bytes]
    log: Path


def spawn_worker(
    loaded: LoadedConfig, index: int, env: Mapping[str, str], log: Path, pass_fds: tuple[int, ...] = ()
) -> WorkerProcess:
    """``python -m hpc_tune worker --worker-index INDEX``, its output appended to ``log``; ``env`` carries the
    storage URL (launchers/environment.py), never its argv; ``pass_fds``: a pack worker's gate."""
    log.parent.mkdir(parents=True, exist_ok=True)
    assert loaded.path is not None
    cmd = [sys.executable, "-m", "hpc_tune", "worker", "-c", str(loaded.path), "--worker-index", str(index)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(env), pass_fds=pass_fds)
    return WorkerProcess(index, proc, log)


def _spawn(
    loaded: LoadedConfig, index: int, env: Mapping[str, str], log_dir: Path, generation: int
) -> WorkerProcess:
    log = log_dir / f"local-worker-{index}{'' if generation == 0 else f'.{generation}'}.log"
    return spawn_worker(loaded, index, env, log)


def recover_killed(shared: SharedStudy, loaded: LoadedConfig, pid: int) -> list[int]:
    """Fail and re-run the RUNNING trials of a child that died by a signal (reason ``worker_killed``): on the
    journal store nothing else would, and on PostgreSQL it saves waiting out the heartbeat's grace period."""
    return fail_running(shared, loaded, dead_local_workers({pid}), "worker_killed")


def run_local(
    loaded: LoadedConfig,
    storage_url: str | None,
    workers: int,
    *,
    on_progress: Callable[[dict[str, int]], None] | None = None,
    environ: Mapping[str, str] | None = None,
    max_replacements: int | None = None,
) -> LocalReport:
    """Run ``workers`` processes until the study's budget is used; returns what happened. Their environment
    is launch/environment.py's (the storage URL among it, never in their argv)."""
    config = loaded.config
    env = dict(os.environ if environ is None else environ)
    env.update(local_worker_environment(workers, storage_url, env))
    shared = open_study(loaded, storage_url, with_heartbeat=False)
    study = shared.study
    log_dir = loaded.study_dir / "logs"
    report = LocalReport()
    children = [_spawn(loaded, i, env, log_dir, 0) for i in range(workers)]
    report.logs = [c.log for c in children]
    limit = max_replacements if max_replacements is not None else 2 * workers
    generation = 0
    try:
        while children:
            time.sleep(POLL_S)
            for child in list(children):
                code = child.proc.poll()
                if code is None:
                    continue
                children.remove(child)
                report.exit_codes.append(code)
                if code >= 0:
                    continue
                # Killed by a signal: its trial would stay RUNNING forever on the journal store.
                report.recovered_trials += recover_killed(shared, loaded, child.proc.pid)
                state = budget_state(study.get_trials(deepcopy=False), config.trials)
                if not state.exhausted and report.replacements < limit:
                    generation += 1
                    report.replacements += 1
                    replacement = _spawn(loaded, child.index, env, log_dir, generation)
                    children.append(replacement)
                    report.logs.append(replacement.log)
            if on_progress is not None:
                on_progress(study_counts(study))
    except KeyboardInterrupt:
        for child in children:
            child.proc.terminate()
        for child in children:
            report.exit_codes.append(child.proc.wait())
        raise
    report.counts = study_counts(study)
    if on_progress is not None:
        on_progress(report.counts)
    return report


def study_counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    counts = counts_by_state(trials)
    total = study.user_attrs.get(attrs.TRIALS)
    state = budget_state(trials, int(total) if total else len(trials))
    counts["finished"] = state.finished
    return counts


def first_worker_error(report: LocalReport) -> str | None:
    """The ``Error:`` line a failed worker printed, so the parent can show why instead of a bare code."""
    return first_error_line(report.logs)


def first_error_line(logs: Sequence[Path]) -> str | None:
    """The last ``Error:`` line of the first of ``logs`` that has one, without its ``Error: ``."""
    for log in logs:
        try:
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            if line.startswith("Error: "):
                return line.removeprefix("Error: ")
    return None
