"""runs/<study>/summary.json's schema: the ``Summary`` model IS the file (``model_dump(mode="json")``), and
docs/summary.schema.json is generated from it (scripts/gen_summary_schema.py).

Everything the collector shows (the terminal table, summary.md, report.html, ``hpctune next``) reads this
model, so a key is named once, here. ``schema_version`` changes only when the file changes shape (a key
removed, renamed or retyped); a key added is not a new version.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from hpc_tune.collector.analysis_model import Analysis
from hpc_tune.collector.model import Model, Sparse

__all__ = [
    "SCHEMA_VERSION",
    "BaselineEntry",
    "Budget",
    "Change",
    "Confirmation",
    "ConfirmedConfig",
    "Counts",
    "DeviceHours",
    "PhaseSummary",
    "Promotion",
    "PrunerChange",
    "Pruning",
    "Quarantined",
    "Recommendations",
    "StateName",
    "Summary",
    "TopEntry",
    "TrialRow",
    "TrialsPerGpu",
]

SCHEMA_VERSION = 1

StateName = Literal["RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING"]

# What a trial row, a top-k entry, the baseline and a promotion say the same way.
TrialNumber = Annotated[int, Field(description="The trial number.")]
State = Annotated[StateName, Field(description="Its state.")]
Params = Annotated[dict[str, Any], Field(description="Its parameters.")]
Epochs = Annotated[int, Field(description="Epochs it ran (recorded, else reported to Optuna).")]
BestEpoch = Annotated[int | None, Field(description="The epoch of its best value (from its record).")]
Fidelity = Annotated[
    dict[str, Any] | None, Field(description="Its record's fidelity (data fraction, epochs).")
]
Seed = Annotated[int | None, Field(description="Its seed, when the record or a re-run says.")]


class Budget(Model):
    """The budget and how much of it is used."""

    trials: int = Field(description="The budget: trials to finish (the config's `trials`).")
    finished: int = Field(description="Finished trials that use budget (a retried FAIL does not).")
    retried: int = Field(description="Trials that were re-run (retried after a failure, or continued).")


class Counts(Model):
    """Trials by state, every state counted (zeros included)."""

    RUNNING: int = Field(description="Trials running now (or whose worker died unnoticed).")
    COMPLETE: int = Field(description="Trials that finished with a value.")
    PRUNED: int = Field(description="Trials the pruner stopped.")
    FAIL: int = Field(description="Trials that failed (their reasons are in `reasons`).")
    WAITING: int = Field(description="Trials enqueued and not started (baselines, retries, re-runs).")


class TopEntry(Model):
    """A ranked trial: what ``rerun-top`` would re-run, and what the next study narrows around."""

    trial: TrialNumber
    value: float | None = Field(description="Its value of the metric.")
    params: Params
    epochs: Epochs
    best_epoch: BestEpoch
    fidelity: Fidelity
    seed: Seed


class BaselineEntry(Model):
    """The config's baseline run (its standing run, not a failure that was retried)."""

    trial: TrialNumber
    state: State
    value: float | None = Field(description="Its value, null unless COMPLETE.")
    params: Params


class Pruning(Model):
    """What pruning saved: the epochs run vs the epochs the pruned trials would have run to their end."""

    pruned_fraction: float = Field(description="Pruned / finished trials (re-run ones not counted).")
    epochs_spent: int = Field(description="Epochs the finished trials ran.")
    epochs_if_unpruned: int = Field(description="Epochs they would have run without pruning.")
    saved_fraction: float = Field(description="1 - spent / if_unpruned.")


