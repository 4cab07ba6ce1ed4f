"""The demo task: an MLP on scikit-learn's bundled 8x8 digits (no download, an epoch well under a second).

Params: lr, weight_decay, hidden, layers (default 2), dropout (default 0), optimizer (adamw|sgd),
momentum (sgd), batch_size (else train.batch_size). Metric: val_acc.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

from hpc_tune.config import FidelityConfig, TrainConfig
from hpc_tune.errors import TaskError
from hpc_tune.tasks.base import TaskParts
from hpc_tune.tasks.common import (
    classification_parts,
    stratified_split,
    tensor_datasets,
)

N_FEATURES = 64
N_CLASSES = 10


@lru_cache(maxsize=1)
def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardised features with the TRAIN split's statistics (the val set must not leak into scaling)."""
    x, y = load_digits(return_X_y=True)
    train_idx, val_idx = stratified_split(y)
    mean = x[train_idx].mean(axis=0)
    std = x[train_idx].std(axis=0)
    std[std == 0] = 1.0  # border pixels are always 0 in the training split
    x = ((x - mean) / std).astype(np.float32)
    return x, y.astype(np.int64), train_idx, val_idx


def make_mlp(
    hidden: int,
    layers: int = 2,
    dropout: float = 0.0,
    *,
    n_features: int = N_FEATURES,
    n_classes: int = N_CLASSES,
) -> nn.Sequential:
    if hidden < 1 or layers < 1 or not 0.0 <= dropout < 1.0:
        raise TaskError(f"bad MLP shape hidden={hidden} layers={layers} dropout={dropout}", "params")
    blocks: list[nn.Module] = []
    width = n_features
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout > 0:
            blocks.append(nn.Dropout(dropout))
        width = hidden
    blocks.append(nn.Linear(width, n_classes))
    return nn.Sequential(*blocks)


def datasets(fidelity: FidelityConfig | None = None) -> tuple[TensorDataset, TensorDataset]:
    return tensor_datasets(*_data(), fidelity)


def build(
    params: dict[str, Any], fidelity: FidelityConfig | None, seed: int, train: TrainConfig
) -> TaskParts:
    torch.manual_seed(seed)  # the initial weights are part of what a seed means
    model = make_mlp(
        int(params.get("hidden", 128)), int(params.get("layers", 2)), float(params.get("dropout", 0.0))
    )
    return classification_parts(model, datasets(fidelity), params, train)
