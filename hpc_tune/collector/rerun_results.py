"""What a confirmation study says: each confirmed configuration's mean ± sd over its new seeds, beside the
single-seed value it was picked for.

The mean is over the confirmation runs only: the single value is the one the configuration was selected
for, so it is biased upwards (the winner's curse) and would pull the mean with it. The pick is the best
mean; ``single_winner_not_mean_winner`` says when the single-seed winner was noise.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from hpc_tune import attrs
from hpc_tune.collector.formatting import fmt
from hpc_tune.collector.summary import Confirmation, ConfirmedConfig
from hpc_tune.errors import StudyNotFoundError
from hpc_tune.policy.ranking import has_value
from hpc_tune.policy.reruns import seed_of
from hpc_tune.policy.shared_study import load_existing_study
from hpc_tune.storage.url import StorageSpec

__all__ = ["format_confirmation", "load_confirmation", "pooled_sd", "summarize_confirmation"]


def _ranks(values: dict[int, float | None], maximize: bool) -> dict[int, int | None]:
    """1 for the best; None where there is no value. Equal values are ordered by trial number."""
    known = sorted(
        (number for number, v in values.items() if v is not None),
        key=lambda n: (-values[n] if maximize else values[n], n),  # type: ignore[operator]
    )
    ranks: dict[int, int | None] = {n: None for n in values}
    ranks.update({n: i for i, n in enumerate(known, start=1)})
    return ranks


def summarize_confirmation(
    original_trials: list[FrozenTrial],
    confirm_trials: list[FrozenTrial],
    direction: str,
    metric: str | None = None,
    *,
    study: str | None = None,
) -> Confirmation:
    """``summary.confirmation``: one entry per confirmed source trial, best mean first (configurations
    whose runs all failed last), and the verdict."""
    maximize = direction == "maximize"
    by_number = {t.number: t for t in original_trials}
    values: dict[int, list[float]] = {}
    seeds: dict[int, set[int]] = {}
    for t in sorted(confirm_trials, key=lambda t: t.number):
        if attrs.CONFIRMS_TRIAL not in t.user_attrs:
            continue
        source = int(t.user_attrs[attrs.CONFIRMS_TRIAL])
        values.setdefault(source, [])
        seeds.setdefault(source, set()).add(seed_of(t, 0))
        if has_value(t):
            values[source].append(float(t.value))  # type: ignore[arg-type]
    single = {
        n: (float(by_number[n].value) if n in by_number and has_value(by_number[n]) else None)  # type: ignore[arg-type]
        for n in values
    }
    means = {n: (statistics.fmean(v) if v else None) for n, v in values.items()}
    rank_single = _ranks(single, maximize)
    rank_mean = _ranks(means, maximize)
    configs = [
        ConfirmedConfig(
            source_trial=n,
            params=dict(by_number[n].params) if n in by_number else {},
            single_value=single[n],
            mean=means[n],
            sd=statistics.stdev(values[n]) if len(values[n]) >= 2 else None,
            n=len(values[n]),
            values=values[n],
            rank_single=rank_single[n],
            rank_mean=rank_mean[n],
        )
        for n in values
    ]
    last = len(configs) + 1
    configs.sort(key=lambda c: (c.rank_mean or last, c.rank_single or last, c.source_trial))
    both = [c for c in configs if c.rank_single is not None and c.rank_mean is not None]
    by_single = [c.source_trial for c in sorted(both, key=lambda c: c.rank_single)]  # type: ignore[arg-type,return-value]
    by_mean = [c.source_trial for c in sorted(both, key=lambda c: c.rank_mean)]  # type: ignore[arg-type,return-value]
    pick = next((c.source_trial for c in configs if c.rank_mean == 1), None)
    single_winner = next((n for n, r in rank_single.items() if r == 1), None)
    return Confirmation(
        study=study,
        metric=metric,
        direction="maximize" if maximize else "minimize",
        seeds=max((len(s) for s in seeds.values()), default=0),
        configs=configs,
        ranking_changed=by_single != by_mean,
        pick=pick,
        single_winner_not_mean_winner=pick is not None
        and single_winner is not None
        and pick != single_winner,
    )


def pooled_sd(confirmation: Confirmation | None) -> float | None:
    """The seed-to-seed standard deviation pooled over the configurations (each weighted by its degrees of
    freedom): the noise floor against which differences between configurations are judged. None without
    a confirmation or without a configuration run with two seeds or more."""
    if confirmation is None:
        return None
    dof = sum(c.n - 1 for c in confirmation.configs if c.n >= 2)
    if dof == 0:
        return None
    squares = sum((c.n - 1) * c.sd**2 for c in confirmation.configs if c.n >= 2 and c.sd is not None)
    return math.sqrt(squares / dof)


def load_confirmation(storage: BaseStorage, original: optuna.Study) -> Confirmation | None:
    """The confirmation of ``original`` (opened on ``storage``), or None when it has none (yet).

    The linked study is on the same database; with the embedded store it has a journal of its own, as
    every study does, which the original names (rerun-top records it).
    """
    name = original.user_attrs.get(attrs.CONFIRMATION_STUDY)
    if not name:
        return None
    confirm = _linked_study(storage, str(name), original.user_attrs.get(attrs.CONFIRMATION_JOURNAL))
    if confirm is None:
        return None
    direction = "maximize" if original.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
    return summarize_confirmation(
        original.get_trials(deepcopy=False),
        confirm.get_trials(deepcopy=False),
        direction,
        original.user_attrs.get(attrs.METRIC),
        study=str(name),
    )


def _linked_study(storage: BaseStorage, name: str, journal: Any) -> optuna.Study | None:
    try:
        storage.get_study_id_from_name(name)
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        pass
    if not journal or not Path(str(journal)).is_file():
        return None  # deleted or moved with its results folder: the original's summary stands alone
    try:
        path = Path(str(journal))
        return load_existing_study(
            StorageSpec(url=None, journal_path=path, study_dir=path.parent), name
        ).study
    except StudyNotFoundError:
        return None


def _fmt(value: float | None) -> str:
    """A number of the table, ``-`` where there is none (the report's tables write an em dash there)."""
    return "-" if value is None else fmt(value)


def format_confirmation(confirmation: Confirmation) -> str:
    """The terminal view: one line per configuration, mean ± sd beside the single-seed value."""
    metric = confirmation.metric or "value"
    lines = [
        f"confirmation {confirmation.study}: {len(confirmation.configs)} configuration(s) x "
        f"{confirmation.seeds} new seed(s), {metric} ({confirmation.direction})"
    ]
    lines.append(f"  {'mean rank':>9}  {'trial':>5}  {'single':>8}  {'mean ± sd':>19}  {'n':>3}  params")
    for c in confirmation.configs:
        spread = f"{_fmt(c.mean)} ± {_fmt(c.sd)}"
        params = ", ".join(f"{k}={fmt(v)}" for k, v in c.params.items())
        rank = "-" if c.rank_mean is None else str(c.rank_mean)
        lines.append(
            f"  {rank:>9}  {c.source_trial:>5}  {_fmt(c.single_value):>8}  {spread:>19}  {c.n:>3}  {params}"
        )
    pick = confirmation.pick
    if pick is None:
        lines.append("pick: none yet (no confirmation run completed)")
    elif confirmation.single_winner_not_mean_winner:
        single = next(c for c in confirmation.configs if c.rank_single == 1)
        lines.append(
            f"pick: trial {pick} (best mean); the single-seed winner, trial {single.source_trial}, "
            f"ranks {single.rank_mean or '-'} by mean"
        )
    else:
        also = any(c.source_trial == pick and c.rank_single == 1 for c in confirmation.configs)
        lines.append(f"pick: trial {pick} (best mean{', also the single-seed winner' if also else ''})")
    return "\n".join(lines)
