"""The reduced validation subset: stratified, and the same samples for every epoch, trial and seed."""

import torch
from torch.utils.data import TensorDataset

from hpc_tune.tasks import digits
from hpc_tune.train.data import validation_subset


def test_the_subset_keeps_every_class_share_and_is_always_the_same() -> None:
    # a class-sorted set with unequal classes: the first half would hold no class 2 at all
    y = torch.cat([torch.zeros(60), torch.ones(30), torch.full((10,), 2)]).long()
    data = TensorDataset(torch.randn(100, 3), y)
    subset = validation_subset(data, 50)
    labels = y[list(subset.indices)]
    assert len(subset) == 50
    assert torch.bincount(labels).tolist() == [30, 15, 5]
    assert list(validation_subset(data, 50).indices) == list(subset.indices)
    odd = validation_subset(data, 7)  # 4.2 / 2.1 / 0.7: largest remainders round 0.7 up
    assert torch.bincount(y[list(odd.indices)], minlength=3).tolist() == [4, 2, 1]


def test_the_built_in_validation_set_halves_by_class() -> None:
    _, val = digits.datasets()
    y = val.tensors[1]
    half = validation_subset(val, len(val) // 2)
    counts = torch.bincount(y[list(half.indices)], minlength=10)
    assert (counts - torch.bincount(y, minlength=10) / 2).abs().max() <= 1


def test_targets_that_are_not_class_indices_get_a_fixed_random_subset() -> None:
    data = TensorDataset(torch.randn(40, 2), torch.randn(40))  # regression targets
    subset = validation_subset(data, 10)
    assert len(subset) == 10 and list(subset.indices) == list(validation_subset(data, 10).indices)
    assert list(subset.indices) != list(range(10))
