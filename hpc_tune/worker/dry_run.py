"""``hpctune check --dry-run``: one short trial of the real task, before an array spends GPU-hours on it.

It runs the same worker code as an array task, on a throw-away study in a temporary folder (never the
user's database): one epoch, on a tenth of the data for the engine, ``{epochs}`` = 1 for a command. What
it catches in seconds is what would otherwise fail every trial of the array: a script that does not take
an argument, a metric printed under another name, a regex that does not match, an import that breaks.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hpc_tune.config import FidelityConfig, LoadedConfig, PrunerConfig, SamplerConfig, WorkerConfig
from hpc_tune.errors import TaskError
from hpc_tune.storage.records import read_trials
from hpc_tune.worker.loop import run_worker

DRY_RUN_DATA_FRACTION = 0.1


@dataclass(frozen=True)
class DryRunResult:
    value: float
    epochs: int
    duration_s: float


def dry_run(loaded: LoadedConfig) -> DryRunResult:
    """Run one short trial; raise TaskError with the reason (and the last line of stderr) if it fails."""
    config = loaded.config
    with tempfile.TemporaryDirectory(prefix="hpctune-dry-run-") as tmp:
        short = config.model_copy(
            update={
                "storage": None,
                "results": tmp,
                "trials": 1,
                "epochs": 1,
                "phases": None,
                # A grid runs its first point: an objective takes a grid's values its own way (kinds/).
                "sampler": config.sampler
                if config.sampler.type == "grid"
                else SamplerConfig(type="random", seed=0),
                "pruner": PrunerConfig(type="none"),
                "fidelity": FidelityConfig(data_fraction=DRY_RUN_DATA_FRACTION)
                if _is_engine(loaded)
                else None,
                "train": config.train.model_copy(update={"max_val_batches": 2}),
                "worker": WorkerConfig(fail_fast_trials=0, max_retry=0),
            }
        )
        trial_loaded = LoadedConfig(config=short, path=loaded.path)
        ours, theirs = logging.getLogger("hpc_tune"), logging.getLogger("optuna")
        levels = ours.level, theirs.level
        ours.setLevel(logging.CRITICAL)  # the trial's own failure is the one line we print
        theirs.setLevel(logging.WARNING)  # "A new study created" is about the throw-away study
        try:
            run_worker(trial_loaded, max_trials=1)
        finally:
            ours.setLevel(levels[0])
            theirs.setLevel(levels[1])
        record = read_trials(Path(tmp) / config.study).records.get(0)
    if record is None:
        raise TaskError("the dry run left no trial record", config.task_spec)
    value = record.get("value")
    if record["state"] != "COMPLETE" or value is None or not math.isfinite(value):
        raise TaskError(_failure(record, config.metric), config.task_spec)
    return DryRunResult(float(value), len(record["epochs"]), float(record.get("duration_s") or 0.0))


def _is_engine(loaded: LoadedConfig) -> bool:
    from hpc_tune.tasks.base import load_task

    return load_task(loaded.config.task, loaded.root, has_space=True).kind == "build"


def _failure(record: dict, metric: str) -> str:
    reason = record.get("reason") or record["state"].lower()
    epochs = record.get("epochs", [])
    never = not any(e.get(metric) is not None for e in epochs)
    if reason.startswith("metric_not_reported") or (reason == "nonfinite_value" and epochs and never):
        what = f"the dry run never reported {metric!r}"
        seen = sorted({k for e in epochs for k in e if k != "epoch"})
        what += f" (it reported {', '.join(seen)})" if seen else " (no metric line on stdout)"
    elif reason == "nonfinite_value":
        what = f"the dry run's {metric!r} is missing or not finite"
    else:
        what = f"the dry run failed ({reason})"
    tail = [line for line in record.get("stderr_tail") or [] if line.strip() and not line.startswith("--- ")]
    return what + (f": {tail[-1].strip()}" if tail else "")