class DeviceHours(Model):
    """What the study cost in the devices its trials held: GPU-hours, or CPU core-hours where the tasks had no
    GPU (trial-hours, one per trial and hour, for a study whose trials recorded no devices: a foreign one)."""

    unit: Literal["GPU-hours", "CPU core-hours", "trial-hours"] = Field(description="What the figures count.")
    total: float = Field(description="Every trial's hours (a running trial's until now).")
    by_state: dict[str, float] = Field(description="Hours by the trials' states (COMPLETE, PRUNED, ...).")
    lost_to_failures: float = Field(
        description="Hours of trials that failed (re-run or not), walltime hand-ons excluded."
    )
    handed_on: float = Field(
        description="Hours of trials stopped at the walltime and continued by another (from a checkpoint "
        "when the task saves one, so that only the epoch in progress is run again)."
    )
    saved_by_pruning: float = Field(
        description="Hours pruned trials would have run to their scheduled last epoch, at their own speed."
    )
    until_near_best: float | None = Field(
        description="Hours spent (by every trial, running ones too) until the best trial so far was first "
        "within 1 % of the study's best; null before any ranked trial."
    )
    estimated_trials: int = Field(
        description="Trials whose devices were not recorded (counted as one device of the unit)."
    )
    allocated: float | None = Field(
        None,
        description="Hours the workers held, each from its process's start to its exit (or its timeline's "
        "last write, for one that was killed); null without worker timelines (a foreign study).",
    )
    idle: dict[str, float] | None = Field(
        None,
        description="Of `allocated`, the hours no trial ran, by what the worker did: starting, waiting (for "
        "a trial, or lingering at the study's end), handing_on, exiting.",
    )
    idle_share: float | None = Field(None, description="Idle / allocated.")
    walltime_kills: int = Field(
        0,
        description="Trials still running when SLURM ended their task at its time limit (reason "
        "`walltime_killed`): a kind that cannot hand on loses them whole.",
    )
    killed_by_walltime: float = Field(0.0, description="Their hours (part of `lost_to_failures`).")
    admission_refusals: int = Field(
        0,
        description="Times a worker did not start a trial that its task's time left could not finish "
        "(`worker.walltime_admission`) and ended the task instead.",
    )
    saved_by_admission: float = Field(
        0.0,
        description="What those trials would have burnt before the kill at the limit: the time each task had "
        "left times its devices.",
    )


class TrialsPerGpu(Model):
    """``slurm.trials_per_gpu: auto``: how many workers per array task the first task to measure chose."""

    n: int = Field(description="Workers (trials at once) per array task.")
    why: str = Field(description="Why that many: the memory, the cap, or the throughput that stopped rising.")
    peak_memory_bytes: int | None = Field(None, description="The largest peak a measured trial took.")
    capacity_bytes: int | None = Field(None, description="The memory the workers share.")
    capacity_source: str | None = Field(None, description="Where that figure came from.")
    throughput_per_device_hour: dict[str, float] = Field(
        default_factory=dict,
        description="Finished trials per device-hour measured with each number of workers.",
    )
    task: int | None = Field(None, description="The array task that measured (its index in the request).")
    host: str | None = Field(None, description="Its node.")


class Promotion(Model):
    """A full-fidelity trial promoted from a screening trial (``fidelity.promote_top``)."""

    trial: int = Field(description="The promoted (full-fidelity) trial.")
    promoted_from: int = Field(description="The screening trial it re-runs.")
    state: State
    value: float | None = Field(description="Its full-fidelity value.")
    screening_value: float | None = Field(description="The screening trial's value.")


class PhaseSummary(Model):
    """One phase of a phased search."""

    phase: int = Field(description="1-based phase.")
    trials: int = Field(description="Trials of the phase.")
    best_value: float | None = Field(description="Its best COMPLETE value.")
    pinned: dict[str, Any] = Field(description="The values pinned for the phase when it started.")


class Quarantined(Model):
    """A trial JSON file that could not be used: its trial is shown with what the study knows."""

    file: str = Field(description="The file name under trials/.")
    why: str = Field(description="Why it was set aside.")


class TrialRow(Model):
    """One trial as trials.csv lists it: the study's truth, with its record's details."""

    trial: TrialNumber
    state: State
    value: float | None = Field(description="Its value (null unless COMPLETE, or not finite).")
    reason: str | None = Field(
        description="Why it ended so: pruned, nonfinite_loss, oom, exception:<Type>, walltime, "
        "heartbeat_stale, unknown, ...; null for a COMPLETE trial."
    )
    retried: bool = Field(description="It was re-run: its re-run stands in for it.")
    retry_of: int | None = Field(description="The first trial of the retry chain this one continues.")
    params: Params
    epochs: Epochs
    best_epoch: BestEpoch
    duration_s: float | None = Field(description="Seconds it ran.")
    host: str | None = Field(description="Where it ran.")
    array_task_id: int | None = Field(description="Its SLURM array task.")
    baseline: bool = Field(description="It is the config's baseline.")
    phase: int | None = Field(description="Its phase in a phased search.")
    promoted_from: int | None = Field(description="The screening trial it was promoted from.")
    fidelity: Fidelity
    seed: Seed


class ConfirmedConfig(Model):
    """One configuration re-run by ``rerun-top``: mean ± sd over its new seeds beside its single run."""

    source_trial: int = Field(description="The original trial confirmed.")
    params: Params
    single_value: float | None = Field(description="The original single run's value (picked: biased up).")
    mean: float | None = Field(description="The mean over the confirmation runs only.")
    sd: float | None = Field(description="Their standard deviation (two runs or more).")
    n: int = Field(description="Confirmation runs that completed.")
    values: list[float] = Field(description="Their values.")
    rank_single: int | None = Field(description="Rank by the single run (1 is best).")
    rank_mean: int | None = Field(description="Rank by the mean.")


