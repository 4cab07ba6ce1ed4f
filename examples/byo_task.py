"""Bring your own task: a module (or file) with ``build(params, fidelity, seed, train) -> TaskParts``.

hpc_tune's engine then does the rest (AMP, compiled eval, checkpoints, pruning reports). Here: logistic-ish
regression on a synthetic two-moons problem, small enough to read in one go.

    task: examples/byo_task.py:build     (or a module path: my_pkg.my_task)
"""

from __future__ import annotations

from typing import Any

import torch
from sklearn.datasets import make_moons
from torch import nn
from torch.utils.data import TensorDataset

from hpc_tune.config import FidelityConfig, TrainConfig
from hpc_tune.tasks.base import TaskParts


def _correct(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs.argmax(dim=1) == targets).sum()  # a per-batch SUM: the engine divides by n


def build(
    params: dict[str, Any], fidelity: FidelityConfig | None, seed: int, train: TrainConfig
) -> TaskParts:
    x, y = make_moons(n_samples=2000, noise=0.25, random_state=0)  # fixed data: every trial sees the same set
    x_t, y_t = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    n_train = int(1600 * (fidelity.data_fraction if fidelity else 1.0))  # low fidelity cuts TRAIN data only
    torch.manual_seed(seed)
    hidden = int(params.get("hidden", 32))
    model = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, 2))
    lr = float(params.get("lr", 1e-2))
    return TaskParts(
        model=model,
        train_set=TensorDataset(x_t[:n_train], y_t[:n_train]),
        val_set=TensorDataset(x_t[1600:], y_t[1600:]),
        loss_fn=nn.functional.cross_entropy,
        metrics={"val_acc": _correct},
        make_optimizer=lambda p: torch.optim.AdamW(p, lr=lr),
        batch_size=int(params.get("batch_size", train.batch_size)),
    )
