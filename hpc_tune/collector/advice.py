"""What to search next, derived from the analysis: the recommendations a next study is made from
(collector/next_study.py writes it).

A study's warnings are only useful when they turn into a change the user can run. The rules, each with the
reason it exists:

- **Widen** a range whose best (or most of the top-k) sits at an edge: the optimum is probably outside it.
- **Narrow** an important parameter around the top-k, with a margin: the next study spends its trials where
  the good configurations were, instead of re-exploring a region that already lost.
- **Freeze** a parameter of negligible importance at the best trial's value (a one-choice categorical, so
  every kind of task still receives it): each parameter that does not matter costs the sampler trials.
- **Order phases** by importance: the parameters that matter most are tuned first, while the rest are pinned.
- **Raise the pruner's warm-up** to the epoch from which intermediate values predict the final ones
  (the field notes' F1 0.52 at epoch 20 that became 0.84 at epoch 83).

Narrowing and freezing need enough complete trials to trust the importance; with too few, only widening and
the pruner change are made, and the notes say why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from hpc_tune.collector.analysis_model import Analysis, Importance
from hpc_tune.collector.checks.best_at_boundary import BestAtBoundary
from hpc_tune.collector.checks.context import CategoricalRange, ParamRange
from hpc_tune.collector.checks.pruning_unreliable import PruningUnreliable
from hpc_tune.collector.formatting import fmt
from hpc_tune.collector.summary import Change, PrunerChange, Recommendations, TopEntry
from hpc_tune.config import Config

__all__ = ["recommend"]

# Importance share (PED-ANOVA / fANOVA, normalized to sum 1) below which a parameter is frozen, and at or
# above which it is narrowed.
NEGLIGIBLE = 0.02
IMPORTANT = 0.10
# A narrowed range is kept only when it is meaningfully smaller than the current one (log-aware width).
NARROW_ENOUGH = 0.7
# Margin around the top-k: a factor in log space; in linear space a share of the top-k's span (or the range).
LOG_MARGIN = 2.0
LINEAR_MARGIN = 0.25
MIN_TRIALS_TO_FREEZE = 10


def recommend(
    analysis: Analysis,
    top_k: Sequence[TopEntry],
    *,
    confirms: str | None = None,
    config: Config | None = None,
) -> Recommendations:
    """``summary.recommendations``: the next study's space and the changes, each with its reason. ``top_k``
    is the summary's, best first; ``confirms`` marks a confirmation study (it is not searched again)."""
    space = _current_space(analysis.ranges, config)
    warnings = {w.code: w for w in analysis.warnings}
    importance = analysis.importance
    shares = importance.overall if isinstance(importance, Importance) else {}
    n_trials = importance.n_trials if isinstance(importance, Importance) else 0
    trustworthy = bool(shares) and n_trials >= MIN_TRIALS_TO_FREEZE and "few_complete" not in warnings
    best_params = top_k[0].params if top_k else {}
    top = [t.params for t in top_k]
    changes: list[Change] = []
    notes: list[str] = []

    boundary = warnings.get("best_at_boundary")
    at_edge = boundary.details.params if isinstance(boundary, BestAtBoundary) else {}
    for name, edge in at_edge.items():
        spec = space.get(name)
        if spec is None or spec.get("type") not in ("float", "int"):
            continue
        low, high = edge.suggested_low, edge.suggested_high
        if spec["type"] == "int":
            low, high = math.floor(low), math.ceil(high)
        if (low, high) == (spec["low"], spec["high"]):
            continue  # a hard limit (a fraction spanning [0, 1]): nothing to widen
        space[name] = {**spec, "low": low, "high": high}
        changes.append(
            Change(
                param=name,
                kind="widen",
                why=f"best {fmt(edge.best)} at the {edge.edge} edge of "
                f"[{fmt(spec['low'])}, {fmt(spec['high'])}]",
                from_=[spec["low"], spec["high"]],
                to=[low, high],
            )
        )

    # A parameter that conditions others (``when:``) keeps its choices: freezing it would drop a branch.
    parents = {p for spec in space.values() for p in (spec.get("when") or {})}
    if trustworthy:
        for name, share in shares.items():
            spec = space.get(name)
            if spec is None or name in at_edge or spec.get("when"):
                continue
            if share >= IMPORTANT:
                narrowed = _narrow(name, spec, [p[name] for p in top if name in p])
                if narrowed is not None:
                    change, space[name] = narrowed
                    change.why = f"importance {share:.2f}; " + change.why
                    changes.append(change)
            elif share < NEGLIGIBLE and name in best_params and name not in parents:
                value = best_params[name]
                space[name] = {"type": "categorical", "choices": [value]}
                changes.append(
                    Change(
                        param=name,
                        kind="freeze",
                        why=f"importance {share:.3f} (negligible): fixed at the best trial's {fmt(value)}",
                        to=value,
                    )
                )
    elif (shares or not isinstance(importance, Importance)) and not confirms:
        notes.append(
            f"ranges not narrowed and nothing frozen: {n_trials} complete trial(s) are too few to trust "
            "importance; run more trials first"
        )

    phases = _ordered_phases(config, shares) if config is not None else None
    baseline = None
    if phases is not None and config is not None and phases != config.phases:
        notes.append("phases reordered by importance: the parameters that matter most are tuned first")
        # A phase pins the parameters of later phases to the baseline: those that moved later need a value.
        missing = {p for phase in phases[1:] for p in phase} - set(config.baseline or {})
        if missing:
            baseline = {**(config.baseline or {}), **{p: best_params[p] for p in missing if p in best_params}}
    else:
        phases = None

    unreliable = warnings.get("pruning_unreliable")
    pruner, why = _pruner_change(unreliable if isinstance(unreliable, PruningUnreliable) else None, config)
    if why is not None:
        notes.append(why)

    if "baseline_beats_tuned" in warnings:
        notes.append(
            "the baseline beat every tuned trial: the space may exclude the baseline's region; check the "
            "ranges against the baseline's values before spending more trials"
        )
    if "all_similar" in warnings:
        notes.append(
            "the trials cannot be told apart from noise: these parameters hardly matter at this budget; tune "
            "others, or train longer before comparing"
        )
    if "validation_overfit" in warnings:
        notes.append(
            "the validation winner is not the held-out winner: pick by several seeds (rerun-top) or a "
            "larger validation set"
        )
    return Recommendations(
        space=space, changes=changes, phases=phases, baseline=baseline, pruner=pruner, notes=notes
    )


