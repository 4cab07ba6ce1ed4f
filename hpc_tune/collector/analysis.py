"""What a finished (or running) study says beyond its best trial: the recorded ranges, parameter importance,
the rank correlation of early epochs with the final values, screening and pruning cost, and the warnings a
person should read before trusting the winner (one module each in checks/, whose docstrings say why each
exists). Pure functions over an Optuna study's trials (and, when there are any, hpctune's per-trial JSON
records): no storage, no config, so it runs on any Optuna study and tests build their studies in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs
from hpc_tune.collector.analysis_model import (
    Analysis,
    Importance,
    ImportanceKind,
    ImportanceSkipped,
    Overtaken,
    PruningCost,
    Screening,
)
from hpc_tune.collector.checks import run_checks
from hpc_tune.collector.checks.context import Context, ScreeningPair, rounded_spearman, value_of
from hpc_tune.collector.formatting import quiet_optuna
from hpc_tune.policy.ranking import has_value

__all__ = ["Shares", "analyze", "param_importance"]

MIN_IMPORTANCE_TRIALS = 4
# fANOVA's cost grows with the square of the trials (10 s for 1,000, 7 min for 10,000): an even subsample.
FANOVA_MAX_TRIALS = 500
PRUNING_COST_LISTED = 100


def analyze(
    trials: Sequence[FrozenTrial],
    *,
    direction: str,
    records: Mapping[int, dict[str, Any]] | None = None,
    metric: str | None = None,
    study_attrs: Mapping[str, Any] | None = None,
    importance: ImportanceKind = "ped_anova",
    top_k: int = 5,
    confirmation_sd: float | None = None,
) -> Analysis:
    """``summary.analysis`` of a study. ``records`` are hpctune's per-trial JSON records by trial number
    (learning curves, lr, held-out metrics); without them the curves are the trials' intermediate values."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', not {direction!r}")
    ctx = Context.build(
        trials,
        maximize=direction == "maximize",
        records=records or {},
        metric=metric or (study_attrs or {}).get(attrs.METRIC),
        top_k=max(1, top_k),
        confirmation_sd=confirmation_sd,
    )
    # A confirmation study (``rerun-top``) repeats a few configurations with new seeds: its parameters were
    # chosen, not searched, so importance, ranges and search warnings would describe nothing. Its own
    # failures still matter; its spread is reported by the original study's summary.
    if (study_attrs or {}).get(attrs.CONFIRMS):
        return Analysis(
            ranges=ctx.ranges,
            importance=ImportanceSkipped(
                skipped="a confirmation study: the same configurations with several seeds"
            ),
            warnings=run_checks(ctx, confirmation=True),
            rank_correlation=None,
            screening=None,
            pruning_cost=PruningCost(overtaken=[], count=0),
        )
    return Analysis(
        ranges=ctx.ranges,
        importance=_importance(ctx, importance),
        warnings=run_checks(ctx),
        rank_correlation=ctx.correlation,
        screening=_screening(ctx.screening_pairs),
        pruning_cost=_pruning_cost(ctx),
    )


# ------------------------------------------------------------------------------------------- importance
@dataclass(frozen=True)
class Shares:
    """Importance over one group of trials: parameter -> share, most important first."""

    overall: dict[str, float]
    n_trials: int


def _importance(ctx: Context, kind: ImportanceKind) -> Importance | ImportanceSkipped:
    overall = param_importance(ctx.population, maximize=ctx.maximize, kind=kind)
    if isinstance(overall, ImportanceSkipped):
        return overall
    phases = sorted(
        {t.user_attrs[attrs.PHASE] for t in ctx.population if t.user_attrs.get(attrs.PHASE) is not None},
        key=str,
    )
    by_phase: dict[str, dict[str, float] | ImportanceSkipped] = {}
    for phase in phases:
        members = [t for t in ctx.population if t.user_attrs.get(attrs.PHASE) == phase]
        result = param_importance(members, maximize=ctx.maximize, kind=kind)
        by_phase[str(phase)] = result.overall if isinstance(result, Shares) else result
    return Importance(evaluator=kind, overall=overall.overall, by_phase=by_phase, n_trials=overall.n_trials)


