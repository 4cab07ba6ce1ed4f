import pytest
import torch
from torch import nn

from hpc_tune.config import TrainConfig
from hpc_tune.tasks import shapes_cnn
from hpc_tune.train import eval_graph
from hpc_tune.train.eval_graph import build_eval_graph
from hpc_tune.train.evaluate import Evaluator, naive_evaluate

CPU = torch.device("cpu")


def _trained_cnn(steps: int = 20) -> tuple[nn.Module, torch.Tensor]:
    """A CNN whose BatchNorms hold real running statistics and affine weights, so that a fold that skipped
    any part of them would show."""
    torch.manual_seed(0)
    model = shapes_cnn.make_cnn(channels=8)
    x = torch.randn(32, 1, 24, 24) * 3 + 1
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    return model.eval(), x


def test_cnn_eval_graph_gives_the_models_outputs():
    model, x = _trained_cnn()
    folded = build_eval_graph(model)
    assert folded is not None and len(folded.folded) == 2  # the CNN's two conv → BatchNorm pairs
    assert folded.swapped == 2  # and its two ReLU → MaxPool pairs
    graph_modules = [type(m) for m in folded.module.modules()]
    assert nn.BatchNorm2d not in graph_modules  # the BatchNorms are really gone from the eval graph
    order = [
        type(folded.module.get_submodule(n.target))
        for n in folded.module.graph.nodes
        if n.op == "call_module"
    ]
    assert order[:3] == [eval_graph.FoldedConv, nn.MaxPool2d, nn.ReLU]
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)


class _FunctionalRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2, padding=1, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(torch.nn.functional.relu(x)) + self.pool(torch.relu(-x))


def test_relu_after_max_pool_is_bit_for_bit_the_same():
    model = _FunctionalRelu()
    graph = build_eval_graph(model)
    assert graph is not None and graph.swapped == 2 and not graph.folded
    x = torch.randn(3, 2, 9, 9)
    assert torch.equal(graph(x), model(x))


def test_relu_needed_elsewhere_stays_before_the_pool():
    class Both(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu, self.pool = nn.ReLU(), nn.MaxPool2d(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.relu(x)
            return self.pool(y).sum() + y.sum()  # the ReLU's full output is used too

    assert build_eval_graph(Both()) is None


def test_refresh_follows_training_and_loaded_weights():
    model, x = _trained_cnn()
    folded = build_eval_graph(model)
    assert folded is not None
    new_state = _trained_cnn(steps=40)[0].state_dict()
    model.load_state_dict(new_state)  # what a resume or the best epoch's restore does
    with torch.no_grad():
        stale = folded(x)
        folded.refresh()
        fresh = folded(x)
        expected = model(x)
    assert not torch.allclose(stale, expected, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(fresh, expected, rtol=1e-4, atol=1e-5)


def test_fold_keeps_channels_last_weights():
    model, x = _trained_cnn()
    model.to(memory_format=torch.channels_last)
    folded = build_eval_graph(model)
    assert folded is not None
    assert all(f.weight.is_contiguous(memory_format=torch.channels_last) for f in folded.folded)
    with torch.no_grad():
        torch.testing.assert_close(
            folded(x.to(memory_format=torch.channels_last)), model(x), rtol=1e-4, atol=1e-5
        )


class _Residual(nn.Module):
    """The convolution's own output is also added back: folding the BatchNorm into it would change that."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.norm(y) + y


class _DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.norm = nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # control flow on a value: torch.fx cannot trace it
            x = x * 2
        return self.norm(self.conv(x))


class _AuxWhileTraining(nn.Module):
    """Inception-style: an auxiliary output while training only."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.aux = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor):
        out = self.norm(self.conv(x))
        if self.training:
            return out, self.aux(x)
        return out


def test_the_graph_is_traced_as_the_model_validates():
    model = _AuxWhileTraining()
    model.train()
    graph = build_eval_graph(model)
    assert model.training  # tracing in eval mode left the model as it was
    assert graph is not None
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model.eval()(x), rtol=1e-4, atol=1e-5)


def test_models_that_cannot_be_folded_are_left_as_written():
    assert build_eval_graph(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())) is None  # nothing to rewrite
    assert build_eval_graph(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))) is None  # not after a conv
    stats_free = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False))
    assert build_eval_graph(stats_free) is None  # normalises by the batch even in eval mode
    assert build_eval_graph(_Residual()) is None
    assert build_eval_graph(_DataDependent()) is None
    hooked = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    hooked[1].register_forward_hook(lambda module, args, out: None)
    assert build_eval_graph(hooked) is None  # the hook would silently stop firing


def _shapes_parts():
    parts = shapes_cnn.build({"channels": 8}, None, 0, TrainConfig())
    trained, _ = _trained_cnn()
    parts.model.load_state_dict(trained.state_dict())
    return parts


def _evaluator(parts, **kwargs) -> Evaluator:
    return Evaluator(
        parts.model, parts.val_set, parts.loss_fn, parts.metrics, batch_size=128, device=CPU, **kwargs
    )


def test_evaluator_runs_the_eval_graph_and_gives_the_naive_loops_numbers():
    parts = _shapes_parts()
    reference = naive_evaluate(parts.model, parts.val_set, parts.loss_fn, parts.metrics, batch_size=64)
    evaluator = _evaluator(parts, compile="off")
    result = evaluator()
    assert evaluator.graph is not None  # the graph survived its first-batch check
    assert result.loss == pytest.approx(reference.loss, rel=1e-5)
    assert result.metrics["val_acc"] == pytest.approx(reference.metrics["val_acc"], abs=1e-9)
    assert _evaluator(parts, compile="off", rewrite=False).graph is None


def test_evaluator_drops_a_graph_that_changes_the_outputs(monkeypatch, caplog):
    parts = _shapes_parts()
    reference = _evaluator(parts, compile="off", rewrite=False)()

    def wrong_refresh(self):  # fault injection: a fold that forgot the BatchNorm's scale
        conv, _ = self._live
        self.weight.copy_(conv.weight)
        self.bias.zero_()

    monkeypatch.setattr(eval_graph.FoldedConv, "refresh", wrong_refresh)
    monkeypatch.setattr("hpc_tune.train.evaluate._warned", set())
    evaluator = _evaluator(parts, compile="off")
    with caplog.at_level("WARNING"):
        result = evaluator()
    assert evaluator.graph is None
    assert "validating the model as written" in caplog.text
    assert result.loss == pytest.approx(reference.loss, rel=1e-6)
