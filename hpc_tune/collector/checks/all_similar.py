"""``all_similar``: when the best and the median trial differ by noise, "the best trial" is a random pick.

Without confirmation runs: no parameter has an effect at 5 % (Bonferroni over every test run) AND the best is
within 1 % of the median. Either alone is not enough: a real lr effect with an interior optimum has no
monotone Spearman trend (the tertile Kruskal-Wallis test catches it), and a tiny spread is normal for metrics
near their ceiling (99.1 % vs 99.0 %) when the effect is real. With confirmation runs (``rerun-top``), the
seed-to-seed standard deviation is the noise: a best within two of them of the median is noise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from optuna.trial import FrozenTrial
from pydantic import Field
from scipy import stats

from hpc_tune.collector.checks.context import Context, value_of
from hpc_tune.collector.checks.finding import Check, Finding
from hpc_tune.collector.formatting import fmt
from hpc_tune.collector.model import Model, Sparse

MIN_SIMILAR_TRIALS = 8
SIGNIFICANCE = 0.05
SIMILAR_RELATIVE_SPREAD = 0.01
CONFIRMATION_SDS = 2.0  # with confirmation runs: top - median below 2 seed-to-seed sd is noise


class EffectTest(Model):
    """One parameter's effect on the value, tested."""

    test: Literal["spearman", "kruskal_tertiles", "kruskal"] = Field(
        description="The test with the smallest p: Spearman (a monotone trend), Kruskal-Wallis over value "
        "tertiles (an optimum inside the range), or over the choices of a categorical."
    )
    p: float = Field(description="Its p-value.")
    p_adjusted: float = Field(description="Bonferroni-adjusted over every test run.")


class AllSimilarDetails(Sparse):
    """What ``all_similar`` measured."""

    n: int = Field(description="Complete trials at screening fidelity.")
    top: float = Field(description="The best value.")
    median: float = Field(description="The median value.")
    relative_spread: float | None = Field(description="|top - median| / |median|.")
    confirmation_sd: float | None = Field(description="The pooled seed-to-seed sd of rerun-top, if any.")
    tests: dict[str, EffectTest] | None = Field(
        None, description="Without confirmation runs: each parameter's effect test (absent otherwise)."
    )


class AllSimilar(Finding):
    """The best trial and the median differ by noise: "the best trial" is a random pick."""

    code: Literal["all_similar"] = Field(
        "all_similar", description="The check (hpc_tune/collector/checks/all_similar.py)."
    )
    details: AllSimilarDetails = Field(description="The numbers behind the message.")


def check(ctx: Context) -> AllSimilar | None:
    values = [value_of(t) for t in ctx.population]
    n = len(values)
    if n < MIN_SIMILAR_TRIALS:
        return None
    top = float(values[0])  # type: ignore[arg-type]
    median = float(np.median(values))
    spread = abs(top - median)
    relative = spread / abs(median) if median != 0 else (0.0 if spread == 0 else math.inf)
    confirmation_sd = ctx.confirmation_sd
    details = AllSimilarDetails(
        n=n,
        top=top,
        median=median,
        relative_spread=round(relative, 6) if math.isfinite(relative) else None,
        confirmation_sd=confirmation_sd,
    )
    if confirmation_sd is not None and confirmation_sd > 0:
        if spread >= CONFIRMATION_SDS * confirmation_sd:
            return None
        message = (
            f"The best trial ({fmt(top)}) and the median of {n} complete trials ({fmt(median)}) differ by "
            f"{fmt(spread)}, less than {CONFIRMATION_SDS:g} seed-to-seed standard deviations "
            f"({fmt(CONFIRMATION_SDS * confirmation_sd)})."
        )
    else:
        tests = effect_tests(ctx.population)
        details.tests = tests
        significant = [name for name, t in tests.items() if t.p_adjusted < SIGNIFICANCE]
        if significant or relative >= SIMILAR_RELATIVE_SPREAD:
            return None
        smallest = min((t.p_adjusted for t in tests.values()), default=1.0)
        message = (
            f"The best trial ({fmt(top)}) is within {relative:.2%} of the median of {n} complete trials "
            f"({fmt(median)}) and no parameter has a significant effect (smallest Bonferroni-adjusted "
            f"p = {smallest:.2g})."
        )
    return AllSimilar(
        message=message,
        action="do not read the ranking as a result: re-run the top trials with several seeds, or search a "
        "wider space (or another parameter) that matters",
        details=details,
    )


def effect_tests(trials: Sequence[FrozenTrial]) -> dict[str, EffectTest]:
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
            ys = np.array([value_of(t) for t in having], dtype=float)
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
        out[name] = EffectTest(test=test, p=round(p, 6), p_adjusted=round(min(1.0, p * m), 6))  # type: ignore[arg-type]
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


CHECK = Check(AllSimilar, check)
