import math

import pytest
import torch

from hpc_tune.config import Config, FidelityConfig, ScheduleConfig
from hpc_tune.train.schedule import ONECYCLE_END, build_scheduler, plan_schedule


def _lrs(config: ScheduleConfig, epochs: int, steps: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, plan = build_scheduler(opt, config, epochs=epochs, steps_per_epoch=steps)
    assert plan.t_max_epochs == epochs
    lrs = []
    for _ in range(epochs * steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("epochs", [10, 3])  # full fidelity and a reduced-fidelity run of the same study
@pytest.mark.parametrize("kind", ["cosine", "onecycle"])
def test_annealing_ends_exactly_at_the_epochs_run(kind, epochs):
    lrs = _lrs(ScheduleConfig(type=kind, warmup_epochs=1), epochs, steps=5)
    floor = 0.0 if kind == "cosine" else ONECYCLE_END
    assert lrs[-1] == pytest.approx(floor, abs=1e-9)
    assert min(lrs[:-1]) > lrs[-1]  # not reached early: T_max is not shorter than the run
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1 : peak + 1], strict=False))  # warm-up rises
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1 :], strict=False))  # then only decays


def test_t_max_is_the_epochs_of_the_run_a_screening_trial_included():
    fidelity_epochs = Config(
        study="s",
        space={"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
        epochs=20,
        fidelity=FidelityConfig(epochs=4),
    ).effective_epochs()
    plan = plan_schedule(ScheduleConfig(type="cosine"), epochs=fidelity_epochs, steps_per_epoch=7)
    assert plan.t_max_epochs == 4
    assert plan.total_steps == 28


def test_warmup_linear_then_cosine():
    plan = plan_schedule(ScheduleConfig(type="cosine", warmup_epochs=2), epochs=10, steps_per_epoch=1)
    assert [plan.factor(s) for s in range(3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert plan.factor(2 + 7 // 2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)))


def test_warmup_longer_than_run_still_anneals():
    lrs = _lrs(ScheduleConfig(type="cosine", warmup_epochs=5), epochs=2, steps=3)
    assert lrs[-1] == pytest.approx(0.0, abs=1e-9)


def test_none_is_constant_after_warmup():
    assert _lrs(ScheduleConfig(type="none"), 2, 3) == [1.0] * 6
