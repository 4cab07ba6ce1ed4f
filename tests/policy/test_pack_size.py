"""The rule of ``slurm.trials_per_gpu: auto`` on numbers: measurements in, the next N and why out."""

from __future__ import annotations

import pytest

from hpc_tune.policy.pack_size import (
    CUDA_CONTEXT_BYTES,
    PackLimits,
    choice_attr,
    next_pack_size,
    throughput,
    trials_to_measure,
)

GIB = 2**30


def limits(peak_gib: float | None = 1.0, capacity_gib: float | None = 80.0, cap: int = 16) -> PackLimits:
    return PackLimits(
        None if peak_gib is None else int(peak_gib * GIB),
        None if capacity_gib is None else int(capacity_gib * GIB),
        "GPU memory",
        cap,
        f"{cap}, auto's cap",
    )


def test_nothing_measured_starts_with_one_worker() -> None:
    step = next_pack_size({}, limits())
    assert (step.n, step.done) == (1, False)


def test_grows_by_doubling_while_throughput_rises_by_10_percent() -> None:
    assert next_pack_size({1: 100.0}, limits()).n == 2
    assert next_pack_size({1: 100.0, 2: 180.0}, limits()).n == 4
    step = next_pack_size({1: 100.0, 2: 180.0, 4: 300.0}, limits())
    assert (step.n, step.done) == (8, False)


def test_keeps_the_best_when_the_next_size_gains_less_than_10_percent() -> None:
    step = next_pack_size({1: 100.0, 2: 180.0, 4: 195.0}, limits())
    assert (step.n, step.done) == (2, True)
    assert "4 workers finished 195 trials per device-hour, less than 10 % more than 2 (180)" in step.why
    # A size that was slower than the best: the best is kept, not the last.
    assert next_pack_size({1: 100.0, 2: 90.0}, limits()).n == 1


def test_memory_bounds_the_growth() -> None:
    # 0.9 x 10 GiB / 3 GiB = 3 workers fit: 2 -> 3, not 4.
    small = limits(peak_gib=3.0, capacity_gib=10.0)
    assert small.memory_limit == 3
    step = next_pack_size({1: 100.0, 2: 190.0}, small)
    assert (step.n, step.done) == (3, False)
    step = next_pack_size({1: 100.0, 2: 190.0, 3: 270.0}, small)
    assert (step.n, step.done) == (3, True)
    assert "3 fit" in step.why and "GPU memory" in step.why
    # One that does not fit twice never grows.
    step = next_pack_size({1: 100.0}, limits(peak_gib=50.0, capacity_gib=80.0))
    assert (step.n, step.done) == (1, True)


def test_a_later_higher_peak_lowers_the_choice_to_what_fits() -> None:
    step = next_pack_size({1: 100.0, 2: 190.0, 4: 350.0}, limits(peak_gib=25.0, capacity_gib=80.0))
    assert (step.n, step.done) == (2, True)


def test_the_cap_bounds_the_growth() -> None:
    step = next_pack_size({1: 100.0, 2: 200.0}, limits(cap=2))
    assert (step.n, step.done) == (2, True)
    assert "the most workers per task is 2" in step.why
    assert next_pack_size({1: 100.0, 2: 200.0, 4: 400.0, 8: 800.0}, limits(peak_gib=0.1)).n == 16


def test_unmeasured_memory_never_grows() -> None:
    step = next_pack_size({1: 100.0}, limits(peak_gib=None))
    assert (step.n, step.done) == (1, True)
    assert "not measured" in step.why


def test_throughput_is_trials_per_device_hour() -> None:
    # 2 workers, 60 s per trial, on 2 GPUs: 2 trials a minute = 120 an hour, 60 per GPU-hour.
    assert throughput([50.0, 70.0], 2, 2) == pytest.approx(60.0)
    assert [trials_to_measure(n) for n in (1, 2, 4)] == [2, 2, 4]


def test_the_recorded_choice_says_what_it_was_made_of() -> None:
    lim = limits(peak_gib=2.0)
    step = next_pack_size({1: 100.0, 2: 105.0}, lim)
    value = choice_attr(step, lim, {1: 100.0, 2: 105.0}, task=3, host="node1")
    assert value["n"] == 1 and value["why"] == step.why
    assert value["peak_memory_bytes"] == 2 * GIB and value["capacity_source"] == "GPU memory"
    assert value["throughput_per_device_hour"] == {"1": 100.0, "2": 105.0}
    assert (value["task"], value["host"]) == (3, "node1")
    assert CUDA_CONTEXT_BYTES > 0  # added by the supervisor to a GPU peak (launchers/pack_auto.py)
