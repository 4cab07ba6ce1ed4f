"""``hpctune next``: the next study's hpctune.yaml, made from this study's own file with the collector's
recommendations (collector/advice.py) applied and each change said at the top.

The user's file is edited, not rewritten (collector/yaml_edit.py): only the keys a recommendation changes get
new values, so the comments that explain the user's choices, the key order and the layout of everything
untouched survive. The result is read back as ``load_config`` reads it (PyYAML), so the file written always
loads. Without a file (a study hpctune did not create), a minimal one is written with PyYAML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import yaml
from ruamel.yaml import YAMLError
from ruamel.yaml.comments import CommentedMap

from hpc_tune.collector import yaml_edit
from hpc_tune.collector.collect import summarize
from hpc_tune.collector.summary import Change, Recommendations, Summary
from hpc_tune.config import parse_config
from hpc_tune.policy.locate import StudyTarget
from hpc_tune.storage.records import read_trials

__all__ = ["NextStudy", "next_study", "next_study_name", "next_yaml"]

# The header lines ``next`` writes: a file made by ``next`` and given to ``next`` again gets a new header
# instead of two.
_OUR_HEADER = re.compile(r"# (Made by `hpctune next |widen |narrow |freeze |note: |task: hpctune did not )")


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
    raw = path.read_text(encoding="utf-8") if path is not None else None
    recommendations = summary.recommendations
    return NextStudy(next_yaml(summary, recommendations, raw, source=source), list(recommendations.changes))


def next_study_name(name: str) -> str:
    """``digits`` → ``digits-2`` → ``digits-3``: a new study, so the old one's trials are not mixed in."""
    match = re.fullmatch(r"(.*)-(\d+)", name)
    if match:
        return f"{match.group(1)}-{int(match.group(2)) + 1}"
    return f"{name}-2"


def next_yaml(
    summary: Summary,
    recommendations: Recommendations,
    raw: str | None = None,
    *,
    source: str | None = None,
) -> str:
    """The next study's hpctune.yaml text, headed by what changed and why. ``raw`` is the study's own
    hpctune.yaml as written; the result is validated like any config, so the file it writes always loads
    (a study hpctune did not create, without ``raw``, needs its ``task:`` first)."""
    header = [
        f"# Made by `hpctune next {summary.study}` on {date.today().isoformat()}"
        + (f" from {source}" if source else "")
        + "."
    ]
    header += [f"# {change.kind} {change.param}: {change.why}" for change in recommendations.changes]
    header += [f"# note: {note}" for note in recommendations.notes]
    if raw is None:
        header.append(
            "# task: hpctune did not create this study; set task: to your objective or command first"
        )
        body = _dump_plain(_fresh_config(summary, recommendations))
    else:
        body = _edited(raw, summary, recommendations)
        parse_config(yaml.safe_load(body), None)
    return "\n".join(header) + "\n" + body


def _fresh_config(summary: Summary, recommendations: Recommendations) -> dict[str, Any]:
    """For a study hpctune did not create: a minimal file whose ``task:`` the user fills in."""
    doc: dict[str, Any] = {
        "study": next_study_name(summary.study),
        "task": "REPLACE_ME.py",
        "direction": summary.direction,
    }
    if summary.metric:
        doc["metric"] = summary.metric
    doc["trials"] = int(summary.budget.trials or 20)
    longest = max((t.epochs for t in summary.top_k), default=0)
    if longest:
        doc["epochs"] = int(longest)
    return _with_recommendations(doc, recommendations)


def _with_recommendations(doc: dict[str, Any], recommendations: Recommendations) -> dict[str, Any]:
    """``doc`` (plain YAML values) with the space, phases, baseline and pruner the recommendations set."""
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


def _dump_plain(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(
        dict(doc), sort_keys=False, allow_unicode=True, default_flow_style=None, width=yaml_edit.WIDTH
    )


# ------------------------------------------------------------------------------------ the user's own file
def _edited(raw: str, summary: Summary, recommendations: Recommendations) -> str:
    """``raw`` with the next study's name and the recommendations applied in place."""
    text = _without_our_header(raw)
    try:
        doc, rt = yaml_edit.load(text)
    except YAMLError:
        doc = None
    if not isinstance(doc, CommentedMap):
        # YAML that PyYAML reads (the config loaded) but ruamel does not: rewritten, without its comments.
        plain = dict(yaml.safe_load(raw) or {})
        plain["study"] = next_study_name(summary.study)
        return _dump_plain(_with_recommendations(plain, recommendations))
    yaml_edit.put(doc, "study", next_study_name(summary.study))
    _apply_space(doc, recommendations)
    if recommendations.phases:
        yaml_edit.put(doc, "phases", yaml_edit.flow(recommendations.phases))
    if recommendations.baseline:
        _merge(doc, "baseline", recommendations.baseline)
    if recommendations.pruner is not None:
        _merge(doc, "pruner", recommendations.pruner.model_dump())
    return yaml_edit.dump(doc, rt)


def _apply_space(doc: CommentedMap, recommendations: Recommendations) -> None:
    """Only the parameters a change names get new values; every other entry stays as the user wrote it."""
    space = doc.get("space")
    if not isinstance(space, CommentedMap):
        # No space in the file (a study whose objective defines its own): the one Optuna recorded.
        yaml_edit.put(doc, "space", yaml_edit.flow({n: _plain(s) for n, s in recommendations.space.items()}))
        return
    for name in dict.fromkeys(c.param for c in recommendations.changes):
        spec = _plain(recommendations.space[name])
        entry = space.get(name)
        if not isinstance(entry, CommentedMap):
            yaml_edit.put(space, name, yaml_edit.flow(spec))
            continue
        if entry.get("type") != spec.get("type"):
            # A number frozen at one value becomes a categorical: its bounds and log go.
            for key in [k for k in entry if k not in spec]:
                yaml_edit.drop(entry, key)
        for key, value in spec.items():
            if entry.get(key) != value:
                yaml_edit.put(entry, key, yaml_edit.flow(value))


def _merge(doc: CommentedMap, key: str, values: Mapping[str, Any]) -> None:
    """``values`` into the mapping under ``key``, keeping its other entries and their comments."""
    found = doc.get(key)
    if isinstance(found, CommentedMap):
        for name, value in values.items():
            yaml_edit.put(found, name, yaml_edit.flow(value))
    else:
        yaml_edit.put(doc, key, yaml_edit.flow(dict(values)))


def _without_our_header(text: str) -> str:
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].startswith("# Made by `hpctune next "):
        return text
    end = 0
    while end < len(lines) and _OUR_HEADER.match(lines[end]):
        end += 1
    return "".join(lines[end:])
