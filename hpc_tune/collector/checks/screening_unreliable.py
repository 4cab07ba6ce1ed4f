"""``screening_unreliable``: a low-fidelity screening is only useful if its ranking survives full fidelity."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hpc_tune.collector.checks.context import RANK_THRESHOLD, Context, rounded_spearman
from hpc_tune.collector.checks.finding import Check, Finding
from hpc_tune.collector.model import Model

MIN_SCREENING_PAIRS = 3


class Pair(Model):
    """A completed promotion."""

    source: int = Field(description="The screening trial.")
    trial: int = Field(description="Its full-fidelity re-run.")
    screening_value: float = Field(description="The screening trial's value.")
    value: float = Field(description="The full-fidelity value.")


class ScreeningUnreliableDetails(Model):
    """What ``screening_unreliable`` measured."""

    spearman: float | None = Field(description="Between screening and full-fidelity values.")
    n: int = Field(description="Completed promotions.")
    screening_winner: int = Field(description="The best screening trial among the promoted.")
    promoted_winner: int = Field(description="The source of the best full-fidelity trial.")
    pairs: list[Pair] = Field(description="Every completed promotion.")


class ScreeningUnreliable(Finding):
    """The screening ranking does not survive full fidelity."""

    code: Literal["screening_unreliable"] = Field(
        "screening_unreliable", description="The check (hpc_tune/collector/checks/screening_unreliable.py)."
    )
    details: ScreeningUnreliableDetails = Field(description="The numbers behind the message.")


def check(ctx: Context) -> ScreeningUnreliable | None:
    pairs = ctx.screening_pairs
    if len(pairs) < MIN_SCREENING_PAIRS:
        return None
    r = rounded_spearman([p.screening_value for p in pairs], [p.value for p in pairs])
    screening_winner = max(pairs, key=lambda p: ctx.score(p.screening_value)).source
    promoted_winner = max(pairs, key=lambda p: ctx.score(p.value)).source
    if r is not None and r >= RANK_THRESHOLD and screening_winner == promoted_winner:
        return None
    said = f"Spearman {r:.2f}" if r is not None else "no Spearman (screening values all equal)"
    winner = (
        f"; the screening winner (trial {screening_winner}) is not the full-fidelity winner "
        f"(promoted from trial {promoted_winner})"
        if screening_winner != promoted_winner
        else ""
    )
    return ScreeningUnreliable(
        message=f"The screening ranking does not survive full fidelity: {said} between the screening and the "
        f"full-fidelity values of {len(pairs)} promoted trials{winner}.",
        action="screen at a higher fidelity (more data, more epochs) or promote more trials (promote_top)",
        details=ScreeningUnreliableDetails(
            spearman=r,
            n=len(pairs),
            screening_winner=screening_winner,
            promoted_winner=promoted_winner,
            pairs=[Pair(**p._asdict()) for p in pairs],
        ),
    )


CHECK = Check(ScreeningUnreliable, check)
