import random

import numpy as np
import pytest
import torch

from hpc_tune.train.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint


def _draws(gen: torch.Generator) -> tuple:
    return (
        random.random(),
        float(np.random.rand()),
        float(torch.rand(1)),
        float(torch.rand(1, generator=gen)),
    )


def test_rng_roundtrip_through_a_file(tmp_path):
    gen = torch.Generator().manual_seed(3)
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"rng": capture_rng(gen), "records": [{"epoch": 1, "val_acc": 0.5}]})
    expected = _draws(gen)
    _draws(gen)
    state = load_checkpoint(path)  # weights_only=True: no arbitrary unpickling
    restore_rng(state["rng"], gen)
    assert _draws(gen) == expected
    assert state["records"] == [{"epoch": 1, "val_acc": 0.5}]


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "ck.pt"
    save_checkpoint(path, {"epoch": 1})

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1  # the previous checkpoint survived
    assert [p.name for p in path.parent.iterdir()] == ["ck.pt"]
