"""A plain Optuna objective that defines its own search space as it runs (no ``space:`` in hpctune.yaml).

Everything here is ordinary Optuna code and runs without hpctune too::

    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=20)

What the space looks like depends on earlier answers, which a fixed ``space:`` cannot say:
- ``momentum`` exists only when the optimizer is SGD, ``weight_decay`` only for AdamW;
- the network has 1 to 3 hidden layers, with one width parameter per layer that exists.

hpctune calls ``objective(trial)`` in its worker, on the shared study; before each call it seeds Python's,
NumPy's and torch's generators with the trial's seed (torch because this module imported it).
"""

from __future__ import annotations

import optuna
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

EPOCHS = 12


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.25, stratify=y, random_state=0)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return as_x(x_train), torch.tensor(y_train), as_x(x_val), torch.tensor(y_val)


def objective(trial: optuna.Trial) -> float:
    n_layers = trial.suggest_int("n_layers", 1, 3)
    layers: list[nn.Module] = []
    width = 64
    for i in range(n_layers):
        hidden = trial.suggest_int(f"hidden_{i}", 16, 256, log=True)
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    model = nn.Sequential(*layers, nn.Linear(width, 10))

    name = trial.suggest_categorical("optimizer", ["adamw", "sgd"])
    lr = trial.suggest_float("lr", 1e-4, 3e-1, log=True)
    if name == "sgd":
        momentum = trial.suggest_float("momentum", 0.0, 0.99)
        optimizer: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    else:
        weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

    x_train, y_train, x_val, y_val = _data()
    val_acc = 0.0
    for epoch in range(1, EPOCHS + 1):
        model.train()
        for batch in torch.randperm(len(x_train)).split(64):
            loss = nn.functional.cross_entropy(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            val_acc = (model(x_val).argmax(dim=1) == y_val).float().mean().item()
        # The learning curve for the study's pruner (and for hpctune's trial records and summary).
        trial.report(val_acc, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return val_acc
