"""Bring your own objective: a plain Optuna ``objective(trial) -> float``, no hpc_tune engine involved.

hpc_tune still gives you the array, the shared study, budgets, retries, reports and the collector. Report an
intermediate value per epoch if you want pruning; parameters suggested here must match ``space`` in the yaml
(Optuna returns the value the worker already sampled for the same name and distribution).

    task: examples/byo_objective.py:objective
"""

from __future__ import annotations

import optuna
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import train_test_split

EPOCHS = 8


def objective(trial: optuna.Trial) -> float:
    alpha = trial.suggest_float("alpha", 1e-6, 1e-1, log=True)
    eta0 = trial.suggest_float("eta0", 1e-4, 1e-1, log=True)
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(x / 16.0, y, test_size=0.2, stratify=y, random_state=0)
    model = SGDClassifier(alpha=alpha, eta0=eta0, learning_rate="constant", random_state=0)
    score = 0.0
    for epoch in range(1, EPOCHS + 1):
        model.partial_fit(x_train, y_train, classes=list(range(10)))
        score = float(model.score(x_val, y_val))
        trial.report(score, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return score
