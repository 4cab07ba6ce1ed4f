"""A small CNN on procedurally generated shapes (circle, square, triangle, cross; 24x24 grey images).

The data are drawn by numpy from a fixed seed, so nothing is downloaded and every trial sees the same images.
It exists so that convolution-heavy training and evaluation (memory formats, compiled conv graphs) are
exercised by the tests and the eval benchmark, not only the digits MLP.

Params: lr, weight_decay, channels (default 16), dropout (default 0), optimizer (adamw|sgd),
momentum, batch_size.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
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

SIZE = 24
CLASSES = ("circle", "square", "triangle", "cross")
N_SAMPLES = 3000
DATA_SEED = 1234


def _draw(kind: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    r = rng.uniform(4.0, 8.0)
    cy, cx = rng.uniform(r + 1, SIZE - r - 1, size=2)
    dy, dx = yy - cy, xx - cx
    if kind == 0:
        mask = dy**2 + dx**2 <= r**2
    elif kind == 1:
        mask = (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
    elif kind == 2:
        mask = (dy <= r * 0.7) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    else:
        w = r * 0.3
        mask = ((np.abs(dy) <= w) & (np.abs(dx) <= r)) | ((np.abs(dx) <= w) & (np.abs(dy) <= r))
    image = mask.astype(np.float32) * rng.uniform(0.6, 1.0)
    return image + rng.normal(0.0, 0.25, size=image.shape).astype(np.float32)


@lru_cache(maxsize=1)
def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(DATA_SEED)
    labels = np.arange(N_SAMPLES) % len(CLASSES)
    images = np.stack([_draw(int(k), rng) for k in labels])[:, None]  # N, 1, H, W
    train_idx, val_idx = stratified_split(labels)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    return ((images - mean) / std).astype(np.float32), labels.astype(np.int64), train_idx, val_idx


def make_cnn(channels: int = 16, dropout: float = 0.0) -> nn.Sequential:
    if channels < 1 or not 0.0 <= dropout < 1.0:
        raise TaskError(f"bad CNN shape channels={channels} dropout={dropout}", "params")
    c = channels
    return nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1),
        nn.BatchNorm2d(c),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 12x12
        nn.Conv2d(c, 2 * c, 3, padding=1),
        nn.BatchNorm2d(2 * c),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 6x6
        nn.Conv2d(2 * c, 4 * c, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(4 * c, len(CLASSES)),
    )


def datasets(fidelity: FidelityConfig | None = None) -> tuple[TensorDataset, TensorDataset]:
    return tensor_datasets(*_data(), fidelity)


def build(
    params: dict[str, Any], fidelity: FidelityConfig | None, seed: int, train: TrainConfig
) -> TaskParts:
    torch.manual_seed(seed)
    model = make_cnn(int(params.get("channels", 16)), float(params.get("dropout", 0.0)))
    return classification_parts(model, datasets(fidelity), params, train)
