"""``hpctune next``: the next study's hpctune.yaml, made from this study's own file with the collector's
recommendations (collector/advice.py) applied and each change said at the top.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import yaml

from hpc_tune.collector.collect import summarize
from hpc_tune.collector.summary import Change, Recommendations, Summary
from hpc_tune.config import parse_config
from hpc_tune.policy.locate import StudyTarget
from hpc_tune.storage.records import read_trials

__all__ = ["NextStudy", "next_config", "next_study", "next_study_name", "next_yaml"]


@dataclass(frozen=True)
class NextStudy:
    """The next study's YAML text and the changes it makes (each with its reason)."""

    text: str
    changes: list[Change]


def next_study(
    target: StudyTarget,
    *,
    importance: Literal["ped_anova", "fanova"] = "ped_anova",
    source: str | None = None,
) -> NextStudy:
    """Summarize the study, then write its next study from its own config file when it has one (``source``
    is how the header names that file)."""
    summary = summarize(
        target.opened.study,
        read_trials(target.study_dir),
        budget=target.budget,
        config=target.config,
        importance=importance,
    )
    path = target.loaded.path if target.loaded is not None else None
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) if path is not None else None
    recommendations = summary.recommendations
    return NextStudy(next_yaml(summary, recommendations, raw, source=source), list(recommendations.changes))


def next_study_name(name: str) -> str:
    """``digits`` → ``digits-2`` → ``digits-3``: a new study, so the old one's trials are not mixed in."""
    match = re.fullmatch(r"(.*)-(\d+)", name)
    if match:
        return f"{match.group(1)}-{int(match.group(2)) + 1}"
    return f"{name}-2"


def next_config(
    summary: Summary, recommendations: Recommendations, raw: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The next study's YAML mapping: the user's own file (``raw``, as written) with the changes applied;
    for a study hpctune did not create, a minimal file whose ``task:`` the user fills in."""
    doc: dict[str, Any] = dict(raw) if raw is not None else {}
    doc["study"] = next_study_name(summary.study)
    if raw is None:
        doc["task"] = "REPLACE_ME.py"
        doc["direction"] = summary.direction
        if summary.metric:
            doc["metric"] = summary.metric
        doc["trials"] = int(summary.budget.trials or 20)
        longest = max((t.epochs for t in summary.top_k), default=0)
        if longest:
            doc["epochs"] = int(longest)
    doc["space"] = {name: _plain(spec) for name, spec in recommendations.space.items()}
    if recommendations.phases:
        doc["phases"] = recommendations.phases
    if recommendations.baseline:
        doc["baseline"] = recommendations.baseline
    if recommendations.pruner is not None:
        doc["pruner"] = {**dict(doc.get("pruner") or {}), **recommendations.pruner.model_dump()}
    return doc


def _plain(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.items()}


def next_yaml(
    summary: Summary,
    recommendations: Recommendations,
    raw: Mapping[str, Any] | None = None,
    *,
    source: str | None = None,
) -> str:
    """The next study's hpctune.yaml text, headed by what changed and why; validated like any config, so the
    file it writes always loads (a study hpctune did not create needs its ``task:`` first)."""
    doc = next_config(summary, recommendations, raw)
    if raw is not None:
        parse_config(doc, None)
    header = [
        f"# Made by `hpctune next {summary.study}` on {date.today().isoformat()}"
        + (f" from {source}" if source else "")
        + "."
    ]
    for change in recommendations.changes:
        header.append(f"# {change.kind} {change.param}: {change.why}")
    for note in recommendations.notes:
        header.append(f"# note: {note}")
    if raw is None:
        header.append(
            "# task: hpctune did not create this study; set task: to your objective or command first"
        )
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=None, width=110)
    return "\n".join(header) + "\n" + body
