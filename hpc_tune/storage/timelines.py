"""Each worker's timeline (runs/<study>/workers/<host>-<pid>.json): what its allocation did while it ran.

A trial's record says what the trial cost; only the worker knows what its task held while no trial ran:
starting (the interpreter, the imports, opening the study), waiting for a trial (a phase's end, the study's
tail while the last trials run), handing on at the walltime, exiting. Those are the idle hours ``collect``
reports, the waste a trial record cannot show. The file is rewritten atomically at every change of activity
(a handful per trial), so a killed worker leaves its timeline up to its last change; ``end`` of the last
segment is then the time it was last written, never a guess.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpc_tune.atomic import atomic_write_json

WORKERS_DIR = "workers"
ACTIVITIES = ("starting", "waiting", "trial", "handing_on", "exiting")


def process_start_time() -> float:
    """When this process started (epoch seconds; Linux's /proc), else now: the interpreter and the imports
    are part of what the allocation paid before the first trial."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


@dataclass
class Segment:
    activity: str  # one of ACTIVITIES
    start: float  # epoch seconds
    end: float
    trial: int | None = None


@dataclass
class WorkerTimeline:
    host: str
    pid: int
    slurm: dict[str, Any]
    devices: dict[str, Any]  # hpc_tune.slurm.allocation.Devices as JSON
    segments: list[Segment] = field(default_factory=list)
    # A worker started behind a pack's gate (launchers/task_pack.py): when it started, though its segments
    # begin when the gate opened (until then the task's devices were the previous workers').
    started_ahead_at: float | None = None
    path: Path | None = field(default=None, repr=False, compare=False)

    def begin(self, activity: str, trial: int | None = None, *, at: float | None = None) -> None:
        """End the current segment now and start ``activity``: the file is rewritten."""
        now = time.time() if at is None else at
        if self.segments:
            self.segments[-1].end = now
        self.segments.append(Segment(activity, now, now, trial))
        self.save()

    def close(self) -> None:
        """The worker exits: its last segment ends now."""
        if self.segments:
            self.segments[-1].end = time.time()
        self.save()

    def save(self) -> None:
        """A timeline that cannot be written (a full disk) is lost, not the trial: the trial's own record
        is written on the same disk and its failure is what stops the worker."""
        if self.path is not None:
            data = {k: v for k, v in asdict(self).items() if k != "path"}
            with contextlib.suppress(OSError):
                atomic_write_json(self.path, data, durable=False)


def timeline_path(study_dir: Path, host: str, pid: int) -> Path:
    return study_dir / WORKERS_DIR / f"{host}-{pid}.json"


def read_timelines(study_dir: Path) -> list[WorkerTimeline]:
    """Every readable worker timeline of the study; a damaged file is left out, never raised."""
    found = []
    for path in sorted((study_dir / WORKERS_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            segments = [Segment(**s) for s in data["segments"]]
            found.append(
                WorkerTimeline(
                    str(data["host"]),
                    int(data["pid"]),
                    dict(data["slurm"]),
                    dict(data["devices"]),
                    segments,
                    data.get("started_ahead_at"),
                )
            )
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
            continue
    return found
