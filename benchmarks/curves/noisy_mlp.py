"""A learning-curve task with the field notes' trap in it: regularised models start slowly and win late.

Synthetic tabular classification (scikit-learn's ``make_classification``: 4 classes, 20 % of the labels
flipped, fixed seed, nothing downloaded) with an MLP trained by hpctune's engine. With that much label noise
an unregularised network leads for the first epochs and then memorises the noise, while dropout and weight
decay climb more slowly and finish ahead: the shape of the notes' F1 0.52 at epoch 20 that became 0.84 at
epoch 83, at a size that trains 144 configurations x 2 seeds in minutes on a CPU. It exists only to make
the replay table ``noisy.json.gz`` (``make_tables.py noisy``); it is not one of hpctune's built-in tasks.

Params: lr, weight_decay, hidden, layers (default 2), dropout, optimizer (adamw|sgd). Metric: val_acc.
``label_noise`` (a fixed param, default 0.2) is the share of labels flipped: at 0 the same data has no
trap, and the tables ``tabular`` (0) and ``tabular_trap`` (0.2) search the same larger space on both.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
from sklearn.datasets import make_classification
from torch.utils.data import TensorDataset

from hpc_tune.config import FidelityConfig, TrainConfig
from hpc_tune.tasks.base import TaskParts
from hpc_tune.tasks.common import classification_parts, stratified_split, tensor_datasets
from hpc_tune.tasks.digits import make_mlp

N_FEATURES = 40
N_CLASSES = 4


@lru_cache(maxsize=2)
def _data(label_noise: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = make_classification(
        n_samples=5000,
        n_features=N_FEATURES,
        n_informative=10,
        n_redundant=10,
        n_classes=N_CLASSES,
        n_clusters_per_class=2,
        flip_y=label_noise,
        class_sep=1.0,
        random_state=0,
    )
    train_idx, val_idx = stratified_split(y, val_fraction=0.4)  # 2000 validation samples: a 1-sigma of ~1 pt
    mean, std = x[train_idx].mean(axis=0), x[train_idx].std(axis=0)
    return ((x - mean) / std).astype(np.float32), y.astype(np.int64), train_idx, val_idx


def datasets(
    fidelity: FidelityConfig | None = None, label_noise: float = 0.2
) -> tuple[TensorDataset, TensorDataset]:
    return tensor_datasets(*_data(label_noise), fidelity)


def build(
    params: dict[str, Any], fidelity: FidelityConfig | None, seed: int, train: TrainConfig
) -> TaskParts:
    torch.manual_seed(seed)
    hidden, dropout = int(params.get("hidden", 256)), float(params.get("dropout", 0.0))
    layers = int(params.get("layers", 2))  # 2: the digits MLP's shape
    model = make_mlp(hidden, layers, dropout, n_features=N_FEATURES, n_classes=N_CLASSES)
    data = datasets(fidelity, float(params.get("label_noise", 0.2)))
    return classification_parts(model, data, params, train)