def param_importance(
    trials: Sequence[FrozenTrial], *, maximize: bool, kind: ImportanceKind = "ped_anova"
) -> Shares | ImportanceSkipped:
    """Optuna's importance of the parameters that varied, on an in-memory copy of the complete trials, or
    why it was not computed."""
    done = [t for t in trials if has_value(t)]
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return ImportanceSkipped(
            skipped=f"{len(done)} complete trial(s); importance needs at least {MIN_IMPORTANCE_TRIALS}"
        )
    if kind == "fanova" and len(done) > FANOVA_MAX_TRIALS:
        done.sort(key=lambda t: t.number)
        picks = np.unique(np.linspace(0, len(done) - 1, FANOVA_MAX_TRIALS).round().astype(int))
        done = [done[i] for i in picks]
    params = _varying(done, everywhere=kind == "fanova")
    if not params:
        return ImportanceSkipped(skipped="no parameter took more than one value")
    evaluator = (
        optuna.importance.FanovaImportanceEvaluator(seed=0)
        if kind == "fanova"
        else optuna.importance.PedAnovaImportanceEvaluator()
    )
    try:
        # The in-memory study's creation log and the evaluators' small-sample warnings are not for the user.
        with quiet_optuna():
            study = _in_memory_study(done, maximize)
            shares = optuna.importance.get_param_importances(study, evaluator=evaluator, params=params)
    except (
        AssertionError,
        ArithmeticError,
        ValueError,
        RuntimeError,
        TypeError,
        optuna.exceptions.OptunaError,
    ) as exc:
        return ImportanceSkipped(skipped=f"{kind} failed: {type(exc).__name__}: {exc}")
    ordered = sorted(((name, float(v)) for name, v in shares.items()), key=lambda kv: (-kv[1], kv[0]))
    return Shares({name: round(v, 6) for name, v in ordered}, len(done))


def _varying(trials: Sequence[FrozenTrial], *, everywhere: bool) -> list[str]:
    seen: dict[str, set[Any]] = {}
    counts: Counter[str] = Counter()
    for t in trials:
        for name, value in t.params.items():
            seen.setdefault(name, set()).add(repr(value))
            counts[name] += 1
    return sorted(
        name
        for name, values in seen.items()
        if len(values) > 1 and (not everywhere or counts[name] == len(trials))
    )


def _in_memory_study(trials: Sequence[FrozenTrial], maximize: bool) -> optuna.Study:
    """A throw-away study holding only what importance reads: params, distributions, value. Copying the real
    trials would copy their curves and attributes too (seconds for 10,000 trials)."""
    storage = optuna.storages.InMemoryStorage()
    direction = optuna.study.StudyDirection.MAXIMIZE if maximize else optuna.study.StudyDirection.MINIMIZE
    storage.create_new_study([direction], "hpctune-analysis")
    study = optuna.Study("hpctune-analysis", storage)
    study.add_trials(
        [
            optuna.trial.create_trial(
                state=TrialState.COMPLETE, value=value_of(t), params=t.params, distributions=t.distributions
            )
            for t in trials
        ]
    )
    return study


# ----------------------------------------------------------------------------- screening, pruning cost
def _screening(pairs: list[ScreeningPair]) -> Screening | None:
    """How well the screening ranking predicts the full-fidelity one, over the completed promotions."""
    if not pairs:
        return None
    return Screening(
        spearman=rounded_spearman([p.screening_value for p in pairs], [p.value for p in pairs]), n=len(pairs)
    )


def _pruning_cost(ctx: Context) -> PruningCost:
    """Pruned trials that were ahead of the eventual best trial (same fidelity) at the epoch they stopped."""
    if not ctx.population:
        return PruningCost(overtaken=[], count=0)
    best = ctx.population[0]
    reference = ctx.curve(best)
    overtaken = []
    for t in ctx.pruned:
        curve = ctx.curve(t)
        if not curve:
            continue
        epoch = max(curve)
        if epoch in reference and ctx.score(curve[epoch]) > ctx.score(reference[epoch]):
            overtaken.append(
                Overtaken(
                    trial=t.number,
                    epoch=epoch,
                    value=curve[epoch],
                    best_trial=best.number,
                    best_value_at_epoch=reference[epoch],
                )
            )
    return PruningCost(overtaken=overtaken[:PRUNING_COST_LISTED], count=len(overtaken))
