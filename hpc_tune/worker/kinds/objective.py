"""The objective kind: plain Optuna code, ``objective(trial) -> float``, called as it is.

The objective asks for its own parameters (define-by-run, conditionals included) and reports through
``trial.report``/``trial.should_prune`` like anywhere else; every one of those calls goes through the
worker's retrying storage. Before each call the random number generators are seeded with the trial's seed,
so that a re-run with another seed means something for this kind too.
"""

from __future__ import annotations

import os
import random
import sys
from typing import TYPE_CHECKING

from hpc_tune.config import Config, LoadedConfig
from hpc_tune.errors import TaskError
from hpc_tune.storage import optuna_adapter as adapter
from hpc_tune.tasks.base import LoadedTask
from hpc_tune.worker.kinds.base import Outcome, TrialContext

if TYPE_CHECKING:
    from hpc_tune.worker.signals import SignalGuard


def seed_rngs(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators, and say the seed in ``HPCTUNE_SEED``.

    torch is seeded only when the task already imported it: importing it here would cost every objective
    worker ~2 s even when it never uses torch. An objective that imports torch inside the function can
    call ``torch.manual_seed(int(os.environ["HPCTUNE_SEED"]))`` itself.
    """
    os.environ["HPCTUNE_SEED"] = str(seed)
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed % 2**32)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "manual_seed"):
        torch.manual_seed(seed)


def asks_for_its_parameters(config: Config, task: LoadedTask) -> bool:
    """Whether the objective's own ``suggest_*`` calls define the parameters' distributions.

    Without ``space:`` they do. On a grid they do too: ``space:`` then only lists the values to run, which
    the objective's calls return whatever range they ask for, as with Optuna's GridSampler (so a space of
    choices can drive ``suggest_float("lr", 1e-5, 1, log=True)``). Otherwise hpctune suggests ``space:``
    first and the objective must ask in the same way.
    """
    return task.kind == "objective" and (config.space is None or config.sampler.type == "grid")


# How Optuna says that a suggest_* call disagrees with the distribution hpctune suggested from space:.
_MISMATCH = ("Cannot set different", "CategoricalDistribution does not support dynamic value space")


class ObjectiveRunner:
    def __init__(self, task: LoadedTask, loaded: LoadedConfig, guard: SignalGuard) -> None:
        assert task.fn is not None
        self.fn = task.fn
        self.metric = loaded.config.metric
        self.direction = loaded.config.direction
        self.has_space = loaded.config.space is not None
        self.grid = list(loaded.config.space or {}) if loaded.config.sampler.type == "grid" else []
        self.spec = task.spec

    def run(self, ctx: TrialContext) -> Outcome:
        seed_rngs(ctx.seed)
        try:
            value = self.fn(ctx.trial)
        except ValueError as exc:
            if self.has_space and str(exc).startswith(_MISMATCH):
                # Every trial would fail the same way: say what to change, once.
                raise TaskError(
                    f"the objective asks for a parameter differently from space: ({exc}); remove space: "
                    "to let the objective define its parameters, or make the two agree",
                    self.spec,
                ) from None
            raise
        finally:  # a pruned or failed objective's curve is kept too
            self._record_reports(ctx)
        self._check_grid_asked(ctx)
        return Outcome(value=float(value))

    def _check_grid_asked(self, ctx: TrialContext) -> None:
        """A grid parameter the objective never asks for multiplies the grid with copies of one trial."""
        snapshot = adapter.trial_snapshot(ctx.trial)
        asked = snapshot.params if snapshot else ctx.trial.params
        never = [name for name in self.grid if name not in asked]
        if never:
            raise TaskError(
                f"the objective never asked for '{never[0]}', which space: lists for the grid: each of its "
                "values would run the same trial; remove it from space or suggest it in the objective",
                self.spec,
            )

    def _record_reports(self, ctx: TrialContext) -> None:
        """The objective reported through Optuna; its reports become the record's epochs (not re-told)."""
        snapshot = adapter.trial_snapshot(ctx.trial)
        steps = snapshot.intermediate_values if snapshot else ctx.frozen.intermediate_values
        for step, v in sorted(steps.items()):
            ctx.record.add_epoch({"epoch": step, self.metric: v}, self.metric, self.direction)
