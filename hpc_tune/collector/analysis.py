"""What a finished (or running) study says beyond its best trial: the recorded ranges, parameter importance,
and the warnings a person should read before trusting the winner. Pure functions over an Optuna study's
trials (and, when there are any, hpctune's per-trial JSON records): no storage, no config, so it runs on any
Optuna study and tests build their studies in memory.

Why each check exists (field notes):
- ``best_at_boundary``: an optimum on the edge of a range is a range that was too small; the real optimum
  is probably outside it. Measured in log space for log ranges ("5 % from the edge": 5 % of the decades).
- ``pruning_unreliable`` / ``rank_correlation``: early epochs can rank trials badly (F1 0.52 at epoch 20 vs
  0.84 at epoch 83). The rank correlation between epoch e and the final value, over completed trials, tells
  from which epoch a pruner may compare curves; trials pruned before that were stopped on noise.
- ``mostly_pruned``: when more than 90 % of the trials were pruned, the pruner, not the data, chose the
  winner.
- ``tmax_mismatch``: a cosine schedule whose T_max is not the epochs run either never anneals or restarts
  (T_max ≈ 24 with 22 epochs run: the last epochs ran at a learning rate that was never meant to be the end).
- ``validation_overfit``: choosing among many trials by one validation split overfits that split (validation
  96.60 % became 96.26 % on the leaderboard); a held-out ``test_*`` metric shows it.
- ``screening_unreliable``: a low-fidelity screening is only useful if its ranking survives full fidelity.
- ``all_similar``: when the best and the median trial differ by noise, "the best trial" is a random pick.
- ``baseline_beats_tuned``: tuning that does not beat the defaults searched the wrong space (or the wrong
  metric).
- ``few_complete``: importance and every ranking above need trials; with fewer than 10 (or 2 per parameter)
  they are anecdotes.
- ``failures``: failed trials cost budget; early divergence usually means the learning rate range reaches too
  high.

Rules shared by all checks: a trial that was re-run (retried or continued, ``retried_numbers``) is replaced by
its re-run and never counted; promoted (full-fidelity) trials are ranked among themselves, and the screening
population (same fidelity as the pruned trials) is what importance, rank correlation and ``all_similar`` use.
Every value returned is JSON-able: no numpy scalars, no NaN (None instead), dict keys are strings.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from hpc_tune import attrs
from hpc_tune.atomic import jsonable
from hpc_tune.collector.formatting import fmt
from hpc_tune.policy.ranking import ranked_trials
from hpc_tune.policy.reliable_pruning import first_reliable, spearman, spearman_by_epoch
from hpc_tune.policy.reruns import retried_numbers

__all__ = [
    "WARNING_ORDER",
    "CosineFit",
    "analyze",
    "distribution_json",
    "fit_cosine_schedule",
    "param_importance",
    "ranges_of",
    "rank_correlation",
    "widened_range",
]

# Most important first: what changes the conclusion, then what changes the next study, then bookkeeping.
WARNING_ORDER = (
    "baseline_beats_tuned",
    "best_at_boundary",
    "validation_overfit",
    "pruning_unreliable",
    "screening_unreliable",
    "tmax_mismatch",
    "mostly_pruned",
    "all_similar",
    "few_complete",
    "failures",
)

EDGE_FRACTION = 0.05  # "at the boundary": within 5 % of the range (of its decades for a log range)
MOSTLY_PRUNED = 0.9
RANK_THRESHOLD = 0.8  # Spearman from which an epoch's ranking is taken for the final one
MIN_RANK_TRIALS = 5  # fewer completed trials at an epoch: no correlation is computed there
MIN_IMPORTANCE_TRIALS = 4
FEW_COMPLETE = 10
# all_similar without confirmation runs: no parameter has an effect at 5 % (Bonferroni over every test
# run) AND the best is within 1 % of the median. Either alone is not enough: a real lr effect with an
# interior optimum has no monotone Spearman trend (the tertile Kruskal-Wallis test catches it), and a tiny
# spread is normal for metrics near their ceiling (99.1 % vs 99.0 %) when the effect is real.
MIN_SIMILAR_TRIALS = 8
SIGNIFICANCE = 0.05
SIMILAR_RELATIVE_SPREAD = 0.01
CONFIRMATION_SDS = 2.0  # with confirmation runs: top - median below 2 seed-to-seed sd is noise
# tmax_mismatch: a cosine fit must match the recorded lr within 0.5 % of the peak (RMS) to be trusted, and the
# lr minimum must be >= 2 epochs and >= 5 % away from the epochs run. One epoch of slack covers both common
# conventions (lr logged at the end of the epoch, hpctune: minimum at epoch E; at the start of the epoch, a
# per-epoch torch scheduler: minimum at epoch E + 1).
TMAX_MIN_EPOCHS = 4
TMAX_TOLERANCE_EPOCHS = 2.0
TMAX_TOLERANCE_FRACTION = 0.05
COSINE_MAX_RMSE = 0.005
LR_RISE = 0.05  # the lr rising again by more than 5 % of its peak after its minimum: a restart
CONSTANT_LR = 0.01  # lr varying by less than 1 % of its peak: no schedule, nothing to check
TMAX_FITS_PER_LENGTH = 50  # the schedule is a config matter: 50 trials per length of run are enough
MIN_SCREENING_PAIRS = 3
# validation_overfit: the best trial by the tuning metric is out of the held-out top-k, or its generalization
# gap is more than twice that of the other top-k trials and more than 0.25 % of its value (96.60 -> 96.26 is a
# 0.35 % gap).
OVERFIT_GAP_FACTOR = 2.0
OVERFIT_MIN_GAP_FRACTION = 0.0025
FEW_EPOCHS_DIVERGED = 2
# fANOVA's cost grows with the square of the trials (10 s for 1,000, 7 min for 10,000): an even subsample.
FANOVA_MAX_TRIALS = 500
PRUNING_COST_LISTED = 100

ImportanceKind = Literal["ped_anova", "fanova"]


# ----------------------------------------------------------------------------------------------- the entry
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
) -> dict[str, Any]:
    """``summary["analysis"]`` of a study: ranges, importance, warnings, rank correlation, screening and
    pruning cost. ``records`` are hpctune's per-trial JSON records by trial number (learning curves, lr,
    held-out metrics); without them the curves are the trials' intermediate values."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', not {direction!r}")
    ctx = _Context.build(
        trials,
        maximize=direction == "maximize",
        records=records or {},
        metric=metric or (study_attrs or {}).get(attrs.METRIC),
        top_k=max(1, top_k),
    )
    ranges = ranges_of(ctx.trials)
    correlation = rank_correlation(ctx.population, ctx.pruned, ctx.curve)
    screening_pairs = _screening_pairs(ctx)
    # A confirmation study (``rerun-top``) repeats a few configurations with new seeds: its parameters were
    # chosen, not searched, so importance, ranges and search warnings would describe nothing. Its own
    # failures still matter; its spread is reported by the original study's summary.
    if (study_attrs or {}).get(attrs.CONFIRMS):
        return jsonable(
            {
                "ranges": ranges,
                "importance": {"skipped": "a confirmation study: the same configurations with several seeds"},
                "warnings": list(_failures(ctx, ranges)),
                "rank_correlation": None,
                "screening": None,
                "pruning_cost": {"overtaken": [], "count": 0},
            }
        )
    found = [
        *_baseline_beats_tuned(ctx),
        *_best_at_boundary(ctx, ranges),
        *_validation_overfit(ctx),
        *_pruning_unreliable(correlation),
        *_screening_unreliable(screening_pairs, ctx),
        *_tmax_mismatch(ctx),
        *_mostly_pruned(ctx),
        *_all_similar(ctx, confirmation_sd),
        *_few_complete(ctx, ranges),
        *_failures(ctx, ranges),
    ]
    found.sort(key=lambda w: WARNING_ORDER.index(w["code"]))
    return jsonable(
        {
            "ranges": ranges,
            "importance": _importance(ctx, importance),
            "warnings": found,
            "rank_correlation": correlation,
            "screening": _screening(screening_pairs),
            "pruning_cost": _pruning_cost(ctx),
        }
    )


