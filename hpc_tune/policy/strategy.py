"""Sampler and pruner from the config.

Defaults follow the field notes: prune by learning curve only after a warm-up (short curves mislead:
F1 0.52 at epoch 20 became 0.84 at epoch 83), and let parallel workers share one TPE with constant liar so
they do not all sample the same region while trials are running.
"""

from __future__ import annotations

import optuna

from hpc_tune.config import Config
from hpc_tune.policy.reliable_pruning import MIN_COMPLETE, ReliableEpochPruner


def make_sampler(config: Config, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """``worker_index`` decorrelates random streams of workers; the grid must be identical in every worker."""
    s = config.sampler
    seed = None if s.seed is None else s.seed + (0 if s.type == "grid" else worker_index)
    if s.type == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=s.multivariate,
            constant_liar=s.constant_liar,
            n_startup_trials=s.n_startup_trials,
        )
    if s.type == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.type == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=s.n_startup_trials)
    if s.type == "qmc":
        # Scrambled Sobol needs the same seed everywhere so workers walk one sequence.
        return optuna.samplers.QMCSampler(seed=s.seed if s.seed is not None else 0)
    # grid: the trial source fixes every parameter to the next free grid point (campaign.py, exactly once
    # across workers); this sampler is only asked for parameters outside the space: none of a grid that
    # hpctune suggests, the extra ones of an objective that asks for its own (drawn at random, as Optuna's
    # GridSampler cannot).
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(config: Config) -> optuna.pruners.BasePruner:
    p = config.pruner
    epochs = config.effective_epochs()
    if p.type == "none":
        return optuna.pruners.NopPruner()
    if p.type == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=p.min_resource, max_resource=epochs, reduction_factor=p.reduction_factor
        )
    if p.type == "sh":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=p.min_resource, reduction_factor=p.reduction_factor
        )
    median: optuna.pruners.BasePruner
    if p.n_warmup_steps == "auto":
        # The median acts only from the epoch the study's own curves show to be reliable.
        median = ReliableEpochPruner(
            optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=0),
            min_complete=max(p.n_startup_trials, MIN_COMPLETE),
        )
    else:
        median = optuna.pruners.MedianPruner(
            n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps
        )
    if p.type == "patience":
        return optuna.pruners.PatientPruner(median, patience=p.patience)
    return median
