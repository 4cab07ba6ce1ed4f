"""SLURM's commands behind plain functions: sbatch, squeue, scancel, scontrol.

Everything that talks to SLURM goes through :func:`run_slurm`, so a missing command or a refusal always
becomes one :class:`SlurmError` line a user can act on, and tests can point ``PATH`` elsewhere to fake or
hide SLURM.
``sacct`` is not used: without accounting it does not exist, and ``squeue -r`` tells us what we need.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hpc_tune.errors import SlurmError
from hpc_tune.slurm.array_spec import _UINT_RE, DEFAULT_MAX_ARRAY_SIZE

# States in which a job still has work to do (or will run again): a collector must wait for these.
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "RUNNING",
        "CONFIGURING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "SUSPENDED",
        "STOPPED",
        "PREEMPTED",
        "RESV_DEL_HOLD",
        "SPECIAL_EXIT",
    }
)
_TIMEOUT_S = 60.0


def job_name_for(study: str) -> str:
    """The one job name of a study: squeue, scancel and ``--dependency=singleton`` all key on it."""
    return f"hpctune-{study}"


# --- running SLURM commands ---------------------------------------------------------------------------------


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def run_slurm(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = _TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run one SLURM command; every way it can go wrong becomes a one-line SlurmError."""
    cmd = argv[0]
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            env=None if env is None else dict(env),
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise SlurmError(f"{cmd} not found: is SLURM installed?", "PATH") from None
    except PermissionError as exc:
        raise SlurmError(f"{cmd} cannot be run: {exc.strerror}", "PATH") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{cmd} did not answer in {timeout:g} s: is slurmctld up?") from None
    if proc.returncode != 0:
        line = _first_line(proc.stderr) or _first_line(proc.stdout) or f"exit status {proc.returncode}"
        line = line.removeprefix(f"{cmd}: ")
        raise SlurmError(f"{cmd}: {line}")
    return proc


def sbatch(
    script: str | os.PathLike[str],
    *,
    dependency: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> str:
    """Submit ``script``; return the job id (for an array, the array job id)."""
    argv = sbatch_argv(script, dependency=dependency, extra_args=extra_args)
    return _job_id_from_parsable(run_slurm(argv, env=env))


def sbatch_argv(
    script: str | os.PathLike[str], *, dependency: str | None = None, extra_args: Sequence[str] = ()
) -> list[str]:
    """The exact argv :func:`sbatch` runs, so ``submit --dry-run`` shows what a real submit would do."""
    argv = ["sbatch", "--parsable"]
    if dependency:
        argv.append(f"--dependency={dependency}")
    argv.extend(extra_args)
    argv.append(os.fspath(script))
    return argv


def _job_id_from_parsable(proc: subprocess.CompletedProcess[str]) -> str:
    # --parsable prints "<jobid>" or "<jobid>;<cluster>"; warnings may precede it on stdout.
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    job_id = lines[-1].split(";", 1)[0] if lines else ""
    if not _UINT_RE.match(job_id):
        raise SlurmError(f"sbatch: unexpected answer {_first_line(proc.stdout)!r} (expected a job id)")
    return job_id


@dataclass(frozen=True)
class TaskState:
    """One line of ``squeue -r``: an array task (or a plain job such as the collector)."""

    array_job_id: str  # %F: the array's job id (a plain job's own id)
    task_id: int | None  # %K: None for a plain job
    job_ref: str  # %i: "123_4" for a task
    job_id: str  # %A: the task's own job id once it started (pending tasks show the array's)
    state: str  # %T: PENDING, RUNNING, COMPLETED, ...
    name: str  # %j
    reason: str  # %r: why it is pending ("Dependency", "BeginTime", "None", ...)

    @property
    def is_array_task(self) -> bool:
        return self.task_id is not None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


_SQUEUE_FORMAT = "%F %K %i %A %T %j %r"


def squeue_study(job_name: str, *, all_states: bool = False, mine: bool = True) -> list[TaskState]:
    """The jobs called ``job_name``; ``-r`` unfolds pending array tasks so each task is one line.

    ``all_states`` adds jobs that ended within MinJobAge (300 s by default) for a status view; ``mine`` keeps
    other users' jobs of the same name out (they are not ours to wait for or cancel).
    """
    argv = ["squeue", "-r", "-h", "-o", _SQUEUE_FORMAT, f"--name={job_name}"]
    if mine:
        argv.append("--me")
    if all_states:
        argv.append("--states=all")
    lines = run_slurm(argv).stdout.splitlines()
    return [_parse_squeue_line(line, job_name) for line in lines if line.strip()]


def _parse_squeue_line(line: str, job_name: str) -> TaskState:
    fields = line.split(None, 5)
    if len(fields) < 6:
        raise SlurmError(f"squeue: cannot read line {line!r}")
    array_job_id, task, job_ref, job_id, state, rest = fields
    # The name may hold spaces in general; ours never does, and we asked squeue for exactly that name.
    if rest.startswith(job_name):
        name, reason = job_name, rest[len(job_name) :].strip()
    else:
        name, _, reason = rest.partition(" ")
    return TaskState(
        array_job_id=array_job_id,
        task_id=int(task) if _UINT_RE.match(task) else None,
        job_ref=job_ref,
        job_id=job_id,
        state=state,
        name=name,
        reason=reason.strip(),
    )


def scancel(job_ids: Iterable[str] = (), *, job_name: str | None = None) -> None:
    """Cancel jobs by id (``123`` or ``123_4``) and/or every one of our jobs with ``job_name``."""
    argv = ["scancel", *job_ids]
    if job_name is not None:
        argv += [f"--name={job_name}", "--me"]
    if len(argv) == 1:
        return
    run_slurm(argv)


def max_array_size(*, fallback: int | None = None) -> int:
    """MaxArraySize of the running cluster; ``fallback`` (if given) when SLURM cannot be asked (dry runs)."""
    try:
        out = run_slurm(["scontrol", "show", "config"]).stdout
    except SlurmError:
        if fallback is not None:
            return fallback
        raise
    match = re.search(r"^\s*MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


# --- inside a job -------------------------------------------------------------------------------------------
