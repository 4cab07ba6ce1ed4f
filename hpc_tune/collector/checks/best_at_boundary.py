"""``best_at_boundary``: an optimum on the edge of a range is a range that was too small; the real optimum is
probably outside it. Measured in log space for log ranges ("5 % from the edge": 5 % of the decades)."""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from pydantic import Field

from hpc_tune.collector.checks.context import Context, edge_of, is_numeric, widened_range
from hpc_tune.collector.checks.finding import Check, Finding
from hpc_tune.collector.formatting import fmt
from hpc_tune.collector.model import Model


class AtEdge(Model):
    """A parameter whose best (or most of the top-k) sits at an edge, and the range suggested instead."""

    edge: Literal["low", "high"] = Field(description="Which edge.")
    best: Any = Field(description="The best trial's value of the parameter.")
    top_k_near: int = Field(description="How many of the top-k trials sit at that edge.")
    low: int | float = Field(description="The range's low bound.")
    high: int | float = Field(description="The range's high bound.")
    log: bool = Field(description="A log range.")
    suggested_low: int | float = Field(description="The widened range's low bound.")
    suggested_high: int | float = Field(
        description="The widened range's high bound (equal to the range at a hard limit, such as [0, 1])."
    )


class BestAtBoundaryDetails(Model):
    """What ``best_at_boundary`` measured."""

    params: dict[str, AtEdge] = Field(description="Parameter name -> where it sits.")


class BestAtBoundary(Finding):
    """The best trial (or most of the top-k) sits at the edge of a range."""

    code: Literal["best_at_boundary"] = Field(
        "best_at_boundary", description="The check (hpc_tune/collector/checks/best_at_boundary.py)."
    )
    details: BestAtBoundaryDetails = Field(description="The numbers behind the message.")


def check(ctx: Context) -> BestAtBoundary | None:
    if not ctx.ranking:
        return None
    best, top = ctx.ranking[0], ctx.ranking[: ctx.top_k]
    flagged: dict[str, AtEdge] = {}
    for name, spec in ctx.ranges.items():
        if not is_numeric(spec):
            continue
        near = Counter(edge_of(spec, t.params.get(name)) for t in top if name in t.params)
        near.pop(None, None)
        edge = edge_of(spec, best.params.get(name))
        if edge is None:
            crowded = [e for e in ("low", "high") if near[e] and 2 * near[e] >= len(top)]
            if not crowded:
                continue
            edge = max(crowded, key=lambda e: near[e])  # type: ignore[assignment]
        assert edge is not None
        low, high = widened_range(spec, edge)
        flagged[name] = AtEdge(
            edge=edge,
            best=best.params.get(name),
            top_k_near=near[edge],
            low=spec.low,
            high=spec.high,
            log=spec.log,
            suggested_low=low,
            suggested_high=high,
        )
    if not flagged:
        return None
    parts = [
        f"{name}={fmt(d.best)} at its {d.edge} edge [{fmt(d.low)}, {fmt(d.high)}] "
        f"({d.top_k_near} of the top {len(top)} there)"
        for name, d in flagged.items()
    ]
    # A range that cannot grow (a fraction already spanning [0, 1], a log range down to its floor) is a
    # hard limit: the warning still stands (the optimum may be the limit itself), the advice differs.
    can_widen = {n: d for n, d in flagged.items() if (d.suggested_low, d.suggested_high) != (d.low, d.high)}
    limits = [n for n in flagged if n not in can_widen]
    actions = []
    if can_widen:
        widen = ", ".join(
            f"{name} to [{fmt(d.suggested_low)}, {fmt(d.suggested_high)}]" for name, d in can_widen.items()
        )
        actions.append(f"widen {widen} and run more trials: the optimum is probably outside the range")
    if limits:
        actions.append(
            f"{', '.join(limits)} already reach{'es' if len(limits) == 1 else ''} a hard limit: the best "
            "value is the limit itself; check that the parameter does what you expect there"
        )
    return BestAtBoundary(
        message=f"The best trial (trial {best.number}) sits at the edge of the range: "
        + "; ".join(parts)
        + ".",
        action="; ".join(actions),
        details=BestAtBoundaryDetails(params=flagged),
    )


CHECK = Check(BestAtBoundary, check)