@dataclass
class _Context:
    """The study, read once: which trials stand, which are comparable, and their curves."""

    trials: list[FrozenTrial]
    maximize: bool
    records: Mapping[Any, dict[str, Any]]
    metric: str | None
    top_k: int
    standing: list[FrozenTrial]
    complete: list[FrozenTrial]  # standing COMPLETE, finite value, best first
    population: list[FrozenTrial]  # complete at screening fidelity (not promoted), best first
    ranking: list[FrozenTrial]  # what the collector ranks (study/ranking.py); best first
    pruned: list[FrozenTrial]
    _curves: dict[int, dict[int, float]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        trials: Sequence[FrozenTrial],
        *,
        maximize: bool,
        records: Mapping[Any, dict[str, Any]],
        metric: str | None,
        top_k: int,
    ) -> _Context:
        ordered = sorted(trials, key=lambda t: t.number)
        retried = retried_numbers(ordered)
        standing = [t for t in ordered if t.number not in retried]
        sign = 1.0 if maximize else -1.0
        complete = [t for t in standing if t.state == TrialState.COMPLETE and _value(t) is not None]
        complete.sort(key=lambda t: -sign * _value(t))  # type: ignore[operator]
        population = [t for t in complete if attrs.PROMOTED_FROM not in t.user_attrs]
        return cls(
            trials=ordered,
            maximize=maximize,
            records=records,
            metric=metric,
            top_k=top_k,
            standing=standing,
            complete=complete,
            population=population,
            ranking=ranked_trials(standing, "maximize" if maximize else "minimize"),
            pruned=[t for t in standing if t.state == TrialState.PRUNED],
        )

    def score(self, value: float) -> float:
        """Higher is better, whatever the direction."""
        return value if self.maximize else -value

    def record(self, trial: FrozenTrial) -> dict[str, Any] | None:
        found = self.records.get(trial.number)
        if found is None:
            found = self.records.get(str(trial.number))
        return found if isinstance(found, dict) else None

    def epochs(self, trial: FrozenTrial) -> list[dict[str, Any]]:
        epochs = (self.record(trial) or {}).get("epochs")
        return (
            [e for e in epochs if isinstance(e, dict) and _int(e.get("epoch")) is not None] if epochs else []
        )

    def curve(self, trial: FrozenTrial) -> dict[int, float]:
        """Epoch -> metric: the record's epochs when it has the metric, else Optuna's intermediate values."""
        if trial.number not in self._curves:
            curve: dict[int, float] = {}
            if self.metric:
                for e in self.epochs(trial):
                    value = _finite(e.get(self.metric))
                    if value is not None:
                        curve[int(e["epoch"])] = value
            if not curve:
                curve = {
                    int(step): float(v)
                    for step, v in trial.intermediate_values.items()
                    if _finite(v) is not None
                }
            self._curves[trial.number] = dict(sorted(curve.items()))
        return self._curves[trial.number]


