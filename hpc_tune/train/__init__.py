"""The train/validate engine: fit() plus its parts (evaluation, precision, schedule, batch probe,
checkpoints).

This package never imports optuna: the worker adapts it to trials through ``on_epoch``.
"""

from hpc_tune.train.engine import EpochRecord, FitResult, fit
from hpc_tune.train.faults import FAULT_ENV, Fault, faults_for_trial, parse_faults

__all__ = ["FAULT_ENV", "EpochRecord", "Fault", "FitResult", "faults_for_trial", "fit", "parse_faults"]
