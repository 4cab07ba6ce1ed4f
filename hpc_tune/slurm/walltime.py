"""How long a running task has until SLURM's time limit: what walltime-aware admission compares with.

SLURM 22.05 tells a batch job its limit nowhere in its environment, so the task asks ``squeue`` for its own
line (``%L`` time left, ``%l`` limit, both ``[D-]HH:MM:SS`` or ``MM:SS``). The answer is turned into a
deadline on this process's monotonic clock at once: the worker then needs no further call until it is about
to refuse a trial, when it asks again in case an administrator extended the limit.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from hpc_tune.errors import SlurmError
from hpc_tune.slurm.commands import run_slurm
from hpc_tune.slurm.environment import SlurmEnv

_DURATION_RE = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_duration(text: str) -> int | None:
    """Seconds of a squeue duration; None for UNLIMITED, INVALID, NOT_SET or anything else unparseable.

    squeue writes ``MM:SS`` under an hour, ``H:MM:SS`` above, ``D-HH:MM:SS`` beyond a day (and ``D-HH`` or
    ``D-HH:MM`` only in what users type, which is read the same way as sbatch reads it)."""
    match = _DURATION_RE.match(text.strip())
    if match is None:
        return None
    days, first, second, third = match.groups()
    numbers = [int(v) for v in (first, second, third) if v is not None]
    if days is not None:
        hours, minutes, seconds = (numbers + [0, 0])[:3]
        return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    if len(numbers) == 3:
        return numbers[0] * 3600 + numbers[1] * 60 + numbers[2]
    if len(numbers) == 2:
        return numbers[0] * 60 + numbers[1]
    return numbers[0] * 60  # a bare number is minutes, as in --time


@dataclass(frozen=True)
class TimeLimit:
    """A task's time limit as a deadline on this process's monotonic clock."""

    deadline: float  # time.monotonic() at which SLURM's limit is reached
    limit_s: int  # the task's whole time limit

    def left(self, now: float | None = None) -> float:
        return self.deadline - (time.monotonic() if now is None else now)


def time_limit(env: SlurmEnv) -> TimeLimit | None:
    """This task's limit from squeue; None outside SLURM, for an unlimited task, or when squeue says
    nothing usable (admission is then off: it never refuses on a guess)."""
    ref = env.task_ref
    if ref is None:
        return None
    try:
        proc = run_slurm(["squeue", "-h", "-j", ref, "-o", "%L|%l"], timeout=30.0)
    except SlurmError:
        return None
    asked = time.monotonic()
    line = next((ln.strip() for ln in proc.stdout.splitlines() if ln.strip()), "")
    left_text, _, limit_text = line.partition("|")
    left, limit = parse_duration(left_text), parse_duration(limit_text)
    if left is None or limit is None:
        return None
    return TimeLimit(deadline=asked + left, limit_s=limit)