def _current_space(ranges: Mapping[str, ParamRange], config: Config | None) -> dict[str, dict[str, Any]]:
    """The space to change: the config's (keeps ``when:``) or, for a study hpctune did not make, the ranges
    Optuna recorded."""
    if config is not None and config.space is not None:
        return {
            name: spec.model_dump(exclude_none=True, exclude_defaults=True) | {"type": spec.type}
            for name, spec in config.space.items()
        }
    space: dict[str, dict[str, Any]] = {}
    for name, r in ranges.items():
        if isinstance(r, CategoricalRange):
            space[name] = {"type": "categorical", "choices": list(r.choices)}
            continue
        spec: dict[str, Any] = {"type": r.type, "low": r.low, "high": r.high}
        if r.log:
            spec["log"] = True
        if r.step is not None and not (r.type == "int" and r.step == 1):
            spec["step"] = r.step
        space[name] = spec
    return space


def _narrow(name: str, spec: dict[str, Any], values: list[Any]) -> tuple[Change, dict[str, Any]] | None:
    """The change and the narrowed spec, or None when the top-k do not narrow the range enough."""
    if len(values) < 3:
        return None
    if spec.get("type") == "categorical":
        choices = spec.get("choices") or []
        kept = [c for c in choices if c in values]
        if len(kept) < 2 or len(kept) == len(choices):
            return None
        change = Change(
            param=name, kind="narrow", why=f"the top {len(values)} used only {kept}", from_=choices, to=kept
        )
        return change, {**spec, "choices": kept}
    if spec.get("type") not in ("float", "int") or spec.get("step"):
        return None
    low, high = float(spec["low"]), float(spec["high"])
    lo, hi = float(min(values)), float(max(values))
    log = bool(spec.get("log"))
    if log:
        new_low, new_high = max(low, lo / LOG_MARGIN), min(high, hi * LOG_MARGIN)
        width = math.log(high / low)
        new_width = math.log(new_high / new_low) if new_low > 0 else width
    else:
        margin = max(LINEAR_MARGIN * (hi - lo), 0.1 * (high - low))
        new_low, new_high = max(low, lo - margin), min(high, hi + margin)
        width, new_width = high - low, new_high - new_low
    if spec["type"] == "int":
        new_low, new_high = math.floor(new_low), math.ceil(new_high)
        if new_high <= new_low:
            return None
    if width <= 0 or new_width > NARROW_ENOUGH * width:
        return None
    new_low, new_high = _round(new_low), _round(new_high)
    change = Change(
        param=name,
        kind="narrow",
        why=f"the top {len(values)} lie in [{fmt(lo)}, {fmt(hi)}]",
        from_=[spec["low"], spec["high"]],
        to=[new_low, new_high],
    )
    return change, {**spec, "low": new_low, "high": new_high}


def _round(x: float) -> float | int:
    """Four significant digits: a readable YAML, and still inside the margin."""
    if isinstance(x, int) or x == 0:
        return x
    return float(f"{x:.4g}")


def _ordered_phases(config: Config, importance: Mapping[str, float]) -> list[list[str]] | None:
    if not config.phases or not importance:
        return None
    weight = {i: sum(importance.get(p, 0.0) for p in phase) for i, phase in enumerate(config.phases)}
    order = sorted(range(len(config.phases)), key=lambda i: -weight[i])
    return [list(config.phases[i]) for i in order]


def _pruner_change(
    warning: PruningUnreliable | None, config: Config | None
) -> tuple[PrunerChange | None, str | None]:
    """The pruner change and the note that says why, when pruning was unreliable."""
    if warning is None:
        return None, None
    reliable = warning.details.reliable_from
    kind = config.pruner.type if config is not None else "median"
    if reliable is None:
        return (
            PrunerChange(type="none"),
            "intermediate values never predicted the final ones well (Spearman < 0.8 at every epoch): "
            "pruning is switched off for the next study",
        )
    key = "min_resource" if kind in ("hyperband", "sh") else "n_warmup_steps"
    return (
        PrunerChange(**{key: int(reliable)}),
        f"pruner.{key} raised to {reliable}: from epoch {reliable} on, intermediate values rank "
        "trials as their final values do (Spearman ≥ 0.8)",
    )
