"""runs/<study>/summary.md: the study in a screenful of Markdown that a person pastes into a chat or an issue.

Written for the reader who will not open the HTML report: the best configuration, the top 5, what mattered,
what looks wrong and what to do about it, and the exact commands for the next step.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from hpc_tune.collector.analysis_model import Importance, ImportanceSkipped
from hpc_tune.collector.formatting import fmt
from hpc_tune.collector.summary import Summary

__all__ = ["fmt_params", "fmt_value", "next_steps", "render_digest"]

TOP_SHOWN = 5
RERUN_K = 5
RERUN_SEEDS = 3


def fmt_value(value: Any) -> str:
    """Numbers as a person reads them (4 significant digits); everything else as written; an em dash where
    there is nothing (the terminal's confirmation table writes ``-``: rerun_results.py)."""
    return "—" if value is None else fmt(value)


def fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in params.items())


def next_steps(summary: Summary) -> list[tuple[str, str]]:
    """(command, why) pairs for what to run after this study; the same list heads both report files."""
    study = shlex.quote(summary.study)
    top = summary.top_k
    if not top:
        return [
            (
                f"hpctune status {study}",
                "no trial completed: look at the failures and warnings before running more",
            )
        ]
    steps: list[tuple[str, str]] = []
    # A confirmation study is itself the re-run: it is not confirmed again. A study hpctune did not create
    # has no config to re-run its trials from.
    confirmable = summary.hpctune_study and not summary.confirms
    if not summary.confirmation and confirmable:
        k = min(RERUN_K, len(top))
        steps.append(
            (
                f"hpctune rerun-top {study} --k {k} --seeds {RERUN_SEEDS}",
                "a single run per configuration: confirm the top trials with more seeds before picking one",
            )
        )
    recommendations = summary.recommendations
    count = len(recommendations.changes) + bool(recommendations.pruner) + bool(recommendations.phases)
    if count:
        why = f"a next study with the {count} recommended change(s)"
    else:
        why = "a next study from this one's space (no change recommended)"
    steps.append((f"hpctune next {study} -o next.yaml", why))
    return steps


def _md(text: Any) -> str:
    """A user's string as Markdown text: a ``<`` would start raw HTML where the digest is rendered
    (a ``<script>`` choice, say), so it is backslash-escaped like the backslash itself."""
    return str(text).replace("\\", "\\\\").replace("<", "\\<")


def _cell(value: Any) -> str:
    """A Markdown table cell: a ``|`` or a newline in a user's value would break the table."""
    return _md(fmt_value(value)).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def render_digest(summary: Summary) -> str:
    """summary.md's text."""
    metric = summary.metric or "value"
    counts = summary.counts
    budget = summary.budget
    analysis = summary.analysis
    lines = [f"# Study `{summary.study}`: {metric} ({summary.direction})", ""]
    lines.append(
        f"{budget.finished}/{budget.trials} trials finished: "
        + ", ".join(
            f"{state} {getattr(counts, state)}" for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
        )
        + "."
    )
    pruning = summary.pruning
    if counts.PRUNED:
        lines.append(
            f"Pruning saved {pruning.saved_fraction:.0%} of the epochs "
            f"({pruning.epochs_spent} of {pruning.epochs_if_unpruned} run)."
        )
    lines.append("")

    best = summary.best
    if best is None:
        lines += ["**No completed trial yet.**", ""]
    else:
        at = f" (best epoch {best.best_epoch})" if best.best_epoch is not None else ""
        lines.append(
            f"**Best:** trial {best.trial}, {metric} **{fmt_value(best.value)}**{at}: "
            f"{_md(fmt_params(best.params))}"
        )
        baseline = summary.baseline
        if baseline is not None:
            shown = fmt_value(baseline.value) if baseline.value is not None else baseline.state
            lines.append(f"Baseline: trial {baseline.trial}, {metric} {shown}.")
        lines.append("")
        top = summary.top_k[:TOP_SHOWN]
        names = list(dict.fromkeys(p for t in top for p in t.params))
        lines += [f"## Top {len(top)}", ""]
        lines += _table(
            ["rank", "trial", metric, "epochs", *names],
            [
                [rank, t.trial, t.value, t.epochs, *[t.params.get(n) for n in names]]
                for rank, t in enumerate(top, start=1)
            ],
        )
        lines.append("")

    importance = analysis.importance
    if isinstance(importance, Importance) and importance.overall:
        ranked = sorted(importance.overall.items(), key=lambda kv: -float(kv[1]))
        lines += [
            f"## Importance ({importance.evaluator}, {importance.n_trials} trials)",
            "",
            " · ".join(f"{name} {float(share):.2f}" for name, share in ranked),
            "",
        ]
    elif isinstance(importance, ImportanceSkipped):
        lines += ["## Importance", "", f"Not computed: {importance.skipped}.", ""]

    lines += ["## Warnings", ""]
    if not analysis.warnings:
        lines.append("None.")
    for w in analysis.warnings:
        lines.append(f"- **{w.code}**: {_md(w.message)}")
        if w.action:
            lines.append(f"  - *Do:* {_md(w.action)}")
    lines.append("")

    confirmation = summary.confirmation
    if confirmation:
        lines += [f"## Confirmation ({confirmation.seeds} seeds)", ""]
        lines += _table(
            ["trial", "single run", "mean", "sd", "n", "rank single", "rank mean"],
            [
                [c.source_trial, c.single_value, c.mean, c.sd, c.n, c.rank_single, c.rank_mean]
                for c in confirmation.configs
            ],
        )
        lines.append("")
        verdict = f"Pick: trial {confirmation.pick} (best mean)."
        if confirmation.single_winner_not_mean_winner:
            verdict += " The single-run winner is not the best on average."
        lines += [verdict, ""]

    recommendations = summary.recommendations
    if recommendations.changes or recommendations.notes:
        lines += ["## Recommended changes", ""]
        for change in recommendations.changes:
            lines.append(f"- {change.kind} `{change.param}`: {_md(change.why)}")
        for note in recommendations.notes:
            lines.append(f"- {_md(note)}")
        lines.append("")

    lines += ["## Next step", ""]
    for command, why in next_steps(summary):
        lines.append(f"- `{command}`: {why}")
    return "\n".join(lines).rstrip("\n") + "\n"
