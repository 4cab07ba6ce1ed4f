"""runs/<study>/summary.md: the study in a screenful of Markdown that a person pastes into a chat or an issue.

Written for the reader who will not open the HTML report: the best configuration, the top 5, what mattered,
what looks wrong and what to do about it, and the exact commands for the next step.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from hpc_tune.collector.formatting import fmt

__all__ = ["fmt_params", "fmt_value", "next_steps", "render_digest"]

TOP_SHOWN = 5
RERUN_K = 5
RERUN_SEEDS = 3


def fmt_value(value: Any) -> str:
    """Numbers as a person reads them (4 significant digits); everything else as written."""
    return "—" if value is None else fmt(value)


def fmt_params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in params.items())


def next_steps(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(command, why) pairs for what to run after this study; the same list heads both report files."""
    study = shlex.quote(str(summary.get("study")))
    top = summary.get("top_k") or []
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
    confirmable = summary.get("hpctune_study", True) and not summary.get("confirms")
    if not summary.get("confirmation") and confirmable:
        k = min(RERUN_K, len(top))
        steps.append(
            (
                f"hpctune rerun-top {study} --k {k} --seeds {RERUN_SEEDS}",
                "a single run per configuration: confirm the top trials with more seeds before picking one",
            )
        )
    recommendations = summary.get("recommendations") or {}
    if recommendations.get("changes") or recommendations.get("pruner") or recommendations.get("phases"):
        why = f"a next study with the {len(recommendations.get('changes') or [])} recommended change(s)"
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


def render_digest(summary: Mapping[str, Any]) -> str:
    """summary.md's text."""
    metric = str(summary.get("metric") or "value")
    counts = summary.get("counts") or {}
    budget = summary.get("budget") or {}
    analysis = summary.get("analysis") or {}
    lines = [f"# Study `{summary.get('study')}`: {metric} ({summary.get('direction')})", ""]
    lines.append(
        f"{budget.get('finished', '?')}/{budget.get('trials', '?')} trials finished: "
        + ", ".join(f"{state} {counts.get(state, 0)}" for state in ("COMPLETE", "PRUNED", "FAIL", "RUNNING"))
        + "."
    )
    pruning = summary.get("pruning") or {}
    if counts.get("PRUNED"):
        lines.append(
            f"Pruning saved {pruning.get('saved_fraction', 0):.0%} of the epochs "
            f"({pruning.get('epochs_spent')} of {pruning.get('epochs_if_unpruned')} run)."
        )
    lines.append("")

    best = summary.get("best")
    if best is None:
        lines += ["**No completed trial yet.**", ""]
    else:
        at = f" (best epoch {best['best_epoch']})" if best.get("best_epoch") is not None else ""
        lines.append(
            f"**Best:** trial {best['trial']}, {metric} **{fmt_value(best['value'])}**{at}: "
            f"{_md(fmt_params(best.get('params') or {}))}"
        )
        baseline = summary.get("baseline")
        if baseline is not None:
            shown = (
                fmt_value(baseline["value"]) if baseline.get("value") is not None else baseline.get("state")
            )
            lines.append(f"Baseline: trial {baseline['trial']}, {metric} {shown}.")
        lines.append("")
        top = (summary.get("top_k") or [])[:TOP_SHOWN]
        names = list(dict.fromkeys(p for t in top for p in t.get("params") or {}))
        lines += [f"## Top {len(top)}", ""]
        lines += _table(
            ["rank", "trial", metric, "epochs", *names],
            [
                [
                    rank,
                    t["trial"],
                    t["value"],
                    t.get("epochs"),
                    *[(t.get("params") or {}).get(n) for n in names],
                ]
                for rank, t in enumerate(top, start=1)
            ],
        )
        lines.append("")

    importance = analysis.get("importance") or {}
    if importance.get("overall"):
        ranked = sorted(importance["overall"].items(), key=lambda kv: -float(kv[1]))
        lines += [
            f"## Importance ({importance.get('evaluator')}, {importance.get('n_trials')} trials)",
            "",
            " · ".join(f"{name} {float(share):.2f}" for name, share in ranked),
            "",
        ]
    elif importance.get("skipped"):
        lines += ["## Importance", "", f"Not computed: {importance['skipped']}.", ""]

    lines += ["## Warnings", ""]
    warnings = analysis.get("warnings") or []
    if "analysis" not in summary:
        lines.append("No analysis in this summary.")
    elif not warnings:
        lines.append("None.")
    for w in warnings:
        lines.append(f"- **{w.get('code')}**: {_md(w.get('message'))}")
        if w.get("action"):
            lines.append(f"  - *Do:* {_md(w['action'])}")
    lines.append("")

    confirmation = summary.get("confirmation")
    if confirmation:
        lines += [f"## Confirmation ({confirmation.get('seeds')} seeds)", ""]
        lines += _table(
            ["trial", "single run", "mean", "sd", "n", "rank single", "rank mean"],
            [
                [
                    c.get("source_trial"),
                    c.get("single_value"),
                    c.get("mean"),
                    c.get("sd"),
                    c.get("n"),
                    c.get("rank_single"),
                    c.get("rank_mean"),
                ]
                for c in confirmation.get("configs") or []
            ],
        )
        lines.append("")
        verdict = f"Pick: trial {confirmation.get('pick')} (best mean)."
        if confirmation.get("single_winner_not_mean_winner"):
            verdict += " The single-run winner is not the best on average."
        lines += [verdict, ""]

    recommendations = summary.get("recommendations") or {}
    if recommendations.get("changes") or recommendations.get("notes"):
        lines += ["## Recommended changes", ""]
        for change in recommendations.get("changes") or []:
            lines.append(f"- {change.get('kind')} `{change.get('param')}`: {_md(change.get('why'))}")
        for note in recommendations.get("notes") or []:
            lines.append(f"- {_md(note)}")
        lines.append("")

    lines += ["## Next step", ""]
    for command, why in next_steps(summary):
        lines.append(f"- `{command}`: {why}")
    return "\n".join(lines).rstrip("\n") + "\n"
