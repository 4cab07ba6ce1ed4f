"""``pruning_unreliable``: early epochs can rank trials badly (F1 0.52 at epoch 20 vs 0.84 at epoch 83). The
rank correlation between epoch e and the final value, over completed trials, tells from which epoch a pruner
may compare curves; trials pruned before that were stopped on noise."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hpc_tune.collector.checks.context import MIN_RANK_TRIALS, RANK_THRESHOLD, Context
from hpc_tune.collector.checks.finding import Check, Finding
from hpc_tune.collector.model import Model


class PrunedAt(Model):
    """Trials pruned at one epoch."""

    epoch: int = Field(description="An epoch trials were pruned at.")
    count: int = Field(description="How many.")
    spearman: float | None = Field(description="The rank correlation at that epoch, if measured.")


class PruningUnreliableDetails(Model):
    """What ``pruning_unreliable`` measured."""

    reliable_from: int | None = Field(description="The first epoch whose ranking is reliable, if any.")
    pruned_at: list[PrunedAt] = Field(description="Where the pruned trials were stopped.")
    pruned: int = Field(description="Pruned trials.")
    pruned_before_reliable: int = Field(description="Those stopped before the ranking settled.")
    suggested_n_warmup_steps: int | None = Field(description="The pruner warm-up that would avoid it.")


class PruningUnreliable(Finding):
    """Most pruned trials were stopped before the ranking settled."""

    code: Literal["pruning_unreliable"] = Field(
        "pruning_unreliable", description="The check (hpc_tune/collector/checks/pruning_unreliable.py)."
    )
    details: PruningUnreliableDetails = Field(description="The numbers behind the message.")


def check(ctx: Context) -> PruningUnreliable | None:
    correlation = ctx.correlation
    if correlation is None or not correlation.pruned_at:
        return None
    reliable_from = correlation.reliable_from
    spearman_at = {e.epoch: e.spearman for e in correlation.by_epoch}
    pruned_at = {int(e): n for e, n in correlation.pruned_at.items()}
    early = {e: n for e, n in pruned_at.items() if reliable_from is None or e < reliable_from}
    n_pruned, n_early = sum(pruned_at.values()), sum(early.values())
    if 2 * n_early <= n_pruned:
        return None
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
    return PruningUnreliable(
        message=f"{n_early} of {n_pruned} pruned trials were stopped before the ranking settled: at epoch "
        f"{cited}, where pruning happened ({early[cited]} trials), {at} with the final value; {where}.",
        action=action,
        details=PruningUnreliableDetails(
            reliable_from=reliable_from,
            pruned_at=[
                PrunedAt(epoch=e, count=n, spearman=spearman_at.get(e)) for e, n in sorted(pruned_at.items())
            ],
            pruned=n_pruned,
            pruned_before_reliable=n_early,
            suggested_n_warmup_steps=reliable_from,
        ),
    )


CHECK = Check(PruningUnreliable, check)
