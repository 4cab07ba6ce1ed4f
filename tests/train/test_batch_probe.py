"""The search logic of the batch probe, against a fake ``fits(batch)`` predicate that MOCKS a GPU's
memory limit: no GPU exists on the machines these tests must pass on. The real CUDA probe is covered by
the gpu-marked test at the end."""

import pytest
import torch

from hpc_tune.train.batch_probe import (
    BatchPlan,
    largest_fitting,
    plan_batches,
    plan_for_device,
    read_cache,
    write_cache,
)
from hpc_tune.train.precision import PrecisionPolicy


class FakeGpu:
    """fits(b) is true up to ``capacity`` samples, like a GPU with a fixed activation budget."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.calls: list[int] = []

    def __call__(self, batch: int) -> bool:
        self.calls.append(batch)
        return batch <= self.capacity


@pytest.mark.parametrize("capacity", [1, 2, 3, 37, 64, 100, 255])
def test_finds_the_largest_fitting_batch(capacity):
    gpu = FakeGpu(capacity)
    assert largest_fitting(gpu, limit=256) == capacity
    assert len(gpu.calls) <= 2 * 8 + 1  # doubling + bisection: logarithmic, not linear


def test_requested_batch_that_fits_costs_one_probe():
    gpu = FakeGpu(10_000)
    assert largest_fitting(gpu, limit=512) == 512
    assert gpu.calls == [512]


def test_doubling_then_bisection_order():
    gpu = FakeGpu(20)
    assert largest_fitting(gpu, limit=100) == 20
    assert gpu.calls[:7] == [100, 1, 2, 4, 8, 16, 32]  # limit first, then doubling up to the first failure
    assert all(16 < b < 32 for b in gpu.calls[7:])  # then bisection inside (16, 32)


def test_nothing_fits_returns_zero():
    assert largest_fitting(FakeGpu(0), limit=64) == 0


def test_accumulation_preserves_the_effective_batch():
    plan = plan_batches(256, 512, safe_train=100, safe_eval=300)
    assert plan == BatchPlan(train_batch=256, micro_batch=86, accum_steps=3, eval_batch=300, probed=True)
    assert plan.micro_batch * plan.accum_steps >= plan.train_batch


def test_no_accumulation_when_the_batch_fits():
    assert plan_batches(64, 128, safe_train=64, safe_eval=1000).accum_steps == 1


def test_explicit_grad_accum_is_honoured_and_raised_when_needed():
    assert plan_batches(64, 128, grad_accum=4).micro_batch == 16
    assert plan_batches(64, 128, safe_train=8, grad_accum=4).accum_steps == 8


def test_cpu_is_a_no_op_returning_the_configured_batch(tmp_path):
    model = torch.nn.Linear(4, 2)
    sample = (torch.zeros(8, 4), torch.zeros(8, dtype=torch.long))
    plan = plan_for_device(
        model,
        torch.nn.functional.cross_entropy,
        sample,
        requested=64,
        eval_requested=128,
        device=torch.device("cpu"),
        policy=PrecisionPolicy(None, False),
        grad_accum="auto",
        memory_fraction=0.9,
        cache_dir=tmp_path,
    )
    assert (plan.train_batch, plan.micro_batch, plan.accum_steps, plan.eval_batch) == (64, 64, 1, 128)
    assert not plan.probed
    assert list(tmp_path.iterdir()) == []


def test_cache_roundtrip(tmp_path):
    assert read_cache(tmp_path, "k") is None
    write_cache(tmp_path, "k", {"train": 32, "eval": 96})
    write_cache(tmp_path, "other", {"train": 1, "eval": 1})
    assert read_cache(tmp_path, "k") == {"train": 32, "eval": 96}
    (tmp_path / "batch_probe.json").write_text("{truncated")
    assert read_cache(tmp_path, "k") is None  # a broken cache means "probe again", never a crash


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_probe(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(512, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 10)).cuda()
    sample = (torch.randn(16, 512), torch.randint(0, 10, (16,)))
    kwargs = dict(
        requested=1024,
        eval_requested=2048,
        device=torch.device("cuda"),
        policy=PrecisionPolicy(None, False),
        grad_accum="auto",
        memory_fraction=0.5,
        cache_dir=tmp_path,
    )
    plan = plan_for_device(model, torch.nn.functional.cross_entropy, sample, **kwargs)
    assert plan.probed and plan.train_batch == 1024
    assert (tmp_path / "batch_probe.json").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_real_cuda_probe_backs_off_from_a_real_out_of_memory(tmp_path):
    """A requested batch that cannot fit in the memory the process may use: the probe meets a real CUDA
    out-of-memory, backs off to the largest batch that fits and accumulates gradients up to the request;
    twice that batch really does not fit."""
    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(0.5, (2 << 30) / total)  # about 2 GiB, whatever the device
    torch.cuda.set_per_process_memory_fraction(fraction)
    try:
        model = torch.nn.Sequential(
            torch.nn.Linear(4096, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4096), torch.nn.ReLU()
        ).cuda()
        head = torch.nn.Sequential(model, torch.nn.Linear(4096, 10)).cuda()
        sample = (torch.randn(16, 4096), torch.randint(0, 10, (16,)))
        requested = 1 << 17  # ~2 GiB of input alone
        plan = plan_for_device(
            head,
            torch.nn.functional.cross_entropy,
            sample,
            requested=requested,
            eval_requested=2 * requested,
            device=torch.device("cuda"),
            policy=PrecisionPolicy(None, False),
            grad_accum="auto",
            memory_fraction=fraction,
            cache_dir=tmp_path,
        )
        assert plan.probed and plan.train_batch == requested and 1 <= plan.micro_batch < requested
        assert plan.accum_steps >= 2 and plan.micro_batch * plan.accum_steps >= requested
        x = torch.randn(plan.micro_batch, 4096, device="cuda")
        torch.nn.functional.cross_entropy(
            head(x), torch.randint(0, 10, (plan.micro_batch,), device="cuda")
        ).backward()
        head.zero_grad(set_to_none=True)
        del x
        torch.cuda.empty_cache()
        with pytest.raises(torch.cuda.OutOfMemoryError):
            big = torch.randn(4 * plan.micro_batch, 4096, device="cuda")
            labels = torch.randint(0, 10, (4 * plan.micro_batch,), device="cuda")
            torch.nn.functional.cross_entropy(head(big), labels).backward()
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