# ----------------------------------------------------------------------------------------------- ranges
def ranges_of(trials: Sequence[FrozenTrial]) -> dict[str, dict[str, Any]]:
    """Every parameter's recorded distribution, the latest trial's where a range changed during the study."""
    found: dict[str, BaseDistribution] = {}
    for t in sorted(trials, key=lambda t: t.number):
        found.update(t.distributions)
    return {name: distribution_json(found[name]) for name in sorted(found)}


def distribution_json(dist: BaseDistribution) -> dict[str, Any]:
    if isinstance(dist, CategoricalDistribution):
        return {"type": "categorical", "choices": [jsonable(c) for c in dist.choices]}
    if isinstance(dist, IntDistribution):
        return {"type": "int", "low": dist.low, "high": dist.high, "log": dist.log, "step": dist.step}
    if isinstance(dist, FloatDistribution):
        return {"type": "float", "low": dist.low, "high": dist.high, "log": dist.log, "step": dist.step}
    raise TypeError(f"unknown distribution {type(dist).__name__}")


def _numeric(spec: Mapping[str, Any]) -> bool:
    return spec["type"] in ("float", "int") and spec["high"] > spec["low"]


def _position(spec: Mapping[str, Any], value: float) -> float:
    """Where ``value`` lies in the range, 0 at ``low`` and 1 at ``high``; in decades for a log range."""
    low, high = float(spec["low"]), float(spec["high"])
    if spec["log"] and low > 0 and value > 0:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def _edge(spec: Mapping[str, Any], value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    position = _position(spec, float(value))
    if position <= EDGE_FRACTION:
        return "low"
    if position >= 1 - EDGE_FRACTION:
        return "high"
    return None


def widened_range(spec: Mapping[str, Any], edge: Literal["low", "high"]) -> tuple[float, float]:
    """The range moved out past ``edge``: one more decade for a log range (never to 0 or below), half its
    width for a linear one (a non-negative range stays non-negative, a float range inside [0, 1] stays a
    fraction); integers and stepped ranges stay on their grid."""
    low, high = spec["low"], spec["high"]
    is_int = spec["type"] == "int"
    step = spec.get("step")
    if spec["log"]:
        if edge == "low":
            low = max(1, math.floor(low / 10)) if is_int else _round(low / 10)
        else:
            high = math.ceil(high * 10) if is_int else _round(high * 10)
        return low, high
    half = (high - low) / 2
    if step:
        steps = max(1, math.ceil(half / step))
        half = steps * step
    elif is_int:
        half = max(1, math.ceil(half))
    if edge == "low":
        new_low = low - half
        if low >= 0 and new_low < 0:
            new_low = low - math.floor(low / step) * step if step else 0
        low = int(new_low) if is_int else _round(new_low)
    else:
        new_high = high + half
        if not is_int and spec["low"] >= 0 and high <= 1 and new_high > 1:
            new_high = high + math.floor((1 - high) / step) * step if step else 1.0
        high = int(new_high) if is_int else _round(new_high)
    return low, high


def _round(x: float) -> float:
    """Readable bounds: 1e-05, not 1.0000000000000001e-05; 0.0, not a step's 5.6e-17 of float error."""
    return float(f"{round(x, 12):.6g}")


# ------------------------------------------------------------------------------------------- importance
def _importance(ctx: _Context, kind: ImportanceKind) -> dict[str, Any]:
    overall = param_importance(ctx.population, maximize=ctx.maximize, kind=kind)
    if "skipped" in overall:
        return overall
    phases = sorted(
        {t.user_attrs[attrs.PHASE] for t in ctx.population if t.user_attrs.get(attrs.PHASE) is not None},
        key=str,
    )
    by_phase: dict[str, Any] = {}
    for phase in phases:
        members = [t for t in ctx.population if t.user_attrs.get(attrs.PHASE) == phase]
        result = param_importance(members, maximize=ctx.maximize, kind=kind)
        by_phase[str(phase)] = result.get("overall", result)
    return {
        "evaluator": kind,
        "overall": overall["overall"],
        "by_phase": by_phase,
        "n_trials": overall["n_trials"],
    }


def param_importance(
    trials: Sequence[FrozenTrial], *, maximize: bool, kind: ImportanceKind = "ped_anova"
) -> dict[str, Any]:
    """Optuna's importance of the parameters that varied, on an in-memory copy of the complete trials
    (``{"overall": {...}, "n_trials": n}``), or ``{"skipped": why}``."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and _value(t) is not None]
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return {
            "skipped": f"{len(done)} complete trial(s); importance needs at least {MIN_IMPORTANCE_TRIALS}"
        }
    if kind == "fanova" and len(done) > FANOVA_MAX_TRIALS:
        done.sort(key=lambda t: t.number)
        picks = np.unique(np.linspace(0, len(done) - 1, FANOVA_MAX_TRIALS).round().astype(int))
        done = [done[i] for i in picks]
    params = _varying(done, everywhere=kind == "fanova")
    if not params:
        return {"skipped": "no parameter took more than one value"}
    evaluator = (
        optuna.importance.FanovaImportanceEvaluator(seed=0)
        if kind == "fanova"
        else optuna.importance.PedAnovaImportanceEvaluator()
    )
    try:
        with _quiet_optuna():
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
        return {"skipped": f"{kind} failed: {type(exc).__name__}: {exc}"}
    ordered = sorted(((name, float(v)) for name, v in shares.items()), key=lambda kv: (-kv[1], kv[0]))
    return {"overall": {name: round(v, 6) for name, v in ordered}, "n_trials": len(done)}


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
                state=TrialState.COMPLETE, value=_value(t), params=t.params, distributions=t.distributions
            )
            for t in trials
        ]
    )
    return study


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """The in-memory study's creation log and the evaluators' small-sample warnings are not for the user."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, optuna.logging.WARNING))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


# ------------------------------------------------------------------------------------- rank correlation
def rank_correlation(
    complete: Sequence[FrozenTrial],
    pruned: Sequence[FrozenTrial],
    curve: Callable[[FrozenTrial], Mapping[int, float]],
) -> dict[str, Any] | None:
    """Spearman between each epoch's metric and the final value over the complete trials that reached it;
    ``reliable_from`` is the first epoch from which it stays >= 0.8. ``curve(trial)`` gives epoch -> value."""
    measured = spearman_by_epoch([(curve(t), _value(t)) for t in complete], min_trials=MIN_RANK_TRIALS)
    by_epoch = [
        {"epoch": epoch, "spearman": None if r is None else round(r, 4), "n": n} for epoch, r, n in measured
    ]
    pruned_at = Counter(max(c) for c in (curve(t) for t in pruned) if c)
    if not by_epoch:
        return None
    # The same rule the pruner with `n_warmup_steps: auto` applies while the study runs.
    reliable_from = first_reliable(measured, RANK_THRESHOLD)
    return {
        "threshold": RANK_THRESHOLD,
        "by_epoch": by_epoch,
        "reliable_from": reliable_from,
        "pruned_at": {str(e): n for e, n in sorted(pruned_at.items())},
    }


def _pruning_unreliable(correlation: dict[str, Any] | None) -> list[dict[str, Any]]:
    if correlation is None or not correlation["pruned_at"]:
        return []
    reliable_from = correlation["reliable_from"]
    spearman_at = {e["epoch"]: e["spearman"] for e in correlation["by_epoch"]}
    pruned_at = {int(e): n for e, n in correlation["pruned_at"].items()}
    early = {e: n for e, n in pruned_at.items() if reliable_from is None or e < reliable_from}
    n_pruned, n_early = sum(pruned_at.values()), sum(early.values())
    if 2 * n_early <= n_pruned:
        return []
    cited = max(early, key=lambda e: (early[e], -e))
    r = spearman_at.get(cited)
    at = (
        f"Spearman {r:.2f}"
        if r is not None
        else f"no Spearman (fewer than {MIN_RANK_TRIALS} complete trials)"
    )
    where = (
        f"reliable from epoch {reliable_from}"
        if reliable_from is not None
        else f"never reaching {RANK_THRESHOLD} for good"
    )
    action = (
        f"raise the pruner's n_warmup_steps to {reliable_from} (the first epoch it may prune at)"
        if reliable_from is not None
        else "turn pruning off (pruner type: none): early epochs do not predict the final ranking here"
    )
    return [
        _warning(
            "pruning_unreliable",
            f"{n_early} of {n_pruned} pruned trials were stopped before the ranking settled: at epoch "
            f"{cited}, where pruning happened ({early[cited]} trials), {at} with the final value; {where}.",
            action,
            {
                "reliable_from": reliable_from,
                "pruned_at": [
                    {"epoch": e, "count": n, "spearman": spearman_at.get(e)}
                    for e, n in sorted(pruned_at.items())
                ],
                "pruned": n_pruned,
                "pruned_before_reliable": n_early,
                "suggested_n_warmup_steps": reliable_from,
            },
        )
    ]


# ------------------------------------------------------------------------------------------- the checks
def _warning(code: str, message: str, action: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"code": code, "message": message, "action": action, "details": details}


def _baseline_beats_tuned(ctx: _Context) -> list[dict[str, Any]]:
    marked = [t for t in ctx.standing if t.user_attrs.get(attrs.BASELINE)]
    if not marked:
        return []
    base = marked[-1]
    value = _value(base) if base.state == TrialState.COMPLETE else None
    if value is None:
        return []
    group = ctx.ranking if attrs.PROMOTED_FROM in base.user_attrs else ctx.population
    others = [t for t in group if t.number != base.number]
    if not others:
        return []
    best = others[0]
    best_value = _value(best)
    assert best_value is not None
    if ctx.score(value) < ctx.score(best_value):
        return []
    return [
        _warning(
            "baseline_beats_tuned",
            f"The baseline (trial {base.number}, {fmt(value)}) is at least as good as the best tuned trial "
            f"(trial {best.number}, {fmt(best_value)}) after {len(others)} tuned trials.",
            "keep the baseline; widen or move the search space around it, and check that the metric and its "
            "direction are what you meant",
            {
                "baseline_trial": base.number,
                "baseline_value": value,
                "best_trial": best.number,
                "best_value": best_value,
            },
        )
    ]


def _best_at_boundary(ctx: _Context, ranges: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    if not ctx.ranking:
        return []
    best, top = ctx.ranking[0], ctx.ranking[: ctx.top_k]
    flagged: dict[str, dict[str, Any]] = {}
    for name, spec in ranges.items():
        if not _numeric(spec):
            continue
        near = Counter(_edge(spec, t.params.get(name)) for t in top if name in t.params)
        near.pop(None, None)
        edge = _edge(spec, best.params.get(name))
        if edge is None:
            crowded = [e for e in ("low", "high") if near[e] and 2 * near[e] >= len(top)]
            if not crowded:
                continue
            edge = max(crowded, key=lambda e: near[e])
        low, high = widened_range(spec, edge)  # type: ignore[arg-type]
        flagged[name] = {
            "edge": edge,
            "best": best.params.get(name),
            "top_k_near": near[edge],
            "low": spec["low"],
            "high": spec["high"],
            "log": spec["log"],
            "suggested_low": low,
            "suggested_high": high,
        }
    if not flagged:
        return []
    parts = [
        f"{name}={fmt(d['best'])} at its {d['edge']} edge [{fmt(d['low'])}, {fmt(d['high'])}] "
        f"({d['top_k_near']} of the top {len(top)} there)"
        for name, d in flagged.items()
    ]
    # A range that cannot grow (a fraction already spanning [0, 1], a log range down to its floor) is a
    # hard limit: the warning still stands (the optimum may be the limit itself), the advice differs.
    can_widen = {
        n: d for n, d in flagged.items() if (d["suggested_low"], d["suggested_high"]) != (d["low"], d["high"])
    }
    limits = [n for n in flagged if n not in can_widen]
    actions = []
    if can_widen:
        widen = ", ".join(
            f"{name} to [{fmt(d['suggested_low'])}, {fmt(d['suggested_high'])}]"
            for name, d in can_widen.items()
        )
        actions.append(f"widen {widen} and run more trials: the optimum is probably outside the range")
    if limits:
        actions.append(
            f"{', '.join(limits)} already reach{'es' if len(limits) == 1 else ''} a hard limit: the best "
            "value is the limit itself; check that the parameter does what you expect there"
        )
    return [
        _warning(
            "best_at_boundary",
            f"The best trial (trial {best.number}) sits at the edge of the range: " + "; ".join(parts) + ".",
            "; ".join(actions),
            {"params": flagged},
        )
    ]


def _mostly_pruned(ctx: _Context) -> list[dict[str, Any]]:
    finished = [
        t for t in ctx.standing if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    ]
    pruned = sum(1 for t in finished if t.state == TrialState.PRUNED)
    if not finished or pruned / len(finished) <= MOSTLY_PRUNED:
        return []
    fraction = pruned / len(finished)
    return [
        _warning(
            "mostly_pruned",
            f"{pruned} of {len(finished)} finished trials ({fraction:.0%}) were pruned: the pruner, not the "
            f"data, chose the winner among {len(finished) - pruned} survivors.",
            "prune later and less (raise n_startup_trials and n_warmup_steps, or a patient pruner), "
            "or check that the metric's direction is right",
            {"pruned": pruned, "finished": len(finished), "fraction": round(fraction, 4)},
        )
    ]


def _all_similar(ctx: _Context, confirmation_sd: float | None) -> list[dict[str, Any]]:
    values = [_value(t) for t in ctx.population]
    n = len(values)
    if n < MIN_SIMILAR_TRIALS:
        return []
    top = float(values[0])  # type: ignore[arg-type]
    median = float(np.median(values))
    spread = abs(top - median)
    relative = spread / abs(median) if median != 0 else (0.0 if spread == 0 else math.inf)
    details: dict[str, Any] = {
        "n": n,
        "top": top,
        "median": median,
        "relative_spread": round(relative, 6) if math.isfinite(relative) else None,
        "confirmation_sd": confirmation_sd,
    }
    if confirmation_sd is not None and confirmation_sd > 0:
        if spread >= CONFIRMATION_SDS * confirmation_sd:
            return []
        message = (
            f"The best trial ({fmt(top)}) and the median of {n} complete trials ({fmt(median)}) differ by "
            f"{fmt(spread)}, less than {CONFIRMATION_SDS:g} seed-to-seed standard deviations "
            f"({fmt(CONFIRMATION_SDS * confirmation_sd)})."
        )
    else:
        tests = _effect_tests(ctx.population)
        details["tests"] = tests
        significant = [name for name, t in tests.items() if t["p_adjusted"] < SIGNIFICANCE]
        if significant or relative >= SIMILAR_RELATIVE_SPREAD:
            return []
        smallest = min((t["p_adjusted"] for t in tests.values()), default=1.0)
        message = (
            f"The best trial ({fmt(top)}) is within {relative:.2%} of the median of {n} complete trials "
            f"({fmt(median)}) and no parameter has a significant effect (smallest Bonferroni-adjusted "
            f"p = {smallest:.2g})."
        )
    return [
        _warning(
            "all_similar",
            message,
            "do not read the ranking as a result: re-run the top trials with several seeds, or search a "
            "wider space (or another parameter) that matters",
            details,
        )
    ]


def _effect_tests(trials: Sequence[FrozenTrial]) -> dict[str, dict[str, Any]]:
    """Per parameter: the smallest p of Spearman (monotone trend) and Kruskal-Wallis over value tertiles
    (an optimum inside the range) for numbers, Kruskal-Wallis over the choices for categories; Bonferroni over
    all tests run."""
    raw: dict[str, list[tuple[str, float]]] = {}
    names = sorted({name for t in trials for name in t.params})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            having = [t for t in trials if name in t.params]
            xs = [t.params[name] for t in having]
            ys = np.array([_value(t) for t in having], dtype=float)
            if len({repr(x) for x in xs}) < 2:
                continue
            found: list[tuple[str, float]] = []
            if all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs):
                r = stats.spearmanr(np.array(xs, dtype=float), ys)
                found.append(("spearman", _p(r.pvalue)))
                if len(set(xs)) >= 3 and len(xs) >= 9:
                    order = np.argsort(np.array(xs, dtype=float), kind="stable")
                    found.append(
                        ("kruskal_tertiles", _kruskal([ys[idx] for idx in np.array_split(order, 3)]))
                    )
            else:
                groups: dict[str, list[float]] = {}
                for x, y in zip(xs, ys, strict=True):
                    groups.setdefault(repr(x), []).append(float(y))
                found.append(("kruskal", _kruskal([np.array(g) for g in groups.values()])))
            raw[name] = found
    m = sum(len(v) for v in raw.values())
    out = {}
    for name, found in raw.items():
        test, p = min(found, key=lambda tp: tp[1])
        out[name] = {"test": test, "p": round(p, 6), "p_adjusted": round(min(1.0, p * m), 6)}
    return out


def _kruskal(groups: list[np.ndarray]) -> float:
    groups = [g for g in groups if len(g)]
    if len(groups) < 2:
        return 1.0
    try:
        return _p(stats.kruskal(*groups).pvalue)
    except ValueError:  # every value identical
        return 1.0


def _p(p: Any) -> float:
    p = float(p)
    return p if math.isfinite(p) else 1.0


def _tmax_mismatch(ctx: _Context) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    fitted_per_length: Counter[int] = Counter()
    for t in (t for t in ctx.standing if t.state == TrialState.COMPLETE):
        epochs = ctx.epochs(t)
        run = max((int(e["epoch"]) for e in epochs), default=0) or max(ctx.curve(t), default=0)
        if not run:
            continue
        reported = _reported_tmax(t, ctx.record(t), epochs)
        if reported is not None and reported != run:
            found.append({"trial": t.number, "epochs_run": run, "t_max": reported, "source": "reported"})
            continue
        lr = [(int(e["epoch"]), v) for e in epochs if (v := _finite(e.get("lr"))) is not None]
        if len(lr) < TMAX_MIN_EPOCHS or fitted_per_length[run] >= TMAX_FITS_PER_LENGTH:
            continue
        fitted_per_length[run] += 1
        fit = fit_cosine_schedule([e for e, _ in lr], [v for _, v in lr])
        if fit is None:
            continue
        off = abs(fit.min_epoch - run)
        if fit.rises_after is not None or (
            off >= TMAX_TOLERANCE_EPOCHS and off >= TMAX_TOLERANCE_FRACTION * run
        ):
            found.append(
                {
                    "trial": t.number,
                    "epochs_run": run,
                    "t_max": round(fit.t_max, 1),
                    "source": "lr_curve",
                    "lr_min_epoch": round(fit.min_epoch, 1),
                    "rises_after": fit.rises_after,
                }
            )
    if not found:
        return []
    first = found[0]
    rise = f"; the lr rises again after epoch {first['rises_after']}" if first.get("rises_after") else ""
    how = "reported" if first["source"] == "reported" else "estimated from its lr curve"
    return [
        _warning(
            "tmax_mismatch",
            f"Cosine T_max ≈ {round(first['t_max'])} with {first['epochs_run']} epochs run (trial "
            f"{first['trial']}, {how}{rise}); {len(found)} complete trial(s) affected.",
            "set the schedule's T_max to the epochs each trial really runs (hpctune's engine does; a "
            "script must use the epochs it is given, also at reduced fidelity)",
            {"trials": found[:20], "count": len(found)},
        )
    ]


def _reported_tmax(
    trial: FrozenTrial, record: dict[str, Any] | None, epochs: list[dict[str, Any]]
) -> int | None:
    for source in (
        trial.user_attrs.get(attrs.T_MAX),
        (record or {}).get("t_max"),
        next((e["t_max"] for e in reversed(epochs) if e.get("t_max") is not None), None),
    ):
        if _int(source) is not None:
            return _int(source)
    return None


@dataclass(frozen=True)
class CosineFit:
    """A cosine decay fitted to an lr curve: ``min_epoch`` is where it reaches its minimum (the epochs run,
    for a right T_max), ``t_max`` the length of the decay, ``rises_after`` the epoch after which the lr climbs
    again (a T_max shorter than the run), else None."""

    t_max: float
    min_epoch: float
    start_epoch: float
    rmse: float
    rises_after: int | None


def fit_cosine_schedule(epochs: Sequence[int], lrs: Sequence[float]) -> CosineFit | None:
    """Fit lr_e = A·(1 + cos(π·(e − s)/T))/2 to the decay after the lr's peak, or None when the curve is no
    cosine decay (constant, steps, exponential, linear) or too short.

    Each point's progress through the cosine, arccos(2·lr/A − 1)/π, is linear in the epoch for a cosine: a
    line through them gives the start s and the epoch T + s where the progress reaches 1. The peak amplitude
    A is searched a little above the largest lr seen (the logged lr is the one at the end of an epoch,
    already decayed). ``rises_after`` is reported whatever the shape before."""
    e = np.asarray(epochs, dtype=float)
    lr = np.asarray(lrs, dtype=float)
    order = np.argsort(e, kind="stable")
    e, lr = e[order], lr[order]
    if len(e) < TMAX_MIN_EPOCHS:
        return None
    peak = float(lr.max())
    if peak <= 0 or float(lr.min()) >= peak * (1 - CONSTANT_LR):
        return None
    start = int(np.argmax(lr))
    after_e, after = e[start:], lr[start:]
    lowest = int(np.argmin(after))
    rises = lowest < len(after) - 1 and float(after[lowest:].max() - after[lowest]) > LR_RISE * peak
    rises_after = int(after_e[lowest]) if rises else None
    dec_e, dec = after_e[: lowest + 1], after[: lowest + 1]
    best: tuple[float, float, float] | None = None
    for amplitude in peak * np.linspace(1.0, 1.5, 51):
        fitted = _fit_progress(dec_e, dec, float(amplitude))
        if fitted is not None and (best is None or fitted[0] < best[0]):
            best = fitted
    if best is None:
        if rises_after is None:
            return None
        peak_epoch = float(after_e[0])
        return CosineFit(rises_after - peak_epoch, float(rises_after), peak_epoch, math.inf, rises_after)
    rmse, a, b = best
    min_epoch, start_epoch = (1 - a) / b, -a / b
    if rises_after is None and (rmse > COSINE_MAX_RMSE or start_epoch < -1.0):
        return None
    return CosineFit(
        t_max=min_epoch - start_epoch,
        min_epoch=min_epoch,
        start_epoch=start_epoch,
        rmse=rmse,
        rises_after=rises_after,
    )


def _fit_progress(e: np.ndarray, lr: np.ndarray, amplitude: float) -> tuple[float, float, float] | None:
    x = 2 * lr / amplitude - 1
    usable = (x < 0.98) & (x > -0.98)  # the flat ends of the cosine say little about its length
    if usable.sum() < 2 or len(set(e[usable].tolist())) < 2:
        return None
    progress = np.arccos(np.clip(x[usable], -1, 1)) / np.pi
    b, a = np.polyfit(e[usable], progress, 1)
    if b <= 0:
        return None
    model = amplitude * (1 + np.cos(np.pi * np.clip(a + b * e, 0, 1))) / 2
    rmse = float(np.sqrt(np.mean((model - lr) ** 2)) / amplitude)
    return rmse, float(a), float(b)


def _screening_pairs(ctx: _Context) -> list[tuple[int, int, float, float]]:
    """(source trial, promoted trial, screening value, full value) of every completed promotion."""
    by_number = {t.number: t for t in ctx.trials}
    pairs = []
    for t in ctx.complete:
        source = by_number.get(_int(t.user_attrs.get(attrs.PROMOTED_FROM)))  # type: ignore[arg-type]
        if source is None or source.state != TrialState.COMPLETE or _value(source) is None:
            continue
        pairs.append((source.number, t.number, float(_value(source)), float(_value(t))))  # type: ignore[arg-type]
    return sorted(pairs)


def _screening(pairs: list[tuple[int, int, float, float]]) -> dict[str, Any] | None:
    """How well the screening ranking predicts the full-fidelity one, over the completed promotions."""
    if not pairs:
        return None
    return {"spearman": _spearman([p[2] for p in pairs], [p[3] for p in pairs]), "n": len(pairs)}


def _screening_unreliable(pairs: list[tuple[int, int, float, float]], ctx: _Context) -> list[dict[str, Any]]:
    if len(pairs) < MIN_SCREENING_PAIRS:
        return []
    r = _spearman([p[2] for p in pairs], [p[3] for p in pairs])
    screening_winner = max(pairs, key=lambda p: ctx.score(p[2]))[0]
    promoted_winner = max(pairs, key=lambda p: ctx.score(p[3]))[0]
    if r is not None and r >= RANK_THRESHOLD and screening_winner == promoted_winner:
        return []
    said = f"Spearman {r:.2f}" if r is not None else "no Spearman (screening values all equal)"
    winner = (
        f"; the screening winner (trial {screening_winner}) is not the full-fidelity winner "
        f"(promoted from trial {promoted_winner})"
        if screening_winner != promoted_winner
        else ""
    )
    return [
        _warning(
            "screening_unreliable",
            f"The screening ranking does not survive full fidelity: {said} between the screening and the "
            f"full-fidelity values of {len(pairs)} promoted trials{winner}.",
            "screen at a higher fidelity (more data, more epochs) or promote more trials (promote_top)",
            {
                "spearman": r,
                "n": len(pairs),
                "screening_winner": screening_winner,
                "promoted_winner": promoted_winner,
                "pairs": [
                    {"source": s, "trial": n, "screening_value": sv, "value": v} for s, n, sv, v in pairs
                ],
            },
        )
    ]


def _held_out_key(ctx: _Context, trials: Sequence[FrozenTrial]) -> str | None:
    """The held-out twin of the tuning metric: test_<x> for val_<x> (or test_<metric>); else the only test_*
    key, when it is as loss-like as the metric (a test_loss never stands in for an accuracy)."""
    keys = {
        k for t in trials for e in ctx.epochs(t) for k in e if isinstance(k, str) and k.startswith("test_")
    }
    metric = ctx.metric or ""
    for candidate in (f"test_{metric[4:]}" if metric.startswith("val_") else None, f"test_{metric}"):
        if candidate in keys:
            return candidate
    lossy = any(w in metric for w in ("loss", "err"))
    if len(keys) == 1:
        (only,) = keys
        if any(w in only for w in ("loss", "err")) == lossy:
            return only
    return None


def _validation_overfit(ctx: _Context) -> list[dict[str, Any]]:
    key = _held_out_key(ctx, ctx.ranking)
    if key is None:
        return []
    rows = []  # (trial, tuning value, value at that epoch, held-out value)
    for t in ctx.ranking:
        epochs = ctx.epochs(t)
        best_epoch = _int(((ctx.record(t) or {}).get("best") or {}).get("epoch"))
        at = next(
            (e for e in epochs if _int(e.get("epoch")) == best_epoch and _finite(e.get(key)) is not None),
            None,
        )
        if at is None:
            at = next((e for e in reversed(epochs) if _finite(e.get(key)) is not None), None)
        if at is None:
            continue
        tuned = _finite(at.get(ctx.metric)) if ctx.metric else None
        rows.append((t, _value(t), tuned if tuned is not None else _value(t), _finite(at.get(key))))
    if len(rows) < 3:
        return []
    best = rows[0]  # ctx.ranking is best first
    k = min(ctx.top_k, len(rows))
    by_held = sorted(rows, key=lambda r: -ctx.score(r[3]))
    held_rank = [r[0].number for r in by_held].index(best[0].number) + 1

    def gap(row: tuple[Any, ...]) -> float:
        return ctx.score(row[2]) - ctx.score(row[3])  # positive: held-out worse than validation

    others = [gap(r) for r in rows[1:k]]
    median_gap = float(np.median(others)) if len(others) >= 2 else None
    best_gap = gap(best)
    out_of_top = len(rows) > k and held_rank > k
    wide_gap = (
        median_gap is not None
        and best_gap > OVERFIT_GAP_FACTOR * max(median_gap, 0.0)
        and best_gap > OVERFIT_MIN_GAP_FRACTION * abs(best[2])
    )
    if not (out_of_top or wide_gap):
        return []
    metric = ctx.metric or "value"
    gap_said = (
        f"; its gap {fmt(best_gap)} is over {OVERFIT_GAP_FACTOR:g}x the median gap of the other top {k} "
        f"({fmt(median_gap)})"
        if wide_gap
        else ""
    )
    return [
        _warning(
            "validation_overfit",
            f"The best trial by {metric} (trial {best[0].number}, {fmt(best[2])}) ranks {held_rank} of "
            f"{len(rows)} by {key} ({fmt(best[3])}){gap_said}.",
            f"do not pick by {metric} alone: re-run the top trials with several seeds and compare them on "
            f"{key}, or use a larger validation split",
            {
                "held_out_key": key,
                "best_trial": best[0].number,
                "tuning_value": best[2],
                "held_out_value": best[3],
                "held_out_rank": held_rank,
                "n": len(rows),
                "gap": best_gap,
                "median_gap_top_k": median_gap,
                "top_k_by_held_out": [r[0].number for r in by_held[:k]],
            },
        )
    ]


def _few_complete(ctx: _Context, ranges: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    if not ctx.standing:
        return []
    n_params = sum(1 for spec in ranges.values() if _numeric(spec) or len(spec.get("choices") or []) > 1)
    needed = max(FEW_COMPLETE, 2 * n_params)
    n = len(ctx.population)
    if n >= needed:
        return []
    return [
        _warning(
            "few_complete",
            f"Only {n} complete trials for {n_params} parameters (at least {needed} are needed): importance "
            "and rankings are anecdotes.",
            "raise trials: and submit again (the study goes on where it stopped), or search fewer "
            "parameters (phases)",
            {"complete": n, "params": n_params, "needed": needed},
        )
    ]


def _failures(ctx: _Context, ranges: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    failed = [t for t in ctx.standing if t.state == TrialState.FAIL]
    if not failed:
        return []
    by_reason: Counter[str] = Counter()
    diverged: list[FrozenTrial] = []
    for t in failed:
        reason = str(t.user_attrs.get(attrs.REASON) or (ctx.record(t) or {}).get("reason") or "unknown")
        by_reason[reason] += 1
        if reason.startswith("nonfinite") or _diverged_early(ctx, t):
            diverged.append(t)
    lr_name = next(
        (
            n
            for n in sorted(ranges)
            if _numeric(ranges[n]) and ("lr" in n.lower() or "learning_rate" in n.lower())
        ),
        None,
    )
    lr_values = [float(t.params[lr_name]) for t in diverged if lr_name and lr_name in t.params]
    details = {
        "by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        "diverged_early": len(diverged),
        "lr_param": lr_name,
        "diverged_lr_min": min(lr_values) if lr_values else None,
        "trials": [t.number for t in failed][:50],
    }
    reasons = ", ".join(f"{r} {n}" for r, n in details["by_reason"].items())
    message = f"{len(failed)} trial(s) failed ({reasons})"
    if diverged:
        message += f"; {len(diverged)} diverged early (non-finite values within {FEW_EPOCHS_DIVERGED} epochs)"
    if lr_values and lr_name:
        spec = ranges[lr_name]
        action = (
            f"lower the upper bound of {lr_name} (now {fmt(spec['high'])}) below {fmt(min(lr_values))}, "
            "the smallest value that diverged"
        )
    elif diverged:
        action = "lower the learning rate range or add gradient clipping / warm-up: trials diverged early"
    else:
        action = "read the failed trials' reasons (trials/trial-N.json, stderr) and fix the cause"
    return [_warning("failures", message + ".", action, details)]


def _diverged_early(ctx: _Context, trial: FrozenTrial) -> bool:
    epochs = ctx.epochs(trial)
    if epochs:
        last = epochs[-1]
        if int(last["epoch"]) > FEW_EPOCHS_DIVERGED:
            return False
        return any(
            v is None or (isinstance(v, float) and not math.isfinite(v))
            for k, v in last.items()
            if k != "epoch" and not isinstance(v, str | bool | dict | list)
        )
    steps = trial.intermediate_values
    if not steps:
        return False
    last_step = max(steps)
    return last_step <= FEW_EPOCHS_DIVERGED and _finite(steps[last_step]) is None


# ------------------------------------------------------------------------------------------ pruning cost
def _pruning_cost(ctx: _Context) -> dict[str, Any]:
    """Pruned trials that were ahead of the eventual best trial (same fidelity) at the epoch they stopped."""
    if not ctx.population:
        return {"overtaken": [], "count": 0}
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
                {
                    "trial": t.number,
                    "epoch": epoch,
                    "value": curve[epoch],
                    "best_trial": best.number,
                    "best_value_at_epoch": reference[epoch],
                }
            )
    return {"overtaken": overtaken[:PRUNING_COST_LISTED], "count": len(overtaken)}


# ------------------------------------------------------------------------------------------------ helpers
def _value(trial: FrozenTrial) -> float | None:
    values = trial.values
    if not values or len(values) != 1:
        return None
    return _finite(values[0])


def _finite(value: Any) -> float | None:
    if value is None or isinstance(value, bool | str):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _spearman(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    r = spearman(xs, ys)
    return None if r is None else round(r, 4)
