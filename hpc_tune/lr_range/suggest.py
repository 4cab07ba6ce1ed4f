"""The rule that turns the sweeps' curves into a range for ``space.lr``, stated once so that the CLI, the JSON
and the docs say the same.

Per run, on the smoothed loss: the *steepest descent* is the learning rate where the loss falls fastest per
decade of learning rate (fastai's and Lightning's ``lr_find`` suggestion); the *lowest loss* is where it
stops falling, the edge past which training breaks down (the top of Smith's range). The run's range goes
from a tenth of the steepest descent, where the loss is only starting to fall, to a third of the lowest
loss, which keeps clear of that edge (fastai's other suggestion, a tenth of the lowest loss, lies inside).
A space's ``lr`` is shared by every optimizer and batch size it searches, so the suggestion spans all runs'
ranges, rounded outwards to one significant digit.

Checked against the shipped learning-curve tables (benchmarks/curves/: every configuration of the built-in
tasks trained for 20 to 40 epochs): on digits and shapes the range of each optimizer holds its best
learning rate (tests/lr_range/test_run.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from hpc_tune.lr_range.curve import LrRun, span_of

STEEPEST_DIVISOR = 10.0
LOWEST_DIVISOR = 3.0
RULE = (
    "from 1/10 of the lr of steepest descent of the smoothed loss to 1/3 of the lr of its lowest value, "
    "over every run"
)


class RunRange(BaseModel):
    """What one run's curve says."""

    model_config = ConfigDict(frozen=True)

    label: str
    steepest_lr: float | None = Field(None, description="Where the smoothed loss falls fastest.")
    lowest_lr: float | None = Field(None, description="Where the smoothed loss is lowest.")
    note: str | None = Field(
        None, description="Why this run gives no range (then both lrs are null), or what to doubt in it."
    )

    @property
    def low(self) -> float | None:
        return None if self.steepest_lr is None else self.steepest_lr / STEEPEST_DIVISOR

    @property
    def high(self) -> float | None:
        return None if self.lowest_lr is None else self.lowest_lr / LOWEST_DIVISOR


class LrSuggestion(BaseModel):
    """The range for ``space.lr``: ``low`` and ``high`` as they go into hpctune.yaml."""

    model_config = ConfigDict(frozen=True)

    low: float
    high: float
    rule: str = RULE

    def contains(self, lr: float) -> bool:
        return self.low <= lr <= self.high


def read_run(run: LrRun) -> RunRange:
    """The steepest descent and the lowest loss of one curve; a note instead when it has no descent, and
    beside them when its lowest point may lie past the end of the sweep.

    The first ``1 / (1 - beta)`` points are left out of the slope: the moving average has not yet averaged
    enough steps there, and one lucky batch reads as a steep fall. The slope is taken across that half-span
    on either side, which reads the curve's trend rather than its last wiggle.
    """
    points = [(lr, s) for lr, s in zip(run.lr, run.smoothed, strict=True) if s is not None]
    if not points:
        return RunRange(label=run.label, note="no finite loss")
    lowest = min(range(len(points)), key=lambda i: points[i][1])
    span = span_of(run.smoothing)
    half = max(1, span // 2)
    slopes = {
        i: (points[i + half][1] - points[i - half][1])
        / (math.log10(points[i + half][0]) - math.log10(points[i - half][0]))
        for i in range(max(half, span), lowest)
        if i + half < len(points)
    }
    falling = {i: slope for i, slope in slopes.items() if slope < 0}
    if not falling:
        return RunRange(
            label=run.label,
            note=f"the smoothed loss never fell before its lowest point (lr {points[lowest][0]:.1e}): start "
            "the sweep lower (a larger --widen) or give it more --steps",
        )
    steepest = min(falling, key=lambda i: falling[i])
    note = None
    if run.stopped == "steps" and lowest >= len(points) - span:
        note = (
            f"the loss was still falling at the sweep's end (lr {points[-1][0]:.1e}): its lowest point may "
            "lie higher (a larger --widen)"
        )
    return RunRange(label=run.label, steepest_lr=points[steepest][0], lowest_lr=points[lowest][0], note=note)


def suggest(runs: Sequence[LrRun]) -> tuple[LrSuggestion | None, list[RunRange]]:
    """The suggestion over every run that has a range (None when none has), and what each run said."""
    read = [read_run(run) for run in runs]
    lows = [r.low for r in read if r.low is not None]
    highs = [r.high for r in read if r.high is not None]
    if not lows or not highs:
        return None, read
    # Each run's steepest descent comes before its lowest point (so low < high), rounded outwards too.
    low, high = round_down(min(lows)), round_up(max(highs))
    return LrSuggestion(low=low, high=high), read


def _decade(value: float) -> tuple[float, int]:
    exponent = math.floor(math.log10(value))
    return round(value / 10.0**exponent, 9), exponent


def round_down(value: float) -> float:
    """To one significant digit, downwards: 1.07e-3 -> 1e-3."""
    mantissa, exponent = _decade(value)
    return float(f"{math.floor(mantissa)}e{exponent}")


def round_up(value: float) -> float:
    """To one significant digit, upwards: 3.4e-2 -> 4e-2."""
    mantissa, exponent = _decade(value)
    up = math.ceil(mantissa)
    return float(f"{up}e{exponent}") if up < 10 else float(f"1e{exponent + 1}")


def yaml_number(value: float) -> str:
    """A float as YAML 1.1 reads it, with a dot and a signed exponent (``1.0e-3``, ``2.0e+0``): PyYAML reads
    ``1e-3`` as the string "1e-3"."""
    mantissa, exponent = _decade(value)
    return f"{mantissa:.1f}e{exponent:+d}"
