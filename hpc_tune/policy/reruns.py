"""Retry bookkeeping, with one owner: which trial is a retry of which, how many real failures a chain has
had, and where a retry resumes from.

Two kinds of re-runs share Optuna's retry attributes (``failed_trial``, ``retry_history``, so that
``RetryHeartbeatStaleTrialCallback.retried_trial_number`` works on our studies and the budget does not
count a trial that was re-run):
- a **retry** after a real failure (a killed worker, an interrupt, a database outage past the deadline):
  it counts toward ``max_retry``;
- a **continuation** after a walltime hand-on: not a failure, it never counts toward ``max_retry``.
Our own attribute ``hpctune:failures`` counts the real failures of a chain; Optuna's own callback would
count the length of ``retry_history``, which includes hand-ons.

A retry resumes from the newest checkpoint of its chain that exists on disk (a continuation moves the
checkpoint it resumes from to its own name), else it starts over: never from a path that was moved.
Everything else of the failed trial is kept: parameters, and user attributes such as ``baseline`` (the
baseline stays the baseline through retries).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs
from hpc_tune.storage import optuna_adapter as adapter

CHECKPOINTS_DIR = "checkpoints"
_INHERITED = (attrs.RESUMED_FROM, attrs.RESUME_EPOCH)


def seed_of(trial: FrozenTrial, default: int) -> int:
    """The seed this trial runs with: its own when it was enqueued with one, else ``train.seed``."""
    seed = trial.system_attrs.get(attrs.SEED)
    return int(seed) if seed is not None else default


def checkpoint_path(study_dir: Path, number: int) -> Path:
    """Where trial ``number`` keeps its checkpoint (a continuation moves its predecessor's here)."""
    return study_dir / CHECKPOINTS_DIR / f"trial-{number}.pt"


def failures(trial: FrozenTrial) -> int:
    """Real failures of the chain before this trial. Retries made by Optuna's own callback carry no count:
    their history length is the best estimate."""
    count = trial.system_attrs.get(attrs.FAILURES)
    return int(count) if count is not None else len(adapter.retry_history(trial))


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of trials that were re-run (retried or continued): their re-run stands in for them."""
    numbers: set[int] = set()
    for t in trials:
        numbers.update(adapter.retry_history(t))
    return numbers


@dataclass(frozen=True)
class HandOn:
    """A walltime hand-on: the checkpoint written at the last epoch boundary, and that epoch. A script that
    wrote no checkpoint (None) is continued from scratch, still without counting as a failure."""

    checkpoint: Path | None
    epoch: int


def _resume_attrs(failed: FrozenTrial, study_dir: Path) -> dict[str, Any]:
    """The newest checkpoint of the chain that still exists: the failed trial's own (it moved its
    predecessor's there before it died), else the one it was to resume from (it died before moving it)."""
    if attrs.RESUME_CHECKPOINT not in failed.system_attrs:
        return {}
    inherited = {k: failed.system_attrs[k] for k in _INHERITED if k in failed.system_attrs}
    for candidate in (
        checkpoint_path(study_dir, failed.number),
        Path(failed.system_attrs[attrs.RESUME_CHECKPOINT]),
    ):
        if candidate.is_file():
            return {attrs.RESUME_CHECKPOINT: str(candidate), **inherited}
    return {}  # nothing on disk any more: start over


def enqueue_rerun(
    study: optuna.Study,
    failed: FrozenTrial,
    *,
    max_retry: int,
    study_dir: Path,
    hand_on: HandOn | None = None,
) -> bool:
    """Enqueue a retry (``hand_on`` None) or a continuation of ``failed`` with the same parameters.

    Returns False when the chain already had ``max_retry`` real failures: this failure is then final and
    uses budget. Call it under the study's budget lock, so two workers never re-run one trial twice.
    """
    count = failures(failed) + (0 if hand_on is not None else 1)
    if hand_on is None and count > max_retry:
        return False
    original = adapter.original_trial_number(failed)
    system: dict[str, Any] = {
        attrs.FAILED_TRIAL: failed.number if original is None else original,
        attrs.RETRY_HISTORY: [*adapter.retry_history(failed), failed.number],
        attrs.FAILURES: count,
    }
    for key in (attrs.SEED, attrs.FIXED_PARAMS):  # its seed; a grid point the objective had not asked for
        if key in failed.system_attrs:
            system[key] = failed.system_attrs[key]
    if hand_on is not None:
        if hand_on.checkpoint is not None:
            system[attrs.RESUME_CHECKPOINT] = str(hand_on.checkpoint)
            system[attrs.RESUMED_FROM] = failed.number
            system[attrs.RESUME_EPOCH] = hand_on.epoch
    else:
        system.update(_resume_attrs(failed, study_dir))
    user_attrs = {k: v for k, v in failed.user_attrs.items() if k != attrs.REASON}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            params=failed.params,
            distributions=failed.distributions,
            user_attrs=user_attrs,
            system_attrs=system,
        )
    )
    return True
