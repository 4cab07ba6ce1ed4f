"""Aggregate a study: the Optuna study (truth for states and values) joined with the per-trial JSON files
(truth for learning curves) into runs/<study>/summary.json and trials.csv.

The study decides what happened; JSON files only add detail. A damaged JSON file is listed under
``quarantined`` and its trial still appears with what the study knows, so one bad file never hides results.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import ValidationError

from hpc_tune import attrs
from hpc_tune.atomic import atomic_write_json, atomic_write_text
from hpc_tune.attrs import worker_of
from hpc_tune.collector.advice import recommend
from hpc_tune.collector.analysis import analyze
from hpc_tune.collector.analysis_model import Importance, ImportanceSkipped
from hpc_tune.collector.device_hours import device_hours, format_hours
from hpc_tune.collector.digest import next_steps
from hpc_tune.collector.formatting import fmt
from hpc_tune.collector.html import ReportFiles, write_report
from hpc_tune.collector.rerun_results import format_confirmation, load_confirmation, pooled_sd
from hpc_tune.collector.summary import (
    SCHEMA_VERSION,
    BaselineEntry,
    Budget,
    Confirmation,
    Counts,
    PhaseSummary,
    Promotion,
    Pruning,
    Quarantined,
    Summary,
    TopEntry,
    TrialRow,
    TrialsPerGpu,
)
from hpc_tune.config import Config
from hpc_tune.policy.budget import budget_state, counts_by_state
from hpc_tune.policy.ranking import best_first, ranked_trials
from hpc_tune.policy.reruns import retried_numbers
from hpc_tune.policy.shared_study import SharedStudy
from hpc_tune.policy.shared_study import load_existing_study as load_study
from hpc_tune.storage.records import LoadedTrials, now_iso, read_trials
from hpc_tune.storage.timelines import WorkerTimeline, read_timelines

__all__ = [
    "Collected",
    "collect",
    "collect_shared",
    "every_trial_failed",
    "format_table",
    "load_study",
    "summarize",
    "trials_csv",
]

TOP_K = 5


@dataclass(frozen=True)
class Collected:
    summary: Summary
    summary_path: Path
    csv_path: Path
    report: ReportFiles | None = None


def reason_of(trial: FrozenTrial, record: Mapping[str, Any] | None, retried: set[int]) -> str | None:
    reason = trial.user_attrs.get(attrs.REASON) or (record or {}).get("reason")  # the record's own key
    if reason:
        return str(reason)
    if trial.state == TrialState.PRUNED:
        return "pruned"
    if trial.state == TrialState.FAIL:
        # Failed by another worker's heartbeat check: its own worker died before it could say why.
        return "heartbeat_stale" if trial.number in retried else "unknown"
    return None


def _of_type(value: Any, kind: type | tuple[type, ...]) -> Any:
    """A record's value when it has the type hpctune writes there, else None: a hand-edited record never
    stops the summary."""
    return value if isinstance(value, kind) and not isinstance(value, bool) else None


def trial_row(trial: FrozenTrial, record: Mapping[str, Any] | None, retried: set[int]) -> TrialRow:
    record = record or {}
    epochs = record.get("epochs") or []
    duration = _of_type(record.get("duration_s"), (int, float)) or (
        trial.duration.total_seconds() if trial.duration is not None else None
    )
    worker = worker_of(trial)
    return TrialRow(
        trial=trial.number,
        state=trial.state.name,  # type: ignore[arg-type]
        value=trial.value,
        reason=reason_of(trial, record, retried),
        retried=trial.number in retried,
        retry_of=trial.system_attrs.get(attrs.FAILED_TRIAL),
        params=dict(trial.params),
        epochs=len(epochs) if epochs else len(trial.intermediate_values),
        best_epoch=_of_type((record.get("best") or {}).get("epoch"), int),
        duration_s=duration,
        host=worker.get("host"),
        array_task_id=worker.get("array_task_id"),
        baseline=bool(trial.user_attrs.get(attrs.BASELINE)),
        phase=trial.user_attrs.get(attrs.PHASE),
        promoted_from=trial.user_attrs.get(attrs.PROMOTED_FROM),
        fidelity=_of_type(record.get("fidelity"), dict),
        seed=_of_type(record.get("seed", trial.system_attrs.get(attrs.SEED)), int),
    )


def summarize(
    study: optuna.Study,
    loaded: LoadedTrials,
    *,
    budget: int | None = None,
    config: Config | None = None,
    importance: Literal["ped_anova", "fanova"] = "ped_anova",
    confirmation: Confirmation | None = None,
    trials: list[FrozenTrial] | None = None,
    timelines: Sequence[WorkerTimeline] = (),
) -> Summary:
    """The summary of a study: counts, top-k, baseline, pruning, then the analysis (importance, warnings),
    the confirmation runs when there are any, and the recommendations for the next study.

    ``config`` is the study's own config when hpctune made it (phases and the space keep their form in the
    recommendations); without it, everything comes from what Optuna recorded."""
    if trials is None:
        trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    rows = [trial_row(t, loaded.records.get(t.number), retried) for t in trials]
    row_of = {r.trial: r for r in rows}
    total = budget or int(study.user_attrs.get(attrs.TRIALS) or len(trials))
    state = budget_state(trials, total)
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    direction: Literal["maximize", "minimize"] = "maximize" if maximize else "minimize"
    # Screening values (a data subset, fewer epochs) are not comparable with full-fidelity ones: once trials
    # were promoted, the ranking is theirs (ranked_trials), and the screening ranking is reported beside it.
    top = [_top_entry(row_of[t.number]) for t in ranked_trials(trials, direction)[:TOP_K]]
    extra: dict[str, Any] = {}
    if any(r.promoted_from is not None for r in rows):
        ranked = [row_of[t.number] for t in best_first(trials, direction)]
        extra["screening_top_k"] = [_top_entry(r) for r in ranked if r.promoted_from is None][:TOP_K]
        extra["promoted"] = [
            Promotion(
                trial=r.trial,
                promoted_from=r.promoted_from,
                state=r.state,
                value=r.value,
                screening_value=row_of[r.promoted_from].value if r.promoted_from in row_of else None,
            )
            for r in rows
            if r.promoted_from is not None
        ]
    if any(r.phase is not None for r in rows):
        extra["phases"] = _phases(rows, study.user_attrs, maximize)
    # The baseline's retry carries the mark too: report the run that stands (not a re-run FAIL).
    marked = [r for r in rows if r.baseline]
    baseline = next((r for r in reversed(marked) if not r.retried), marked[-1] if marked else None)
    metric = study.user_attrs.get(attrs.METRIC)
    hours = device_hours(trials, rows, loaded.records, direction, timelines, study.user_attrs)
    # A confirmation study names the study it confirms: its summary is not confirmed again.
    confirms = study.user_attrs.get(attrs.CONFIRMS)
    analysis = analyze(
        trials,
        direction=direction,
        records=loaded.records,
        metric=metric,
        study_attrs=study.user_attrs,
        importance=importance,
        top_k=TOP_K,
        confirmation_sd=pooled_sd(confirmation),
    )
    return Summary(
        schema_version=SCHEMA_VERSION,
        study=study.study_name,
        direction=direction,
        confirms=confirms,
        # hpctune records its budget on the studies it creates; a foreign study has no config to re-run from.
        hpctune_study=attrs.TRIALS in study.user_attrs,
        metric=metric,
        generated_at=now_iso(),
        budget=Budget(trials=total, finished=state.finished, retried=len(retried)),
        counts=Counts(**counts_by_state(trials)),
        best=top[0] if top else None,
        top_k=top,
        baseline=None
        if baseline is None
        else BaselineEntry(
            trial=baseline.trial, state=baseline.state, value=baseline.value, params=baseline.params
        ),
        reasons=dict(sorted(Counter(r.reason for r in rows if r.reason).items())),
        pruning=_pruning(rows, loaded),
        **({"device_hours": hours} if hours is not None else {}),
        **_trials_per_gpu(study.user_attrs),
        **extra,
        quarantined=[Quarantined(**q) for q in loaded.quarantined],
        confirmation=confirmation,
        analysis=analysis,
        recommendations=recommend(analysis, top, confirms=confirms, config=config),
        trials=rows,
    )


def _trials_per_gpu(study_attrs: dict[str, Any]) -> dict[str, TrialsPerGpu]:
    """The recorded ``auto`` choice, for the Summary's keyword arguments; nothing without one (or a damaged
    one: a summary is never lost over it)."""
    recorded = study_attrs.get(attrs.TRIALS_PER_GPU)
    if not isinstance(recorded, dict):
        return {}
    try:
        return {"trials_per_gpu": TrialsPerGpu.model_validate(recorded)}
    except ValidationError:
        return {}


def _pruning(rows: list[TrialRow], loaded: LoadedTrials) -> Pruning:
    """What pruning saved: epochs run vs the epochs pruned trials would have run to the end.

    A trial's full length is its record's ``fidelity.epochs`` (what it was scheduled for), else the longest
    completed trial.
    """
    finished = [r for r in rows if r.state in ("COMPLETE", "PRUNED", "FAIL") and not r.retried]
    longest = max((r.epochs for r in rows if r.state == "COMPLETE"), default=0)
    spent = sum(r.epochs for r in finished)
    if_unpruned = 0
    for r in finished:
        scheduled = ((loaded.records.get(r.trial) or {}).get("fidelity") or {}).get("epochs") or longest
        if_unpruned += max(r.epochs, scheduled) if r.state == "PRUNED" else r.epochs
    pruned = sum(1 for r in finished if r.state == "PRUNED")
    return Pruning(
        pruned_fraction=round(pruned / len(finished), 4) if finished else 0.0,
        epochs_spent=spent,
        epochs_if_unpruned=if_unpruned,
        saved_fraction=round(1 - spent / if_unpruned, 4) if if_unpruned else 0.0,
    )


def _top_entry(row: TrialRow) -> TopEntry:
    return TopEntry(
        trial=row.trial,
        value=row.value,
        params=row.params,
        epochs=row.epochs,
        best_epoch=row.best_epoch,
        fidelity=row.fidelity,
        seed=row.seed,
    )


def _phases(rows: list[TrialRow], study_attrs: Mapping[str, Any], maximize: bool) -> list[PhaseSummary]:
    out = []
    for phase in sorted({r.phase for r in rows if r.phase is not None}):
        members = [r for r in rows if r.phase == phase]
        values = [r.value for r in members if r.state == "COMPLETE" and r.value is not None]
        best = (max(values) if maximize else min(values)) if values else None
        out.append(
            PhaseSummary(
                phase=phase,
                trials=len(members),
                best_value=best,
                pinned=study_attrs.get(attrs.phase_fixed(phase), {}),
            )
        )
    return out


def trials_csv(summary: Summary) -> str:
    rows = summary.trials
    param_names = sorted({p for r in rows for p in r.params})
    fields = [
        "trial",
        "state",
        "value",
        "reason",
        "retried",
        "retry_of",
        "epochs",
        "best_epoch",
        "duration_s",
        "host",
        "array_task_id",
        "baseline",
        "phase",
        "promoted_from",
        "seed",
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fields + [f"param_{p}" for p in param_names])
    for r in rows:
        writer.writerow(
            [_cell(getattr(r, f)) for f in fields] + [_cell(r.params.get(p)) for p in param_names]
        )
    return buf.getvalue()


def _cell(value: Any) -> Any:
    return "" if value is None else value


def collect(
    study: optuna.Study,
    study_dir: Path,
    *,
    budget: int | None = None,
    config: Config | None = None,
    importance: Literal["ped_anova", "fanova"] = "ped_anova",
    confirmation: Confirmation | None = None,
    report: bool = True,
) -> Collected:
    """Write summary.json and trials.csv, then the report (report.html, summary.md, plots/) beside them.

    The summary is written first: a report that cannot be drawn never costs the numbers."""
    loaded = read_trials(study_dir)
    trials = study.get_trials(deepcopy=False)
    summary = summarize(
        study,
        loaded,
        timelines=read_timelines(study_dir),
        budget=budget,
        config=config,
        importance=importance,
        confirmation=confirmation,
        trials=trials,
    )
    summary_path = study_dir / "summary.json"
    csv_path = study_dir / "trials.csv"
    atomic_write_text(csv_path, trials_csv(summary))
    atomic_write_json(summary_path, summary.model_dump(mode="json"))
    files = write_report(summary, trials, loaded.records, study_dir) if report else None
    return Collected(summary, summary_path, csv_path, files)


def collect_shared(
    shared: SharedStudy,
    study_dir: Path,
    *,
    config: Config | None = None,
    importance: Literal["ped_anova", "fanova"] = "ped_anova",
    report: bool = True,
) -> Collected:
    """``collect`` with what only the storage knows: the linked confirmation study (``rerun-top``), if any.
    Every way of collecting (the CLI, ``run --local``, the collector job, ``hpc_tune.launch``) goes here."""
    return collect(
        shared.study,
        study_dir,
        budget=config.trials if config is not None else None,
        config=config,
        importance=importance,
        confirmation=load_confirmation(shared.storage, shared.study),
        report=report,
    )


def every_trial_failed(summary: Summary) -> bool:
    """Nothing to report but failures: trials failed, none COMPLETE or PRUNED, and none still to run (a
    failed trial's retry waiting or running means the study is not over)."""
    c = summary.counts
    return c.FAIL > 0 and c.COMPLETE == c.PRUNED == c.RUNNING == c.WAITING == 0


def format_table(summary: Summary) -> str:
    """The short terminal view: counts, then the top trials with their parameters."""
    c = summary.counts
    b = summary.budget
    lines = [
        f"study {summary.study}: {b.finished}/{b.trials} finished "
        f"(COMPLETE {c.COMPLETE}, PRUNED {c.PRUNED}, FAIL {c.FAIL}, RUNNING {c.RUNNING}, "
        f"WAITING {c.WAITING}; {b.retried} retried)"
    ]
    p = summary.pruning
    if c.PRUNED:
        line = (
            f"pruning: {c.PRUNED} pruned, {p.epochs_spent} of {p.epochs_if_unpruned} epochs run "
            f"({p.saved_fraction:.0%} saved)"
        )
        # What it may have cost: pruned trials that were ahead of the eventual best at the epoch they stopped.
        ahead = summary.analysis.pruning_cost.count
        if ahead:
            line += f"; {ahead} of them were ahead of the best trial at the epoch they were stopped"
        lines.append(line)
    hours = summary.device_hours
    if hours is not None:
        lines.append(format_hours(hours))
    pack = summary.trials_per_gpu
    if pack is not None:
        lines.append(f"trials_per_gpu auto: {pack.n} worker(s) per array task ({pack.why})")
    if summary.quarantined:
        lines.append(
            f"quarantined {len(summary.quarantined)} file(s): "
            + ", ".join(q.file for q in summary.quarantined)
        )
    best = summary.best
    if not summary.top_k or best is None:
        lines.append("no completed trial yet")
        return "\n".join(lines + _advice_lines(summary))
    metric = summary.metric or "value"
    lines.append(
        f"best: trial {best.trial}, {metric} {fmt(best.value)}, "
        + ", ".join(f"{k}={fmt(v)}" for k, v in best.params.items())
    )
    base = summary.baseline
    if base is not None:
        shown = fmt(base.value) if base.value is not None else base.state
        lines.append(f"baseline: trial {base.trial}, {metric} {shown}")
    lines.append(f"top {len(summary.top_k)} by {metric} ({summary.direction}):")
    header = f"  {'rank':>4}  {'trial':>5}  {metric:>10}  {'epochs':>6}  params"
    lines.append(header)
    for rank, t in enumerate(summary.top_k, start=1):
        params = ", ".join(f"{k}={fmt(v)}" for k, v in t.params.items())
        lines.append(f"  {rank:>4}  {t.trial:>5}  {fmt(t.value):>10}  {t.epochs:>6}  {params}")
    importance = summary.analysis.importance
    if isinstance(importance, Importance) and importance.overall:
        shares = ", ".join(f"{k} {v:.2f}" for k, v in list(importance.overall.items())[:6])
        lines.append(f"importance ({importance.evaluator}, {importance.n_trials} trials): {shares}")
    elif isinstance(importance, ImportanceSkipped):
        lines.append(f"importance: not computed ({importance.skipped})")
    if summary.confirmation is not None and summary.confirmation.configs:
        lines.append(format_confirmation(summary.confirmation))
    return "\n".join(lines + _advice_lines(summary))


def _advice_lines(summary: Summary) -> list[str]:
    """Warnings with their action, then what to change: the part of the summary a user acts on."""
    lines: list[str] = []
    warnings = summary.analysis.warnings
    if warnings:
        lines.append(f"warnings ({len(warnings)}):")
        for w in warnings:
            lines.append(f"  ! {w.code}: {w.message}")
            if w.action:
                lines.append(f"    → {w.action}")
    else:
        lines.append("warnings: none")
    rec = summary.recommendations
    if rec.changes or rec.notes:
        lines.append("recommended for the next study:")
        lines.extend(f"  {c.kind} {c.param}: {c.why}" for c in rec.changes)
        lines.extend(f"  note: {n}" for n in rec.notes)
    lines.append("next:")
    lines.extend(f"  {command}  # {why}" for command, why in next_steps(summary))
    return lines
