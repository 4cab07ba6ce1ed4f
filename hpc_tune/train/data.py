"""Batches for training and evaluation, without per-sample collation when the data already is in memory.

A DataLoader calls ``dataset[i]`` once per sample and stacks the results: for small in-memory datasets
(digits: 64 floats a sample) that Python overhead costs more than the model itself. TensorDatasets (and
Subsets of them) are therefore sliced as whole tensors, moved to the device once, and shuffled with one
gather per epoch.
Other datasets go through a DataLoader with device-appropriate settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

# Keep a pre-collated dataset on the GPU only below this size; larger ones stay in pinned host memory.
MAX_DEVICE_RESIDENT_BYTES = 2 * 1024**3


def in_memory_tensors(dataset: Dataset) -> tuple[Tensor, Tensor] | None:
    """(inputs, targets) when the dataset is a 2-tensor TensorDataset or a Subset of one; else None."""
    if isinstance(dataset, Subset):
        inner = in_memory_tensors(dataset.dataset)
        if inner is None:
            return None
        index = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        return inner[0][index], inner[1][index]
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        return dataset.tensors[0], dataset.tensors[1]
    return None


def validation_subset(dataset: Dataset, size: int) -> Subset:
    """``size`` samples of ``dataset``, the same for every epoch, trial and seed, so that values stay
    comparable across a study's curves. Stratified by class when the targets are in memory as class indices
    (each class keeps its share, rounded by largest remainder), else a fixed random draw: the first batches
    of a class-sorted set would be biased."""
    n = len(dataset)  # type: ignore[arg-type]
    size = max(1, min(size, n))
    generator = torch.Generator().manual_seed(0)  # seed-independent on purpose
    tensors = in_memory_tensors(dataset)
    labels = tensors[1] if tensors is not None else None
    if labels is None or labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32, torch.uint8):
        return Subset(dataset, sorted(torch.randperm(n, generator=generator)[:size].tolist()))
    classes, counts = torch.unique(labels, return_counts=True)
    quotas = counts.double() * size / n
    take = quotas.floor().long()
    remainders = (quotas - take).tolist()
    for k in sorted(range(len(classes)), key=lambda i: (-remainders[i], i))[: size - int(take.sum())]:
        take[k] += 1
    chosen: list[int] = []
    for cls, k in zip(classes.tolist(), take.tolist(), strict=True):
        members = torch.nonzero(labels == cls).flatten()
        chosen += members[torch.randperm(len(members), generator=generator)[:k]].tolist()
    return Subset(dataset, sorted(chosen))


def _place(tensor: Tensor, device: torch.device, memory_format: torch.memory_format | None) -> Tensor:
    if memory_format is not None and tensor.dim() == 4:
        tensor = tensor.contiguous(memory_format=memory_format)
    if device.type == "cuda" and tensor.numel() * tensor.element_size() > MAX_DEVICE_RESIDENT_BYTES:
        return tensor.pin_memory()
    return tensor.to(device)


class Batches:
    """Iterable of (x, y) batches on ``device``.

    ``shuffle`` draws a new order each epoch from ``generator`` (saved in checkpoints, so a resumed trial sees
    the same order it would have seen). ``limit`` keeps ``limit`` samples, the same ones every time
    (``validation_subset``): a reduced validation that every epoch and every trial runs on the same samples.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        batch_size: int,
        device: torch.device,
        shuffle: bool,
        generator: torch.Generator | None = None,
        limit: int | None = None,
        loader_kwargs: dict[str, Any] | None = None,
        memory_format: torch.memory_format | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.generator = generator
        self.memory_format = memory_format
        if limit is not None and limit < len(dataset):  # type: ignore[arg-type]
            dataset = validation_subset(dataset, limit)
        self.n = len(dataset)  # type: ignore[arg-type]
        tensors = in_memory_tensors(dataset)
        self.precollated = tensors is not None
        self._loader: DataLoader | None = None
        if tensors is not None:
            self._x = _place(tensors[0], device, memory_format)
            self._y = _place(tensors[1], device, None)
        else:
            self._loader = DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=shuffle,
                generator=generator,
                drop_last=False,
                **(loader_kwargs or {}),
            )

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self._loader is not None:
            for x, y in self._loader:
                yield self._to_device(x), self._to_device(y)
            return
        x, y = self._x, self._y
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator).to(x.device)
            x, y = x[order], y[order]  # one gather per epoch; the slices below are then contiguous views
        for start in range(0, self.n, self.batch_size):
            yield (
                self._to_device(x[start : start + self.batch_size]),
                self._to_device(y[start : start + self.batch_size]),
            )

    def _to_device(self, t: Tensor) -> Tensor:
        if self.memory_format is not None and t.dim() == 4:
            t = t.contiguous(memory_format=self.memory_format)  # a no-op when it already is
        return t if t.device == self.device else t.to(self.device, non_blocking=True)

    def release(self) -> None:
        """Drop device copies now rather than whenever the garbage collector finds them."""
        self._x = self._y = None  # type: ignore[assignment]
        self._loader = None
