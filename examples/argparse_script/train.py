"""Train a small MLP on scikit-learn's handwritten digits: an ordinary argparse training script.

It imports nothing of hpctune: hpctune.yaml beside it tunes it as it is. Three habits that most training
scripts already have are all it takes:
- its hyperparameters are command-line flags;
- it prints one JSON line per epoch with its validation metrics, flushed, so that a tuner reading its output
  sees each epoch as it ends (and can stop a hopeless run early);
- with --checkpoint PATH it saves its state after every epoch, and with --resume it goes on from there, so a
  run cut short (a job's time limit) loses at most one epoch.

One more, optional: with HPCTUNE_LR_RANGE=1 in its environment (what `hpctune lr-range` sets) it runs a
learning-rate range test instead of training (lr_range_test below). Without the variable it never reads it.

    python train.py --lr 0.01 --epochs 10
    python train.py --lr 0.01 --epochs 20 --checkpoint ckpt.pt            # stop it any time, then:
    python train.py --lr 0.01 --epochs 20 --checkpoint ckpt.pt --resume
    HPCTUNE_LR_RANGE=1 python train.py --batch-size 64                   # {"lr": ..., "loss": ...} lines
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train an MLP on the digits data set.")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="save the training state here after every epoch")
    parser.add_argument("--resume", action="store_true", help="continue from the state in --checkpoint")
    return parser.parse_args(argv)


def load_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)  # 1797 8x8 images, shipped with scikit-learn: no download
    # A fixed split (random_state=0, not the seed): every run is validated on the same images, so runs with
    # different seeds or settings are comparable.
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.25, stratify=y, random_state=0)
    as_x, as_y = (lambda a: torch.tensor(a, dtype=torch.float32)), (lambda a: torch.tensor(a))
    return as_x(x_train), as_y(y_train), as_x(x_val), as_y(y_val)


def make_model(args: argparse.Namespace) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    return model, optimizer


def lr_range_test(args: argparse.Namespace, x_train: torch.Tensor, y_train: torch.Tensor) -> None:
    """The learning-rate range test of `hpctune lr-range` (docs/lr-range.md): one optimizer step per learning
    rate, growing exponentially from HPCTUNE_LR_RANGE_MIN to HPCTUNE_LR_RANGE_MAX over HPCTUNE_LR_RANGE_STEPS
    steps, on a fresh model, each step printed as {"lr": ..., "loss": ...}. hpctune smooths the losses, stops
    this process once they diverge and suggests the range for lr; this script only has to take the steps."""
    low = float(os.environ.get("HPCTUNE_LR_RANGE_MIN", "1e-6"))
    high = float(os.environ.get("HPCTUNE_LR_RANGE_MAX", "10"))
    steps = int(os.environ.get("HPCTUNE_LR_RANGE_STEPS", "100"))
    model, optimizer = make_model(args)
    model.train()
    shuffle = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(x_train), generator=shuffle)
    start = 0
    for step in range(steps):
        lr = low * (high / low) ** (step / max(steps - 1, 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        if start >= len(order):  # the training set is used up: the next pass in a new order
            order, start = torch.randperm(len(x_train), generator=shuffle), 0
        batch = order[start : start + args.batch_size]
        start += args.batch_size
        loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(json.dumps({"lr": lr, "loss": loss.item()}), flush=True)
        if not math.isfinite(loss.item()):
            break


def main() -> None:
    args = parse_args()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    x_train, y_train, x_val, y_val = load_data()
    if os.environ.get("HPCTUNE_LR_RANGE") == "1":
        lr_range_test(args, x_train, y_train)
        return
    model, optimizer = make_model(args)
    shuffle = torch.Generator().manual_seed(args.seed)
    start = 1
    if args.resume:
        state = torch.load(args.checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        shuffle.set_state(state["shuffle"])
        start = state["epoch"] + 1
        print(f"resuming from {args.checkpoint} at epoch {start}", file=sys.stderr, flush=True)

    for epoch in range(start, args.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=shuffle)
        train_loss = 0.0
        for i in range(0, len(order), args.batch_size):
            batch = order[i : i + args.batch_size]
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            train_loss += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = nn.functional.cross_entropy(logits, y_val).item()
            val_acc = (logits.argmax(dim=1) == y_val).float().mean().item()
        line = {
            "epoch": epoch,
            "train_loss": train_loss / len(order),
            "val_loss": val_loss,
            "val_acc": val_acc,
        }
        print(json.dumps(line), flush=True)
        if args.checkpoint:
            # After the epoch's line: a run stopped between the two repeats this epoch when resumed, rather
            # than leaving its line out. Written aside and renamed, so a kill mid-write keeps the old file.
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "shuffle": shuffle.get_state(),
                "epoch": epoch,
            }
            torch.save(state, args.checkpoint + ".tmp")
            os.replace(args.checkpoint + ".tmp", args.checkpoint)


if __name__ == "__main__":
    main()
