"""One sweep's loss as the learning rate grows: smoothed as it comes, and the point where it diverged.

The raw loss of a single step is too noisy to read a slope from, so each sweep is read through an
exponential moving average, bias-corrected (without the correction the first values would be pulled towards
zero). The sweep stops once the smoothed loss is more than ``DIVERGENCE_FACTOR`` times the best it reached,
or at the first non-finite loss: past that point every step costs time and says nothing more.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Smith's and fastai's threshold: a smoothed loss 4x the best one has left the range where training works.
DIVERGENCE_FACTOR = 4.0
# The moving average spans about this share of a sweep's steps: a fixed beta (fastai's 0.98 averages over
# ~50 steps) would lag by half of a 100-step sweep, i.e. by decades of learning rate, and shift every point
# read from the curve towards higher rates.
SMOOTHING_SPAN = 0.1
MIN_SMOOTHING, MAX_SMOOTHING = 0.5, 0.98

Stop = Literal["steps", "diverged", "nonfinite"]


def smoothing_for(steps: int) -> float:
    """The moving average's beta for a sweep of ``steps``: it averages over about a tenth of the sweep."""
    return min(MAX_SMOOTHING, max(MIN_SMOOTHING, 1.0 - 1.0 / (SMOOTHING_SPAN * steps)))


def span_of(smoothing: float) -> int:
    """How many steps the moving average needs before it stands on its own (1 / (1 - beta))."""
    return max(1, int(round(1.0 / (1.0 - smoothing))))


class LrRun(BaseModel):
    """One sweep: a fresh model and optimizer, one optimizer step per learning rate."""

    model_config = ConfigDict(frozen=True)

    label: str = Field(description="What this run varied, e.g. `adamw, batch 64`.")
    optimizer: str | None = Field(None, description="The space's optimizer choice, or the task's own.")
    batch_size: int | None = Field(None, description="The training batch of this run.")
    steps: int = Field(description="Steps planned; fewer were run when the loss diverged.")
    smoothing: float = Field(description="Beta of the bias-corrected moving average.")
    stopped: Stop = Field(
        description="`steps`: every step ran; `diverged`: the smoothed loss passed 4x its best; "
        "`nonfinite`: a loss was NaN or infinite."
    )
    lr: list[float] = Field(description="The learning rate of each step run.")
    loss: list[float | None] = Field(description="Each step's training loss; null where it was not finite.")
    smoothed: list[float | None] = Field(description="The smoothed loss; null where the loss was not finite.")


class LossCurve:
    """Collects one sweep's points; :meth:`add` says whether the sweep should go on."""

    def __init__(self, smoothing: float, divergence: float = DIVERGENCE_FACTOR) -> None:
        self.smoothing = smoothing
        self.divergence = divergence
        self.lr: list[float] = []
        self.loss: list[float | None] = []
        self.smoothed: list[float | None] = []
        self.stopped: Stop = "steps"
        self._average = 0.0
        self._best = math.inf

    def add(self, lr: float, loss: float) -> bool:
        """Record one step; False once the loss is not finite or the smoothed loss diverged."""
        if self.stopped != "steps":
            return False
        self.lr.append(float(lr))
        if not math.isfinite(loss):
            self.loss.append(None)
            self.smoothed.append(None)
            self.stopped = "nonfinite"
            return False
        self._average = self.smoothing * self._average + (1.0 - self.smoothing) * loss
        value = self._average / (1.0 - self.smoothing ** len(self.lr))
        self.loss.append(float(loss))
        self.smoothed.append(value)
        self._best = min(self._best, value)
        # A loss that can be negative (a log-likelihood) has no ratio to diverge by: it stops at the end.
        if self._best > 0 and value > self.divergence * self._best:
            self.stopped = "diverged"
            return False
        return True

    def run(self, label: str, *, steps: int, optimizer: str | None, batch_size: int | None) -> LrRun:
        return LrRun(
            label=label,
            optimizer=optimizer,
            batch_size=batch_size,
            steps=steps,
            smoothing=self.smoothing,
            stopped=self.stopped,
            lr=self.lr,
            loss=self.loss,
            smoothed=self.smoothed,
        )
