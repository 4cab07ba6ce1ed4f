"""Per-trial JSON records (schema_version 1): build, write atomically, read tolerantly.

A record is rewritten after every epoch with temp file + ``os.replace``, so a crash or a kill leaves the last
complete epoch on disk and a reader never sees half a file written by us. Files that are damaged anyway
(a full disk, a user's editor) are quarantined by the reader, never a crash.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpc_tune.atomic import atomic_write_json, jsonable

SCHEMA_VERSION = 1
TRIALS_DIR = "trials"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class TrialRecord:
    study: str
    trial: int
    params: dict[str, Any]
    state: str = "RUNNING"
    reason: str | None = None
    value: float | None = None
    fidelity: dict[str, Any] = field(default_factory=lambda: {"data_fraction": 1.0})
    seed: int = 0
    phase: int | None = None
    host: str = ""
    pid: int = 0
    slurm: dict[str, Any] = field(default_factory=dict)
    started_at: str = field(default_factory=now_iso)
    finished_at: str | None = None
    duration_s: float | None = None
    # What the trial's task held while it ran (hpc_tune.slurm.allocation: kind gpu|cpu, count, ids) and
    # duration x count: the GPU-hours (CPU core-hours) the collector adds up.
    devices: dict[str, Any] | None = None
    device_seconds: float | None = None
    # The most memory the trial's process held (bytes): torch's reserved GPU memory on CUDA, else the
    # process's peak RSS; and the GPU's total memory. ``trials_per_gpu: auto`` sizes its workers by them.
    peak_memory_bytes: int | None = None
    device_memory_bytes: int | None = None
    best: dict[str, Any] | None = None
    epochs: list[dict[str, Any]] = field(default_factory=list)
    # Epochs validated on a subset (train.val_fraction): the whole validation set's results of the last and
    # the best epoch's weights; ``best`` then comes from these ("validated_on": "full"), never from a subset.
    full_validation: list[dict[str, Any]] | None = None
    retry_of: int | None = None
    # A command task: the command as run, and the end of its stderr when it failed.
    command: str | None = None
    stderr_tail: list[str] | None = None
    schema_version: int = SCHEMA_VERSION

    def add_epoch(self, record: dict[str, Any], metric: str, direction: str) -> None:
        """Append an epoch; keep ``best`` as the epoch with the best value of ``metric``."""
        self.epochs.append(jsonable(record))
        value = record.get(metric)
        if value is None or not math.isfinite(float(value)):
            return
        better = (
            self.best is None
            or (direction == "maximize" and value > self.best[metric])
            or (direction == "minimize" and value < self.best[metric])
        )
        if better:
            self.best = {k: v for k, v in self.epochs[-1].items() if k == "epoch" or k.startswith("val_")}
            self.best[metric] = value

    def set_full_validation(self, results: list[dict[str, Any]], metric: str, direction: str) -> None:
        self.full_validation = jsonable(results)
        finite = [r for r in results if r.get(metric) is not None and math.isfinite(float(r[metric]))]
        if not finite:
            return
        pick = (max if direction == "maximize" else min)(finite, key=lambda r: float(r[metric]))
        self.best = {k: v for k, v in pick.items() if k == "epoch" or k.startswith("val_")}
        self.best[metric] = float(pick[metric])  # a metric whose name does not start with val_ too
        self.best["validated_on"] = "full"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        ordered = {"schema_version": data.pop("schema_version")}
        ordered.update(data)
        return jsonable(ordered)


def trial_path(study_dir: Path, number: int) -> Path:
    return study_dir / TRIALS_DIR / f"trial-{number}.json"


def write_trial(study_dir: Path, record: TrialRecord) -> Path:
    path = trial_path(study_dir, record.trial)
    atomic_write_json(path, record.to_json(), durable=False)
    return path


def read_trial_json(path: Path) -> dict[str, Any] | None:
    """One trial's record, or None when it is missing or unreadable (the reader never raises)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


REQUIRED_KEYS = ("schema_version", "study", "trial", "state", "params", "epochs")


@dataclass
class LoadedTrials:
    records: dict[int, dict[str, Any]]
    quarantined: list[dict[str, str]]


def read_trials(study_dir: Path) -> LoadedTrials:
    """Every readable trial JSON by trial number; unreadable ones listed with why, never raised."""
    records: dict[int, dict[str, Any]] = {}
    quarantined: list[dict[str, str]] = []
    folder = study_dir / TRIALS_DIR
    if not folder.is_dir():
        return LoadedTrials(records, quarantined)
    for path in sorted(folder.glob("trial-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            quarantined.append({"file": path.name, "why": f"not valid JSON: {str(exc).splitlines()[0]}"})
            continue
        missing = [k for k in REQUIRED_KEYS if not isinstance(data, dict) or k not in data]
        if missing:
            quarantined.append({"file": path.name, "why": f"missing key '{missing[0]}'"})
            continue
        if data["schema_version"] != SCHEMA_VERSION:
            quarantined.append({"file": path.name, "why": f"schema_version {data['schema_version']!r}"})
            continue
        if data["study"] != study_dir.name or path.name != f"trial-{data['trial']}.json":
            # Copied from another study or renamed by hand: its numbers would be joined to the wrong trials.
            quarantined.append(
                {"file": path.name, "why": f"belongs to study {data['study']!r}, trial {data['trial']}"}
            )
            continue
        records[int(data["trial"])] = data
    return LoadedTrials(records, quarantined)
