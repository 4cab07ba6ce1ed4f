"""The one small interface between a trial's lifecycle and the kind of task that computes it.

:class:`~hpc_tune.worker.runner.TrialRunner` owns what is the same for every trial: the heartbeat, the
parameters, the JSON record, pruning, telling the study exactly once, retries and walltime hand-ons. A
:class:`TaskRunner` only computes: the engine trains a model, an objective is called, a command runs a
script. Each reports epochs through :attr:`TrialContext.report_epoch` (which records them and may raise
``optuna.TrialPruned``) and returns an :class:`Outcome`; failures are raised (``TrialAbort`` with a reason,
or any exception). The loop never asks which kind it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial

from hpc_tune.config import FidelityConfig
from hpc_tune.storage.records import TrialRecord
from hpc_tune.train.faults import Fault


@dataclass
class TrialContext:
    """Everything a task runner may use for one trial."""

    trial: optuna.Trial
    frozen: FrozenTrial
    record: TrialRecord  # params, seed and the epochs so far (a continuation's replayed ones included)
    params: dict[str, Any]  # the sampled parameters ({} for an objective that defines its own)
    epochs: int  # the epochs this trial runs (fewer when screening at a lower fidelity)
    fidelity: FidelityConfig | None  # None: full fidelity
    seed: int
    checkpoint: Path  # where this trial keeps its checkpoint
    resume: bool  # the checkpoint holds a predecessor's state to continue from
    report_epoch: Callable[[dict[str, Any]], None]  # record, tell the pruner; may raise TrialPruned
    walltime_requested: Callable[[], bool]  # USR2 came: checkpoint and hand on at the next chance
    faults: list[Fault] = field(default_factory=list)  # injected by tests (HPCTUNE_FAULT)


@dataclass(frozen=True)
class Outcome:
    """How a task runner's trial ended when it did not raise."""

    value: float | None = None  # the trial's value; None or non-finite fails it as ``nonfinite_value``
    handed_on: bool = False  # walltime: continue in a new trial (from ``checkpoint`` when it exists)


class TaskRunner(Protocol):
    def run(self, ctx: TrialContext) -> Outcome: ...
