"""One range-test sweep on the engine: the trial's training step with a growing learning rate, stopped when
told, on the device and precision a trial gets."""

from __future__ import annotations

import math

import pytest

from hpc_tune.config import TrainConfig
from hpc_tune.lr_range.curve import LossCurve
from hpc_tune.tasks import digits
from hpc_tune.train.lr_range import sweep

OPTIONS = TrainConfig(batch_size=64, compile="off")


pytestmark = pytest.mark.usefixtures("two_torch_threads")


def _lrs(steps: int, start: float, end: float) -> list[float]:
    return [start * (end / start) ** (k / (steps - 1)) for k in range(steps)]


def test_every_step_gets_its_learning_rate_and_the_sweep_stops_when_told() -> None:
    parts = digits.build({"hidden": 32, "lr": 0.5}, None, 0, OPTIONS)
    seen: list[tuple[float, float]] = []
    optimizer_lr: list[float] = []
    original = parts.make_optimizer

    def make(params):  # type: ignore[no-untyped-def]
        optimizer = original(params)
        optimizer_lr.append(optimizer.param_groups[0]["lr"])
        return optimizer

    parts.make_optimizer = make
    lrs = _lrs(40, 1e-4, 1e-1)  # digits has 23 batches of 64: the data is cycled through

    def on_step(lr: float, loss: float) -> bool:
        seen.append((lr, loss))
        return len(seen) < 30

    info = sweep(parts, OPTIONS, lrs, on_step)
    assert [lr for lr, _ in seen] == pytest.approx(lrs[:30])
    assert all(math.isfinite(loss) and loss > 0 for _, loss in seen)
    assert optimizer_lr == [0.5]  # the task's optimizer, its lr then replaced by the sweep's
    assert (info.optimizer, info.batch_size, info.device, info.precision) == ("AdamW", 64, "cpu", "fp32")
    assert seen[-1][1] < seen[0][1]  # it trained: at 1e-2 the loss has fallen from chance


def test_a_learning_rate_far_too_high_diverges_before_the_last_step() -> None:
    parts = digits.build({"hidden": 32, "optimizer": "sgd"}, None, 0, OPTIONS)
    curve = LossCurve(0.8)
    sweep(parts, OPTIONS, _lrs(60, 1e-3, 1e4), curve.add)
    assert curve.stopped in ("diverged", "nonfinite") and len(curve.lr) < 60


def test_a_non_finite_loss_ends_the_sweep_without_an_error() -> None:
    parts = digits.build({"hidden": 32, "optimizer": "sgd"}, None, 0, OPTIONS)
    curve = LossCurve(0.8, divergence=math.inf)  # no divergence stop: only the non-finite loss ends it
    sweep(parts, OPTIONS, _lrs(60, 1e-3, 1e12), curve.add)
    assert curve.stopped == "nonfinite" and len(curve.lr) < 60
    assert curve.loss[-1] is None and all(v is not None for v in curve.loss[:-1])
