"""SLURM, kept small and behind plain functions: array specs, sbatch/squeue/scancel/scontrol, a task's env.

Everything that talks to SLURM goes through :func:`_run`, so a missing command or a refusal always becomes one
:class:`SlurmError` line a user can act on, and tests can point ``PATH`` elsewhere to fake or hide SLURM.
``sacct`` is not used: without accounting it does not exist, and ``squeue -r`` tells us what we need.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hpc_tune.errors import SlurmError

__all__ = [
    "ACTIVE_STATES",
    "ArrayChunk",
    "ArraySpec",
    "DEFAULT_MAX_ARRAY_SIZE",
    "OFFSET_ENV",
    "SlurmEnv",
    "TaskState",
    "job_name_for",
    "max_array_size",
    "requeue_own_task",
    "requeue_self",
    "sbatch",
    "scancel",
    "squeue_study",
]

# SLURM's default MaxArraySize; the largest allowed INDEX is one less (0-1000 passes, 0-1001 fails).
DEFAULT_MAX_ARRAY_SIZE = 1001
# SLURM refuses MaxArraySize above 4000001: an index beyond that is a typo, and refusing it early keeps
# ``indices`` from allocating billions of ints.
_MAX_INDEX = 4_000_000
# Added to SLURM_ARRAY_TASK_ID when a request beyond MaxArraySize was split into several arrays.
OFFSET_ENV = "HPCTUNE_ARRAY_OFFSET"
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
# ASCII digits only: \d would accept other scripts' digits, which int() reads and SLURM does not.
_RANGE_RE = re.compile(r"^([0-9]+)(?:-([0-9]+)(?::([0-9]+))?)?$")
_UINT_RE = re.compile(r"^[0-9]+$")


# --- array specs --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySpec:
    """A ``--array`` value, parsed once so that bad specs fail before anything reaches sbatch.

    ``ranges`` keeps the user's own ``(first, last, step)`` triples so ``str()`` gives back what they wrote.
    """

    ranges: tuple[tuple[int, int, int], ...]
    parallelism: int | None = None

    @classmethod
    def parse(cls, text: str) -> ArraySpec:
        raw = text.strip() if isinstance(text, str) else ""
        if not raw:
            raise SlurmError("empty --array spec (expected e.g. 0-31%8, 1,3,5 or 0-15:2)")
        body, pct, limit = raw.partition("%")
        parallelism: int | None = None
        if pct:
            if not _UINT_RE.match(limit) or int(limit) < 1:
                raise SlurmError(f"invalid --array spec {raw!r}: the %N limit must be a whole number >= 1")
            parallelism = int(limit)
        if not body:
            raise SlurmError(f"invalid --array spec {raw!r}: no indices before %")
        ranges = []
        for part in body.split(","):
            match = _RANGE_RE.match(part)
            if match is None:
                raise SlurmError(
                    f"invalid --array spec {raw!r}: {part!r} is not N, N-M or N-M:S with whole numbers >= 0"
                )
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) is not None else first
            step = int(match.group(3)) if match.group(3) is not None else 1
            if last < first:
                raise SlurmError(f"invalid --array spec {raw!r}: range {part!r} ends before it starts")
            if step < 1:
                raise SlurmError(f"invalid --array spec {raw!r}: step in {part!r} must be >= 1")
            if last > _MAX_INDEX:
                raise SlurmError(
                    f"invalid --array spec {raw!r}: index {last} is above SLURM's limit {_MAX_INDEX}"
                )
            ranges.append((first, last, step))
        return cls(tuple(ranges), parallelism)

    @classmethod
    def from_indices(cls, indices: Iterable[int], parallelism: int | None = None) -> ArraySpec:
        """The shortest spec for a set of indices (runs with a common step become ``a-b:s``)."""
        values = sorted(set(indices))
        if not values:
            raise SlurmError("an array needs at least one index")
        if values[0] < 0:
            raise SlurmError(f"array index {values[0]} is negative")
        ranges: list[tuple[int, int, int]] = []
        i = 0
        while i < len(values):
            j = i
            if i + 1 < len(values):
                step = values[i + 1] - values[i]
                while j + 1 < len(values) and values[j + 1] - values[j] == step:
                    j += 1
                # Two values as a:b:s read worse than "a,b"; three or more (or any consecutive run) compress.
                if j - i >= 2 or (j - i == 1 and step == 1):
                    ranges.append((values[i], values[j], step))
                    i = j + 1
                    continue
            ranges.append((values[i], values[i], 1))
            i += 1
        return cls(tuple(ranges), parallelism)

    def __str__(self) -> str:
        parts = []
        for first, last, step in self.ranges:
            if first == last:
                parts.append(str(first))
            elif step == 1:
                parts.append(f"{first}-{last}")
            else:
                parts.append(f"{first}-{last}:{step}")
        text = ",".join(parts)
        return f"{text}%{self.parallelism}" if self.parallelism is not None else text

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(sorted({i for first, last, step in self.ranges for i in range(first, last + 1, step)}))

    @property
    def max_index(self) -> int:
        return max(first + (last - first) // step * step for first, last, step in self.ranges)

    @property
    def count(self) -> int:
        return len(self.indices)

    def with_parallelism(self, parallelism: int | None) -> ArraySpec:
        if parallelism is not None and parallelism < 1:
            raise SlurmError(f"array parallelism must be >= 1, got {parallelism}")
        return ArraySpec(self.ranges, parallelism)

    def split(self, max_array_size: int = DEFAULT_MAX_ARRAY_SIZE) -> list[ArrayChunk]:
        """Arrays that SLURM accepts, each with the offset its tasks add to SLURM_ARRAY_TASK_ID.

        MaxArraySize bounds the largest index, not the count, so a request fits when ``max_index`` does;
        otherwise indices are cut into windows of ``max_array_size`` and shifted down by the window's start.
        """
        if max_array_size < 1:
            raise SlurmError(f"MaxArraySize must be >= 1, got {max_array_size}")
        if self.max_index < max_array_size:
            return [ArrayChunk(self, 0)]
        windows: dict[int, list[int]] = {}
        for index in self.indices:
            offset = index // max_array_size * max_array_size
            windows.setdefault(offset, []).append(index - offset)
        return [
            ArrayChunk(ArraySpec.from_indices(local, self.parallelism), offset)
            for offset, local in sorted(windows.items())
        ]


@dataclass(frozen=True)
class ArrayChunk:
    """One sbatch-able array: its tasks' global index is ``offset + SLURM_ARRAY_TASK_ID``."""

    spec: ArraySpec
    offset: int

    @property
    def global_indices(self) -> tuple[int, ...]:
        return tuple(self.offset + i for i in self.spec.indices)


