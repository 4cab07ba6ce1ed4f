"""The train/validate engine: fit() plus its parts (evaluation, precision, schedule, batch probe,
checkpoints).

This package never imports optuna: the worker adapts it to trials through ``on_epoch``.
"""

from typing import Any

from hpc_tune.train.faults import FAULT_ENV, Fault, faults_for_trial, parse_faults


def __getattr__(name: str) -> Any:
    # The engine imports torch (~2 s); workers that run a plain objective(trial) only need the faults.
    if name in ("EpochRecord", "FitResult", "fit"):
        from hpc_tune.train import engine

        return getattr(engine, name)
    raise AttributeError(name)


__all__ = ["FAULT_ENV", "EpochRecord", "Fault", "FitResult", "faults_for_trial", "fit", "parse_faults"]
