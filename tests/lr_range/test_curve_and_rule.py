"""The smoothed loss, its stop rules and the suggestion rule, on curves whose answer is known."""

from __future__ import annotations

import math

import pytest
import yaml

from hpc_tune.lr_range.curve import DIVERGENCE_FACTOR, LossCurve, LrRun, smoothing_for, span_of
from hpc_tune.lr_range.suggest import read_run, round_down, round_up, suggest, yaml_number


def _lrs(steps: int, start: float = 1e-6, end: float = 10.0) -> list[float]:
    return [start * (end / start) ** (k / (steps - 1)) for k in range(steps)]


def _sweep(losses: list[float], lrs: list[float], smoothing: float = 0.9) -> LrRun:
    curve = LossCurve(smoothing)
    for lr, loss in zip(lrs, losses, strict=False):
        if not curve.add(lr, loss):
            break
    return curve.run("synthetic", steps=len(lrs), optimizer=None, batch_size=None)


def _valley(lr: float) -> float:
    """2.3 (chance) on a plateau, falling fastest at lr 1e-2 (a logistic in log10 lr), lowest at 1e-1, then
    growing fast: the shape of a real range test, with known points."""
    x = math.log10(lr)
    fall = 2.3 - 2.0 / (1.0 + math.exp(-3.0 * (x + 2.0)))
    return fall + (50.0 * (x + 1.0) ** 2 if x > -1.0 else 0.0)


def test_the_moving_average_is_bias_corrected() -> None:
    curve = LossCurve(0.9)
    for lr in (1e-3, 2e-3, 4e-3):
        assert curve.add(lr, 2.0)
    # Without the correction the first values would be 0.2, 0.38, ... (pulled towards the zero start).
    assert curve.smoothed == pytest.approx([2.0, 2.0, 2.0])
    curve.add(8e-3, 1.0)
    expected = (0.9**3 * 0.1 * 2.0 + 0.9**2 * 0.1 * 2.0 + 0.9 * 0.1 * 2.0 + 0.1 * 1.0) / (1 - 0.9**4)
    assert curve.smoothed[-1] == pytest.approx(expected)


def test_the_sweep_stops_when_the_smoothed_loss_diverges() -> None:
    lrs = _lrs(50)
    losses = [1.0] * 20 + [1.0 * 3.0**k for k in range(1, 31)]
    run = _sweep(losses, lrs)
    assert run.stopped == "diverged" and len(run.lr) < 50
    assert run.smoothed[-1] > DIVERGENCE_FACTOR * min(s for s in run.smoothed if s is not None)
    assert all(s <= DIVERGENCE_FACTOR * 1.0 for s in run.smoothed[:-1] if s is not None)


def test_a_non_finite_loss_stops_the_sweep_and_stays_out_of_the_suggestion() -> None:
    lrs = _lrs(60)
    losses = [_valley(lr) for lr in lrs]
    nan_at = next(i for i, lr in enumerate(lrs) if lr > 0.05)  # past the steepest descent, before the valley
    losses[nan_at] = math.nan
    run = _sweep(losses, lrs, smoothing=smoothing_for(60))
    assert run.stopped == "nonfinite" and len(run.lr) == nan_at + 1
    assert run.loss[-1] is None and run.smoothed[-1] is None
    curve = LossCurve(0.9)
    assert not curve.add(1e-3, math.inf) and not curve.add(1e-2, 1.0)  # nothing is taken after it
    reading = read_run(run)
    assert reading.lowest_lr is not None and reading.lowest_lr < lrs[nan_at]
    suggestion, _ = suggest([run])
    assert suggestion is not None and suggestion.high < round_up(lrs[nan_at])


def test_the_rule_finds_the_steepest_descent_and_the_lowest_loss() -> None:
    steps = 200
    run = _sweep([_valley(lr) for lr in _lrs(steps)], _lrs(steps), smoothing=smoothing_for(steps))
    assert run.stopped == "diverged"
    reading = read_run(run)
    # The average lags behind the rate by about a tenth of the sweep (7 decades / 10 here): both points
    # come out later than the curve's own, by well under a decade.
    assert reading.steepest_lr is not None and reading.lowest_lr is not None
    assert 1e-2 <= reading.steepest_lr <= 1e-1 and 1e-1 <= reading.lowest_lr <= 1.0
    suggestion, readings = suggest([run])
    assert readings == [reading] and suggestion is not None
    assert suggestion.low == round_down(reading.steepest_lr / 10)
    assert suggestion.high == round_up(reading.lowest_lr / 3)
    assert suggestion.contains(1e-2) and not suggestion.contains(1e-4)


def test_a_curve_that_never_falls_gives_no_range() -> None:
    lrs = _lrs(60)
    run = _sweep([2.3 + 0.01 * k for k in range(60)], lrs)
    reading = read_run(run)
    assert reading.steepest_lr is None and "never fell" in (reading.note or "")
    assert suggest([run])[0] is None


def test_a_loss_still_falling_at_the_sweeps_end_says_so() -> None:
    lrs = _lrs(60, start=1e-6, end=1e-2)  # the valley's fall is only beginning at 1e-2
    run = _sweep([_valley(lr) for lr in lrs], lrs, smoothing=smoothing_for(60))
    reading = read_run(run)
    assert run.stopped == "steps" and reading.steepest_lr is not None
    assert "still falling at the sweep's end" in (reading.note or "")


def test_the_suggestion_spans_every_run() -> None:
    adamw = _sweep([_valley(lr) for lr in _lrs(100)], _lrs(100))
    sgd = _sweep([_valley(lr / 10) for lr in _lrs(100)], _lrs(100))  # the same curve a decade higher
    suggestion, readings = suggest([adamw, sgd])
    assert suggestion is not None
    assert suggestion.low == round_down(min(r.low for r in readings if r.low))
    assert suggestion.high == round_up(max(r.high for r in readings if r.high))
    assert readings[1].steepest_lr > readings[0].steepest_lr  # type: ignore[operator]


def test_rounding_is_outwards_and_yaml_reads_the_numbers_as_floats() -> None:
    rounded = (round_down(1.07e-3), round_up(3.4e-2), round_up(9.5e-2), round_up(3e-2))
    assert rounded == (1e-3, 4e-2, 0.1, 3e-2)
    assert [yaml_number(v) for v in (1e-3, 4e-2, 2.0, 0.5)] == ["1.0e-3", "4.0e-2", "2.0e+0", "5.0e-1"]
    assert yaml.safe_load("[1.0e-3, 4.0e-2, 2.0e+0]") == [1e-3, 4e-2, 2.0]


def test_the_average_spans_a_tenth_of_the_sweep() -> None:
    assert span_of(smoothing_for(100)) == 10 and span_of(smoothing_for(300)) == 30
    assert smoothing_for(10) == 0.5 and smoothing_for(10_000) == 0.98
