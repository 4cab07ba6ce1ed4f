import logging
import os

import pytest
import torch

from hpc_tune.config import TrainConfig
from hpc_tune.tasks import digits, shapes_cnn
from hpc_tune.train import evaluate
from hpc_tune.train.data import Batches
from hpc_tune.train.evaluate import Evaluator, naive_evaluate

CPU = torch.device("cpu")


def _parts(task: str):
    if task == "digits":
        return digits.build({"hidden": 32}, None, 0, TrainConfig())
    return shapes_cnn.build({"channels": 4}, None, 0, TrainConfig())


@pytest.mark.parametrize("task", ["digits", "shapes"])
def test_accelerated_eval_equals_naive_eval(task):
    parts = _parts(task)
    reference = naive_evaluate(parts.model, parts.val_set, parts.loss_fn, parts.metrics, batch_size=64)
    fast_format = torch.channels_last if task == "shapes" else None
    if fast_format is not None:
        parts.model.to(memory_format=fast_format)
    result = Evaluator(
        parts.model,
        parts.val_set,
        parts.loss_fn,
        parts.metrics,
        batch_size=128,
        device=CPU,
        compile="off",
        memory_format=fast_format,
    )()
    assert result.n == reference.n == len(parts.val_set)
    assert result.loss == pytest.approx(reference.loss, abs=1e-5)
    assert result.metrics["val_acc"] == pytest.approx(reference.metrics["val_acc"], abs=1e-5)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("task", ["digits", "shapes"])
def test_compiled_eval_equals_naive_eval(task, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    parts = _parts(task)
    reference = naive_evaluate(parts.model, parts.val_set, parts.loss_fn, parts.metrics, batch_size=64)
    evaluator = Evaluator(
        parts.model, parts.val_set, parts.loss_fn, parts.metrics, batch_size=128, device=CPU, compile="on"
    )
    result = evaluator()
    assert evaluator.step.is_compiled  # really compiled here, not the fallback
    assert result.loss == pytest.approx(reference.loss, abs=1e-5)
    assert result.metrics["val_acc"] == pytest.approx(reference.metrics["val_acc"], abs=1e-5)
    evaluator.release()


def test_max_val_batches_is_the_same_subset_every_epoch():
    parts = _parts("digits")
    first = Batches(parts.val_set, batch_size=16, device=CPU, shuffle=False, limit=3 * 16)
    again = Batches(parts.val_set, batch_size=16, device=CPU, shuffle=False, limit=3 * 16)  # a later trial
    ys = [torch.cat([y for _, y in b]) for b in (first, first, again)]
    assert len(ys[0]) == 48
    assert torch.equal(ys[0], ys[1]) and torch.equal(ys[0], ys[2])
    evaluator = Evaluator(
        parts.model,
        parts.val_set,
        parts.loss_fn,
        parts.metrics,
        batch_size=16,
        device=CPU,
        max_batches=3,
        compile="off",
    )
    a, b = evaluator(), evaluator()
    assert a.n == 48 and (a.loss, a.metrics) == (b.loss, b.metrics)


def test_compile_that_raises_falls_back_to_eager(monkeypatch, caplog):
    def broken_compile(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken_compile)
    parts = _parts("digits")
    reference = naive_evaluate(parts.model, parts.val_set, parts.loss_fn, parts.metrics, batch_size=64)
    with caplog.at_level(logging.WARNING):
        evaluator = Evaluator(
            parts.model, parts.val_set, parts.loss_fn, parts.metrics, batch_size=64, device=CPU, compile="on"
        )
        result = evaluator()
    assert not evaluator.step.is_compiled
    assert result.loss == pytest.approx(reference.loss, abs=1e-5)


def test_compiled_step_failing_at_first_call_falls_back_once(monkeypatch, caplog):
    calls = []

    def compile_to_broken(fn, **kwargs):
        def compiled(*args):
            calls.append(1)
            raise RuntimeError("inductor: C++ compile error")

        return compiled

    monkeypatch.setattr(torch, "compile", compile_to_broken)
    monkeypatch.setattr(evaluate, "_warned", set())
    parts = _parts("shapes")
    reference = naive_evaluate(parts.model, parts.val_set, parts.loss_fn, parts.metrics, batch_size=64)
    with caplog.at_level(logging.WARNING, logger="hpc_tune.train.evaluate"):
        evaluator = Evaluator(
            parts.model, parts.val_set, parts.loss_fn, parts.metrics, batch_size=64, device=CPU, compile="on"
        )
        first, second = evaluator(), evaluator()
    assert calls == [1]  # never retried: the fallback is permanent for this trial
    assert first.loss == pytest.approx(reference.loss, abs=1e-5) and second.loss == first.loss
    assert sum("falling back to eager" in r.message for r in caplog.records) == 1


def test_compile_auto_is_off_on_cpu_and_on_on_cuda():
    assert not evaluate.should_compile("auto", CPU)
    assert evaluate.should_compile("auto", torch.device("cuda"))
    assert evaluate.should_compile("on", CPU) and not evaluate.should_compile("off", torch.device("cuda"))


def test_compile_cache_dir_is_exported_for_inductor(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "restored after the test")
    evaluate.use_compile_cache(tmp_path / "inductor cache")
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str((tmp_path / "inductor cache").resolve())
    assert (tmp_path / "inductor cache").is_dir()
