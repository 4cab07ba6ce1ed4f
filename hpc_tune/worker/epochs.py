"""A trial's epochs: recorded in its JSON and told to the pruner as they come, and, for a trial that resumes
from a checkpoint, replayed from the trial that wrote it, so that the JSON holds every epoch once and the
pruner sees the whole curve.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hpc_tune import attrs
from hpc_tune.config import Config
from hpc_tune.errors import MetricsError
from hpc_tune.storage.records import TrialRecord, read_trial_json, trial_path, write_trial

log = logging.getLogger(__name__)


def save_record(study_dir: Path, record: TrialRecord) -> None:
    """Write the trial's JSON (atomically); a results folder that cannot be written is a MetricsError."""
    try:
        write_trial(study_dir, record)
    except OSError as exc:
        raise MetricsError(
            f"cannot write the trial record: {exc.strerror or exc}", trial_path(study_dir, record.trial)
        ) from None


def epoch_reporter(
    trial: optuna.Trial,
    record: TrialRecord,
    *,
    epochs: int,
    may_prune: bool,
    config: Config,
    save: Callable[[TrialRecord], None],
) -> Callable[[dict[str, Any]], None]:
    """What every kind calls at the end of an epoch: record it, write the JSON, tell the pruner (which may
    raise ``optuna.TrialPruned``)."""
    metric, direction = config.metric, config.direction

    def report_epoch(epoch_record: dict[str, Any]) -> None:
        step = int(epoch_record["epoch"])
        if record.epochs and step <= int(record.epochs[-1]["epoch"]):
            return  # a resumed script repeating an epoch its predecessor recorded: recorded once
        record.add_epoch(epoch_record, metric, direction)
        save(record)
        value = epoch_record.get(metric)
        if value is None or not math.isfinite(float(value)):
            return
        trial.report(float(value), step)
        # After the last epoch there is nothing left to save: a finished curve is a result, not a prune.
        if may_prune and step < epochs and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {step}")

    return report_epoch


def resume_from_checkpoint(
    trial: optuna.Trial,
    record: TrialRecord,
    frozen: FrozenTrial,
    checkpoint: Path,
    *,
    study_dir: Path,
    config: Config,
) -> bool:
    """A continuation or a retry that inherited a checkpoint: move it to this trial's name and replay the
    epochs run before it. Returns whether there is a checkpoint to resume from."""
    system_attrs = frozen.system_attrs
    resume_from = system_attrs.get(attrs.RESUME_CHECKPOINT)
    if not resume_from:
        checkpoint.unlink(missing_ok=True)  # a file there now can only be one this trial writes
        return False
    source = Path(resume_from)
    if not source.is_file():  # gone since the re-run was enqueued (cleaned by hand): start over
        log.warning("checkpoint %s to resume trial %d from is missing: starting over", source, trial.number)
        return False
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    if source != checkpoint:
        os.replace(source, checkpoint)
    _replay(
        trial,
        record,
        int(system_attrs.get(attrs.RESUMED_FROM, -1)),
        system_attrs.get(attrs.RESUME_EPOCH),
        study_dir=study_dir,
        config=config,
    )
    return True


def _replay(
    trial: optuna.Trial,
    record: TrialRecord,
    previous: int,
    last_epoch: Any,
    *,
    study_dir: Path,
    config: Config,
) -> None:
    """The epochs run before the checkpoint come from the JSON of the trial that wrote it, up to the
    checkpoint's epoch (a later epoch there was run after it, and is run again now)."""
    data = read_trial_json(trial_path(study_dir, previous)) or {}
    limit = int(last_epoch) if last_epoch is not None else math.inf
    for epoch_record in data.get("epochs", []):
        if int(epoch_record["epoch"]) > limit:
            break
        record.add_epoch(epoch_record, config.metric, config.direction)
        value = epoch_record.get(config.metric)
        if value is not None and math.isfinite(float(value)):
            trial.report(float(value), int(epoch_record["epoch"]))
    save_record(study_dir, record)