class Confirmation(Model):
    """What ``rerun-top``'s linked study says: each confirmed configuration and the pick."""

    study: str | None = Field(description="The confirmation study's name.")
    metric: str | None = Field(description="The metric.")
    direction: Literal["maximize", "minimize"] = Field(description="Its direction.")
    seeds: int = Field(description="New seeds per configuration (the most any got).")
    configs: list[ConfirmedConfig] = Field(
        description="Best mean first; configurations that all failed last."
    )
    ranking_changed: bool = Field(description="The ranking by mean differs from the single-run ranking.")
    pick: int | None = Field(description="The source trial with the best mean.")
    single_winner_not_mean_winner: bool = Field(description="The single-run winner was noise.")


class Change(Sparse):
    """One change the next study makes to the space, with its reason."""

    renamed = {"from_": "from"}

    param: str = Field(description="The parameter.")
    kind: Literal["widen", "narrow", "freeze"] = Field(
        description="`widen` a range whose best sits at an edge, `narrow` an important one around the top-k, "
        "`freeze` a negligible one at the best value."
    )
    why: str = Field(description="The reason, with its numbers.")
    from_: Any = Field(
        None, alias="from", description="The previous bounds or choices (absent for `freeze`)."
    )
    to: Any = Field(description="The new bounds, choices, or the frozen value.")


class PrunerChange(Sparse):
    """The next study's pruner settings: one of these keys, merged into the config's ``pruner``."""

    type: Literal["none"] | None = Field(None, description="`none`: pruning switched off.")
    n_warmup_steps: int | None = Field(None, description="The raised warm-up (median, percentile pruners).")
    min_resource: int | None = Field(None, description="The raised minimum resource (hyperband, sh).")


class Recommendations(Model):
    """What to search next (``hpctune next`` writes it as a config)."""

    space: dict[str, dict[str, Any]] = Field(
        description="The next study's space, each entry as written under `space:` in hpctune.yaml."
    )
    changes: list[Change] = Field(description="What changed in the space, and why.")
    phases: list[list[str]] | None = Field(description="Phases reordered by importance; null if unchanged.")
    baseline: dict[str, Any] | None = Field(
        description="The baseline completed for reordered phases; null if unchanged."
    )
    pruner: PrunerChange | None = Field(description="The pruner change; null if none.")
    notes: list[str] = Field(description="What else to know before the next study.")


class Summary(Sparse):
    """runs/<study>/summary.json: a study collected (``hpctune collect``)."""

    schema_version: int = Field(
        description="This file's shape; changes only when a key is removed or retyped."
    )
    study: str = Field(description="The study's name.")
    direction: Literal["maximize", "minimize"] = Field(description="The direction of the metric.")
    confirms: str | None = Field(description="On a `rerun-top` study: the study it confirms.")
    hpctune_study: bool = Field(
        description="hpctune created the study (it records its budget); a foreign study has no config to "
        "re-run from."
    )
    metric: str | None = Field(description="The metric the values are (null for a foreign study).")
    generated_at: str = Field(description="When it was collected (UTC, ISO 8601).")
    budget: Budget = Field(description="The budget and how much of it is used.")
    counts: Counts = Field(description="Trials by state.")
    best: TopEntry | None = Field(description="The best trial (the first of `top_k`); null before any.")
    top_k: list[TopEntry] = Field(
        description="The best 5 trials; once trials were promoted from screening, only promoted ones rank."
    )
    baseline: BaselineEntry | None = Field(description="The config's baseline, if it has one.")
    reasons: dict[str, int] = Field(description="Why trials ended (see `trials[].reason`) -> how many.")
    pruning: Pruning = Field(description="What pruning saved.")
    device_hours: DeviceHours | None = Field(
        None, description="GPU-hours (CPU core-hours) by state, lost, saved; absent before any trial started."
    )
    trials_per_gpu: TrialsPerGpu | None = Field(
        None, description="With `slurm.trials_per_gpu: auto` only: the workers per task chosen, and why."
    )
    screening_top_k: list[TopEntry] | None = Field(
        None, description="With promotions only: the best 5 screening trials (on the screening fidelity)."
    )
    promoted: list[Promotion] | None = Field(None, description="With promotions only: every promoted trial.")
    phases: list[PhaseSummary] | None = Field(None, description="In a phased search only: each phase.")
    quarantined: list[Quarantined] = Field(description="Trial JSON files that could not be used.")
    confirmation: Confirmation | None = Field(description="The `rerun-top` results, once there are any.")
    analysis: Analysis = Field(description="Ranges, importance, warnings, rank correlation, pruning cost.")
    recommendations: Recommendations = Field(description="What to change for the next study.")
    trials: list[TrialRow] = Field(description="Every trial, by number (trials.csv's rows).")
