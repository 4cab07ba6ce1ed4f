"""Submit a study to SLURM (worker array(s) + one collector), look at it, cancel it, guard the collector.

Submission is all or nothing: a collector that fails to submit would leave an array whose results nobody
collects, so the arrays already queued are cancelled before the error is raised.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hpc_tune import attrs
from hpc_tune.config import LoadedConfig
from hpc_tune.errors import SlurmError
from hpc_tune.launchers.scripts import RenderedScripts, array_sbatch_args, render_scripts
from hpc_tune.policy.shared_study import SharedStudy, fail_running
from hpc_tune.slurm import (
    DEFAULT_MAX_ARRAY_SIZE,
    ArraySpec,
    SlurmEnv,
    StudyStatus,
    job_name_for,
    max_array_size,
    sbatch,
    sbatch_argv,
    scancel,
    squeue_study,
)

__all__ = [
    "SubmitResult",
    "cancel",
    "fail_trials_of_jobs",
    "guard_collector",
    "status",
    "submit",
]

COLLECT_SCRIPT_ENV = "HPCTUNE_COLLECT_SCRIPT"
# Exported by `hpctune submit` to the study server's job: it submitted the array itself (server.sh.j2).
SUBMITTED_ENV = "HPCTUNE_SUBMITTED"


@dataclass(frozen=True)
class SubmitResult:
    """What was (or, for a dry run, would be) submitted; ``commands`` are shell lines a user can paste."""

    scripts: RenderedScripts
    commands: list[str]
    array_job_ids: list[str] = field(default_factory=list)
    collect_job_id: str | None = None
    server_job_id: str | None = None
    dry_run: bool = False


def _array_dependency(chunk_index: int, array: ArraySpec, previous: str | None) -> str | None:
    # With a %N limit, the parts of a split array run one after another, so no more than N tasks run at once.
    if chunk_index == 0 or array.parallelism is None or previous is None:
        return None
    return f"afterany:{previous}"


def submit(
    loaded: LoadedConfig,
    array: ArraySpec,
    *,
    dry_run: bool = False,
    out_dir: Path | None = None,
    hpctune_cmd: str = "hpctune",
) -> SubmitResult:
    """Render the scripts, sbatch the array (or its parts), then the collector with afterany on all parts;
    with the study server, its job first and the array once it has started (``after``).

    Every part is exported ``HPCTUNE_COLLECTOR=submitted``, so its first task does not submit a second
    collector (or the other parts again), as it does when the array script is submitted by hand; the server
    ``HPCTUNE_SUBMITTED=array``, so it does not submit the array again. A dry run renders and returns the
    commands with ``$SERVER`` and ``$ARRAY_<i>`` in place of job ids and needs no SLURM.
    """
    limit = max_array_size(fallback=DEFAULT_MAX_ARRAY_SIZE) if dry_run else max_array_size()
    scripts = render_scripts(loaded, array, out_dir=out_dir, hpctune_cmd=hpctune_cmd, max_array_size=limit)
    chunks = scripts.chunks
    effective = chunks[0].spec  # carries the parallelism actually used (spec's own or the config's)

    server_args = [f"--export=ALL,{SUBMITTED_ENV}=array"]
    if dry_run:
        commands = []
        if scripts.server_path is not None:
            argv = sbatch_argv(scripts.server_path, extra_args=server_args)
            commands.append(f"SERVER=$({_join_keeping_vars(argv)})")
        for i, chunk in enumerate(chunks):
            dep = _array_dependency(i, effective, f"${{ARRAY_{i - 1}}}")
            if i == 0 and scripts.server_path is not None:
                dep = "after:${SERVER}"
            extra = array_sbatch_args(chunk, len(chunks))
            argv = sbatch_argv(scripts.array_path, dependency=dep, extra_args=extra)
            commands.append(f"ARRAY_{i}=$({_join_keeping_vars(argv)})")
        deps = ":".join(f"${{ARRAY_{i}}}" for i in range(len(chunks)))
        commands.append(_join_keeping_vars(sbatch_argv(scripts.collect_path, dependency=f"afterany:{deps}")))
        return SubmitResult(scripts=scripts, commands=commands, dry_run=True)

    commands: list[str] = []
    array_ids: list[str] = []
    server_id = None
    if scripts.server_path is not None:
        commands.append(shlex.join(sbatch_argv(scripts.server_path, extra_args=server_args)))
        server_id = sbatch(scripts.server_path, extra_args=server_args)
    try:
        for i, chunk in enumerate(chunks):
            dep = _array_dependency(i, effective, array_ids[-1] if array_ids else None)
            if i == 0 and server_id is not None:
                dep = f"after:{server_id}"  # the array starts once the server has started
            extra = array_sbatch_args(chunk, len(chunks))
            commands.append(shlex.join(sbatch_argv(scripts.array_path, dependency=dep, extra_args=extra)))
            array_ids.append(sbatch(scripts.array_path, dependency=dep, extra_args=extra))
        dependency = "afterany:" + ":".join(array_ids)
        commands.append(shlex.join(sbatch_argv(scripts.collect_path, dependency=dependency)))
        collect_id = sbatch(scripts.collect_path, dependency=dependency)
    except SlurmError as exc:
        if server_id is None and not array_ids:
            raise
        undone = _undo(array_ids) if server_id is None else _undo([server_id, *array_ids], "job(s)")
        raise SlurmError(f"{exc.what}; {undone}", exc.where) from None
    return SubmitResult(
        scripts=scripts,
        commands=commands,
        array_job_ids=array_ids,
        collect_job_id=collect_id,
        server_job_id=server_id,
    )


def _join_keeping_vars(argv: list[str]) -> str:
    # shlex.join would single-quote "$ARRAY_0" and the pasted line would pass it literally.
    return " ".join(a if "${ARRAY_" in a and "'" not in a else shlex.quote(a) for a in argv)


def _undo(job_ids: list[str], what: str = "array job(s)") -> str:
    try:
        scancel(job_ids)
    except SlurmError as exc:
        return f"could not cancel the already submitted {what} {', '.join(job_ids)}: {exc.what}"
    return f"cancelled the already submitted {what} {', '.join(job_ids)}"


def status(loaded: LoadedConfig) -> StudyStatus:
    name = job_name_for(loaded.config.study)
    return StudyStatus(study=loaded.config.study, job_name=name, tasks=squeue_study(name, all_states=True))


def cancel(loaded: LoadedConfig) -> list[str]:
    """Cancel every active job of the study (arrays and collectors); return the job ids cancelled. Their
    trials are failed by the workers on SIGTERM; ``fail_trials_of_jobs`` fails those of SIGKILLed ones."""
    name = job_name_for(loaded.config.study)
    ids = sorted({t.array_job_id for t in squeue_study(name) if t.active}, key=int)
    if ids:
        scancel(ids)
    return ids


def guard_collector(
    loaded: LoadedConfig,
    script_path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> list[str] | None:
    """Close singleton's hole: a task that requeued itself is not waited for, so check squeue ourselves.

    If array tasks of the study are still active, resubmit the collector script (``script_path``, default
    ``$HPCTUNE_COLLECT_SCRIPT`` set by the rendered script) with afterany on their arrays and return those
    array job ids: the caller then exits 0 without collecting. None means nothing is pending: collect now.
    """
    env = os.environ if environ is None else environ
    me = SlurmEnv.from_environ(env).job_id
    name = job_name_for(loaded.config.study)
    waiting = [t for t in squeue_study(name) if t.is_array_task and t.active and t.job_id != me]
    if not waiting:
        return None
    ids = sorted({t.array_job_id for t in waiting}, key=int)
    script = script_path if script_path is not None else env.get(COLLECT_SCRIPT_ENV)
    if not script:
        raise SlurmError(
            f"tasks of {name} are still queued ({', '.join(ids)}) and the collector script is unknown",
            COLLECT_SCRIPT_ENV,
        )
    sbatch(script, dependency="afterany:" + ":".join(ids))
    return ids


def fail_trials_of_jobs(
    shared: SharedStudy, loaded: LoadedConfig, job_ids: list[str], timeout: float = 90.0
) -> list[int]:
    """After ``scancel``: wait until the jobs are gone, then fail (and re-run) their RUNNING trials."""
    deadline = time.monotonic() + timeout
    name = job_name_for(loaded.config.study)
    while time.monotonic() < deadline and any(
        t.active and t.array_job_id in job_ids for t in squeue_study(name)
    ):
        time.sleep(1.0)
    return fail_running(
        shared, loaded, lambda t: str(attrs.worker_of(t).get("array_job_id")) in job_ids, "cancelled"
    )
