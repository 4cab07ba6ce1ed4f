"""Pieces every built-in classification task shares: optimizer from params, accuracy metric, split helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import TensorDataset

from hpc_tune.config import FidelityConfig, TrainConfig
from hpc_tune.errors import TaskError
from hpc_tune.tasks.base import TaskParts

# The split is fixed across trials (and seeds): every trial must validate on the same samples, or differences
# between trials would partly be differences between validation sets.
SPLIT_SEED = 0


def correct_count(outputs: Tensor, targets: Tensor) -> Tensor:
    """Per-batch SUM (the engine divides by n), so partial batches weigh exactly by their size."""
    return (outputs.argmax(dim=1) == targets).sum()


CLASSIFICATION_METRICS: Mapping[str, Callable[[Tensor, Tensor], Tensor]] = {"val_acc": correct_count}


def optimizer_factory(
    params: Mapping[str, Any],
) -> Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]:
    lr = float(params.get("lr", 1e-3))
    weight_decay = float(params.get("weight_decay", 1e-4))
    name = str(params.get("optimizer", "adamw")).lower()
    if name not in ("adamw", "sgd"):
        raise TaskError(f"optimizer must be adamw or sgd, got {name!r}", "params.optimizer")
    momentum = float(params.get("momentum", 0.9))

    def make(parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if name == "sgd":
            return torch.optim.SGD(
                parameters, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=True
            )
        # foreach: one fused kernel launch per parameter group instead of one per tensor.
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay, foreach=True)

    return make


def stratified_split(labels: np.ndarray, val_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    index = np.arange(len(labels))
    train_idx, val_idx = train_test_split(
        index, test_size=val_fraction, stratify=labels, random_state=SPLIT_SEED
    )
    return np.sort(train_idx), np.sort(val_idx)


def subsample_train(train_idx: np.ndarray, labels: np.ndarray, fidelity: FidelityConfig | None) -> np.ndarray:
    """Low fidelity = fewer TRAIN samples, stratified, the same subset for every trial; the val set is
    never cut, so scores at different fidelities stay comparable."""
    fraction = 1.0 if fidelity is None else fidelity.data_fraction
    if fraction >= 1.0:
        return train_idx
    n_classes = len(np.unique(labels[train_idx]))
    keep = max(n_classes, int(round(fraction * len(train_idx))))
    if keep >= len(train_idx):
        return train_idx
    kept, _ = train_test_split(
        train_idx, train_size=keep, stratify=labels[train_idx], random_state=SPLIT_SEED
    )
    return np.sort(kept)


def tensor_datasets(
    x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray, fidelity: FidelityConfig | None
) -> tuple[TensorDataset, TensorDataset]:
    """In-memory TensorDatasets (the engine slices whole batches out of them instead of collating per sample);
    the train part is subsampled by the fidelity, the val part never."""
    train_idx = subsample_train(train_idx, y, fidelity)
    train = TensorDataset(torch.from_numpy(x[train_idx]), torch.from_numpy(y[train_idx]))
    val = TensorDataset(torch.from_numpy(x[val_idx]), torch.from_numpy(y[val_idx]))
    return train, val


def classification_parts(
    model: torch.nn.Module,
    datasets: tuple[TensorDataset, TensorDataset],
    params: Mapping[str, Any],
    train: TrainConfig,
) -> TaskParts:
    """The parts every built-in classification task shares: cross-entropy, accuracy, the optimizer the
    sampler chose, and the sampler's batch size (or ``train.batch_size``)."""
    train_set, val_set = datasets
    return TaskParts(
        model=model,
        train_set=train_set,
        val_set=val_set,
        loss_fn=torch.nn.functional.cross_entropy,
        metrics=CLASSIFICATION_METRICS,
        make_optimizer=optimizer_factory(params),
        batch_size=batch_size_of(params, train.batch_size),
    )


def batch_size_of(params: Mapping[str, Any], default: int) -> int:
    value = int(params.get("batch_size", default))
    if value < 1:
        raise TaskError(f"batch_size must be >= 1, got {value}", "params.batch_size")
    return value
