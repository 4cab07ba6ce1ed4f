"""A Hydra app: a small MLP on scikit-learn's digits, configured by config.yaml and ``key=value`` overrides.

    python train.py optimizer.lr=0.01 model.hidden=128 trainer.max_epochs=5

Like any Hydra app it knows nothing about hpctune; hpctune.yaml beside it tunes it through overrides, with
the config's own dotted keys as parameter names. It prints one JSON line per epoch (the metrics hpctune
reads) and logs through ``logging`` as Hydra sets it up (those lines are kept in the log, never read).
"""

from __future__ import annotations

import json
import logging

import hydra
import torch
from omegaconf import DictConfig
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=".", config_name="config")
def main(cfg: DictConfig) -> float:
    torch.manual_seed(cfg.trainer.seed)
    x, y = load_digits(return_X_y=True)
    # A fixed split, whatever the seed: every run is validated on the same images.
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.25, stratify=y, random_state=0)
    x_train, x_val = torch.tensor(x_train, dtype=torch.float32), torch.tensor(x_val, dtype=torch.float32)
    y_train, y_val = torch.tensor(y_train), torch.tensor(y_val)
    model = nn.Sequential(
        nn.Linear(64, cfg.model.hidden),
        nn.ReLU(),
        nn.Dropout(cfg.model.dropout),
        nn.Linear(cfg.model.hidden, 10),
    )
    if cfg.optimizer.name == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), lr=cfg.optimizer.lr, momentum=0.9, weight_decay=cfg.optimizer.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay
        )
    log.info("training %s for %d epochs", cfg.optimizer.name, cfg.trainer.max_epochs)
    val_acc = 0.0
    for epoch in range(1, cfg.trainer.max_epochs + 1):
        model.train()
        for batch in torch.randperm(len(x_train)).split(cfg.trainer.batch_size):
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = nn.functional.cross_entropy(logits, y_val).item()
            val_acc = (logits.argmax(dim=1) == y_val).float().mean().item()
        print(json.dumps({"epoch": epoch, "val_loss": val_loss, "val_acc": val_acc}), flush=True)
    return val_acc


if __name__ == "__main__":
    main()
