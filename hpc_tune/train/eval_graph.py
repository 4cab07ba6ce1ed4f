"""The graph that validation runs when it runs eagerly: the model as written, minus two passes over memory.

Two rewrites of a ``torch.fx`` trace of the model, both exact in eval mode up to float rounding:
- **BatchNorm folded into the convolution that feeds it.** In eval mode a BatchNorm is a per-channel affine
  map with frozen statistics, so it can be absorbed into the convolution's weights and bias.
- **ReLU moved after max-pooling.** ReLU is monotone, so the max of ReLUs is the ReLU of the max; after the
  pool it touches a quarter of the values (2×2 pooling), and the result is bit for bit the same.
On a 2-core CPU these were the two largest costs of a small CNN's eval after the convolutions themselves
(docs/benchmarks.md, "Eval speed on this CPU"). torch.compile does the same and more, but its compile time is
too long for a CPU trial (same page); a compiled step therefore gets the model as written.

Training never sees this graph. It shares every module and parameter with the live model, except that each
(convolution, BatchNorm) pair is one ``FoldedConv``. Its weights are recomputed from the live pair at every
validation (``refresh``), so it always evaluates the weights trained so far, and a resumed or restored state
dict is picked up with no extra step.

The evaluator checks on the first batch of every trial that the graph gives the model's outputs, and falls
back to the model as written when it does not. A model that ``torch.fx`` cannot trace (control flow on tensor
values, for instance), or that has hooks the rewrite would bypass, is evaluated as written.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

log = logging.getLogger(__name__)

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_RELU_FUNCTIONS = (torch.relu, F.relu)


class FoldedConv(nn.Module):
    """One convolution followed by one BatchNorm, as a single convolution with the folded weights."""

    def __init__(self, conv: nn.Conv1d | nn.Conv2d | nn.Conv3d, norm: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        # A tuple, not attributes: the live modules must not become submodules of the eval graph twice.
        self._live = (conv, norm)
        self.weight = torch.empty_like(conv.weight, requires_grad=False)  # the live weight's memory format
        self.bias = torch.empty(conv.out_channels, dtype=conv.weight.dtype, device=conv.weight.device)

    @torch.no_grad()
    def refresh(self) -> None:
        conv, norm = self._live
        assert norm.running_mean is not None and norm.running_var is not None  # checked in build_eval_graph
        weight, bias = fuse_conv_bn_weights(
            conv.weight,
            conv.bias,
            norm.running_mean,
            norm.running_var,
            norm.eps,
            norm.weight,
            norm.bias,
        )
        if self.weight.device != weight.device:  # the model moved since the graph was built
            self.weight = torch.empty_like(conv.weight, requires_grad=False)
            self.bias = torch.empty_like(bias, requires_grad=False)
        self.weight.copy_(weight)
        self.bias.copy_(bias)

    def forward(self, x: Tensor) -> Tensor:
        return self._live[0]._conv_forward(x, self.weight, self.bias)


class EvalGraph:
    """The rewritten graph and the folded convolutions it must refresh before each validation."""

    def __init__(self, graph_module: fx.GraphModule, folded: list[FoldedConv], swapped: int) -> None:
        self.module = graph_module
        self.folded = folded
        self.swapped = swapped  # ReLUs moved after a max-pool

    def refresh(self) -> None:
        for conv in self.folded:
            conv.refresh()

    def __call__(self, x: Tensor) -> Tensor:
        return self.module(x)


def _has_hooks(model: nn.Module) -> bool:
    """A folded BatchNorm, or a model run through its graph, would no longer call a user's forward hooks."""
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in model.modules())


def _fold_batch_norms(traced: fx.GraphModule, modules: dict[str, nn.Module]) -> list[FoldedConv]:
    folded: list[FoldedConv] = []
    for node in list(traced.graph.nodes):
        norm = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(norm, _NORMS) or norm.running_mean is None:
            continue  # without running statistics a BatchNorm normalises by the batch even in eval mode
        source = node.args[0] if node.args else None
        if not (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(modules.get(source.target), _CONVS)
            and len(source.users) == 1  # the convolution's own output is not needed anywhere else
            and len(node.args) == 1
            and not node.kwargs
        ):
            continue
        conv = FoldedConv(modules[source.target], norm)
        name = f"hpctune_folded_{len(folded)}"
        traced.add_submodule(name, conv)
        with traced.graph.inserting_after(node):
            replacement = traced.graph.call_module(name, source.args, source.kwargs)
        node.replace_all_uses_with(replacement)
        traced.graph.erase_node(node)
        traced.graph.erase_node(source)
        folded.append(conv)
    return folded


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), nn.ReLU)
    return node.op == "call_function" and node.target in _RELU_FUNCTIONS


def _move_relus_after_max_pools(traced: fx.GraphModule, modules: dict[str, nn.Module]) -> int:
    swapped = 0
    for relu in list(traced.graph.nodes):
        if not _is_relu(relu, modules) or len(relu.users) != 1 or not relu.args:
            continue
        pool = next(iter(relu.users))
        pool_module = modules.get(pool.target) if pool.op == "call_module" else None
        if not (
            isinstance(pool_module, _POOLS)
            and not pool_module.return_indices
            and pool.args == (relu,)
            and not pool.kwargs
        ):
            continue
        # source -> relu -> pool -> users   becomes   source -> pool -> relu -> users
        pool.replace_all_uses_with(relu)
        pool.args = (relu.args[0],)
        relu.args = (pool, *relu.args[1:])
        pool.append(relu)  # the ReLU now runs after the pool it reads
        swapped += 1
    return swapped


def build_eval_graph(model: nn.Module) -> EvalGraph | None:
    """The rewritten graph of ``model``, or None when no rewrite applies or the model cannot be traced."""
    if not any(isinstance(m, _NORMS + _POOLS) for m in model.modules()) or _has_hooks(model):
        return None  # nothing to rewrite (and no trace to pay for), or hooks the rewrite would bypass
    was_training = model.training
    model.eval()  # a forward that branches on self.training is traced as it validates, not as it trains
    try:
        traced = fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - any tracing problem means "evaluate the model as written"
        log.debug("eval graph not built: the model cannot be traced (%s: %s)", type(exc).__name__, exc)
        return None
    finally:
        model.train(was_training)
    modules = dict(traced.named_modules())
    folded = _fold_batch_norms(traced, modules)
    swapped = _move_relus_after_max_pools(traced, dict(traced.named_modules()))
    if not folded and not swapped:
        return None
    traced.graph.lint()
    traced.delete_all_unused_submodules()  # only from the graph: the live model keeps its own
    traced.recompile()
    graph = EvalGraph(traced, folded, swapped)
    graph.refresh()
    return graph
