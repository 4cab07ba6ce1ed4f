"""Learning-rate schedules with linear warm-up: cosine, one-cycle, none.

T_max is ALWAYS the number of epochs the trial really runs (full or reduced fidelity), passed in by the
engine; a separate configured number drifts from ``epochs`` and leaves a schedule half-decayed or restarting.
The schedule is stepped per optimizer step, so the decay is smooth even with few epochs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LambdaLR

from hpc_tune.config import ScheduleConfig

# One-cycle: start at peak/25 and end at peak/(25 * 1e4), as torch's OneCycleLR does by default.
ONECYCLE_START = 1.0 / 25.0
ONECYCLE_END = ONECYCLE_START / 1e4
# One-cycle without an explicit warm-up still needs its ramp: 30 % of the run, torch's pct_start default.
ONECYCLE_DEFAULT_WARMUP = 0.3


@dataclass(frozen=True)
class SchedulePlan:
    type: str
    t_max_epochs: int
    warmup_epochs: float
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.t_max_epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        # A warm-up as long as the run would never anneal: cap it at half the run.
        steps = int(round(self.warmup_epochs * self.steps_per_epoch))
        return min(steps, self.total_steps // 2)

    def factor(self, step: int) -> float:
        """Multiplier of the base (peak) lr for optimizer step ``step`` (0-based)."""
        warm = self.warmup_steps
        if self.type == "onecycle":
            if step < warm:
                return ONECYCLE_START + (1.0 - ONECYCLE_START) * step / warm
            return ONECYCLE_END + (1.0 - ONECYCLE_END) * self._cosine(step - warm)
        if step < warm:
            return (step + 1) / (warm + 1)
        if self.type == "cosine":
            return self._cosine(step - warm)
        return 1.0

    def _cosine(self, step_after_warmup: int) -> float:
        # Reaches its minimum on the LAST step of the last epoch, not one step after the run.
        span = self.total_steps - self.warmup_steps - 1
        progress = min(step_after_warmup / span, 1.0) if span > 0 else 1.0
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def plan_schedule(config: ScheduleConfig, *, epochs: int, steps_per_epoch: int) -> SchedulePlan:
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError("a schedule needs at least one epoch and one step per epoch")
    warmup: float = config.warmup_epochs
    if config.type == "onecycle" and warmup == 0:
        warmup = ONECYCLE_DEFAULT_WARMUP * epochs
    return SchedulePlan(config.type, epochs, warmup, steps_per_epoch)


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, *, epochs: int, steps_per_epoch: int
) -> tuple[LambdaLR, SchedulePlan]:
    """``epochs`` = the epochs this trial runs, ``config.t_max`` is ignored (``check`` flags it)."""
    plan = plan_schedule(config, epochs=epochs, steps_per_epoch=steps_per_epoch)
    return LambdaLR(optimizer, plan.factor), plan
