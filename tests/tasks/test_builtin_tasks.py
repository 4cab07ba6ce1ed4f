import pytest
import torch

from hpc_tune.config import FidelityConfig, TrainConfig
from hpc_tune.errors import TaskError
from hpc_tune.tasks import digits, shapes_cnn


@pytest.mark.parametrize("module", [digits, shapes_cnn])
def test_split_is_fixed_stratified_and_fidelity_cuts_train_only(module):
    full = module.build({}, None, 0, TrainConfig())
    again = module.build({}, None, 7, TrainConfig())  # another seed: same data, other weights
    cut = module.build({}, FidelityConfig(data_fraction=0.3), 0, TrainConfig())
    val_y = full.val_set.tensors[1]
    assert torch.equal(val_y, again.val_set.tensors[1]) and torch.equal(val_y, cut.val_set.tensors[1])
    assert len(cut.train_set) == pytest.approx(0.3 * len(full.train_set), abs=1)
    # stratified: every class keeps its share within one sample
    full_counts = torch.bincount(full.train_set.tensors[1]).float()
    cut_counts = torch.bincount(cut.train_set.tensors[1]).float()
    assert torch.allclose(cut_counts, full_counts * 0.3, atol=1.0)
    first = next(full.model.parameters())
    assert not torch.equal(first, next(again.model.parameters()))


def test_digits_params_shape_the_model_and_optimizer():
    parts = digits.build(
        {"hidden": 20, "layers": 3, "optimizer": "sgd", "momentum": 0.8, "batch_size": 16},
        None,
        0,
        TrainConfig(),
    )
    linears = [m for m in parts.model if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linears] == [20, 20, 20, 10]
    optimizer = parts.make_optimizer(parts.model.parameters())
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.8
    assert parts.batch_size == 16
    with pytest.raises(TaskError):
        digits.build({"optimizer": "lbfgs"}, None, 0, TrainConfig())


def test_shapes_images_are_nchw_and_the_cnn_classifies_them():
    parts = shapes_cnn.build({"channels": 4}, None, 0, TrainConfig())
    x, y = parts.val_set.tensors
    assert (
        x.shape[1:] == (1, shapes_cnn.SIZE, shapes_cnn.SIZE) and int(y.max()) == len(shapes_cnn.CLASSES) - 1
    )
    assert parts.model(x[:5]).shape == (5, len(shapes_cnn.CLASSES))