def job_name_for(study: str) -> str:
    """The one job name of a study: squeue, scancel and ``--dependency=singleton`` all key on it."""
    return f"hpctune-{study}"


# --- running SLURM commands ---------------------------------------------------------------------------------


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _run(
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
    return _job_id_from_parsable(_run(argv, env=env))


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
    return [_parse_squeue_line(line, job_name) for line in _run(argv).stdout.splitlines() if line.strip()]


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
    _run(argv)


def max_array_size(*, fallback: int | None = None) -> int:
    """MaxArraySize of the running cluster; ``fallback`` (if given) when SLURM cannot be asked (dry runs)."""
    try:
        out = _run(["scontrol", "show", "config"]).stdout
    except SlurmError:
        if fallback is not None:
            return fallback
        raise
    match = re.search(r"^\s*MaxArraySize\s*=\s*(\d+)", out, re.MULTILINE)
    return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


# --- inside a job -------------------------------------------------------------------------------------------


def _env_int(environ: Mapping[str, str], key: str) -> int | None:
    value = environ.get(key, "").strip()
    if not value:
        return None
    if not _UINT_RE.match(value):
        raise SlurmError(f"{key}={value!r} is not a whole number", "environment")
    return int(value)


@dataclass(frozen=True)
class SlurmEnv:
    """What SLURM told this process about its job; all None outside SLURM (local runs)."""

    job_id: str | None = None
    array_job_id: str | None = None
    array_task_id: int | None = None
    restart_count: int = 0  # SLURM_RESTART_COUNT: unset on the first run, 1 after one requeue
    array_offset: int = 0  # HPCTUNE_ARRAY_OFFSET: nonzero for the later parts of a split array

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SlurmEnv:
        env = os.environ if environ is None else environ
        return cls(
            job_id=env.get("SLURM_JOB_ID") or None,
            array_job_id=env.get("SLURM_ARRAY_JOB_ID") or None,
            array_task_id=_env_int(env, "SLURM_ARRAY_TASK_ID"),
            restart_count=_env_int(env, "SLURM_RESTART_COUNT") or 0,
            array_offset=_env_int(env, OFFSET_ENV) or 0,
        )

    @property
    def in_slurm(self) -> bool:
        return self.job_id is not None

    @property
    def in_array(self) -> bool:
        return self.array_job_id is not None and self.array_task_id is not None

    @property
    def global_task_id(self) -> int | None:
        """The task's index in the whole request, also when it was split into several arrays."""
        return None if self.array_task_id is None else self.array_offset + self.array_task_id

    @property
    def task_ref(self) -> str | None:
        """What scontrol/scancel need to name exactly this task (never the bare SLURM_JOB_ID of a task)."""
        if self.in_array:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id

    def user_attrs(self) -> dict[str, str | int | None]:
        """Trial user_attrs (``slurm.*``) that tie a trial to the log file and squeue line of its task;
        none outside SLURM (each attr is a database write per trial)."""
        if not self.in_slurm:
            return {}
        return {
            "slurm.job_id": self.job_id,
            "slurm.array_job_id": self.array_job_id,
            "slurm.array_task_id": self.array_task_id,
            "slurm.global_task_id": self.global_task_id,
            "slurm.restart_count": self.restart_count,
        }


def requeue_self() -> str:
    """The bash line that requeues the running array task, for scripts and docs.

    The braces matter: ``$SLURM_ARRAY_JOB_ID_`` is another (unset) variable. And never ``$SLURM_JOB_ID``
    alone: in the last-started task it is the whole array's id, and the requeue would hit every task.
    """
    return 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"'


def requeue_own_task(env: SlurmEnv | None = None) -> str:
    """Put this task back in the queue (it needs ``--requeue``, which rendered scripts carry); return its ref.

    Call it last, after the checkpoint is on disk and the trial is marked for resume: SLURM then ends the
    running task (SIGTERM, later SIGKILL) and starts it again ~11 s later with SLURM_RESTART_COUNT=1 under the
    local settings, ~2 min with SLURM's defaults.
    """
    env = SlurmEnv.from_environ() if env is None else env
    ref = env.task_ref
    if ref is None:
        raise SlurmError("cannot requeue: not running under SLURM (no SLURM_JOB_ID)", "environment")
    _run(["scontrol", "requeue", ref])
    return ref
