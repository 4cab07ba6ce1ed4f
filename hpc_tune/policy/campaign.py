"""What the next trial of a study should be: budget, phases, and low-fidelity screening with promotion.

Field notes behind it: short, cheap trials mislead (F1 0.52 at epoch 20 vs 0.84 at epoch 83), so a
screening pass on a data subset is only useful when its top-k are re-run at full fidelity; and tuning a few
parameters at a time (phases) makes each trial count when the budget is small. A pure function of the
study's trials, so that every worker reaches the same decision under the study lock, and tests need no
storage.

Rules (docs/concepts.md):
- Budget: ``trials`` counted trials (retried FAILs excluded); with screening, ``promote_top`` more at full
  fidelity.
- Phases: the budget is split evenly (remainder to the last phase). Phase k samples its own parameters; those
  of earlier phases are pinned to the best completed trial so far, those of later phases to ``baseline``;
  parameters listed in no phase are sampled in every phase. Phase k starts when every trial of the earlier
  phases has finished (workers wait meanwhile); its pinned values are then stored in the study so every
  worker uses the same ones.
- Screening: ``trials`` run at ``fidelity.data_fraction`` (and ``fidelity.epochs``). When all of them are
  finished, the ``promote_top`` best are enqueued once at full fidelity (all data, ``epochs``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs
from hpc_tune.config import Config
from hpc_tune.config.space import iter_grid
from hpc_tune.policy.budget import FINISHED, counted_trials
from hpc_tune.policy.ranking import best_first, is_promoted


@dataclass(frozen=True)
class Decision:
    kind: Literal["ask", "wait", "done"]
    phase: int | None = None
    fixed: dict[str, Any] = field(default_factory=dict)
    study_attrs: dict[str, Any] = field(default_factory=dict)
    enqueue: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)


def phase_budgets(config: Config) -> list[int]:
    assert config.phases
    n = len(config.phases)
    share = config.trials // n
    return [share] * (n - 1) + [config.trials - share * (n - 1)]


def decide(config: Config, trials: list[FrozenTrial], study_attrs: Mapping[str, Any]) -> Decision:
    counted = counted_trials(trials)
    waiting = any(t.state == TrialState.WAITING for t in trials)
    if config.fidelity is not None and config.fidelity.promote_top:
        return _decide_screening(config, counted, waiting, study_attrs)
    if not waiting and len(counted) >= config.trials:
        return Decision("done")
    if config.sampler.type == "grid" and not config.phases:
        return _decide_grid(config, trials, waiting)
    if not config.phases:
        return Decision("ask")  # a waiting trial (retry, baseline) already holds its budget
    if waiting:
        # A waiting trial (a retry, the baseline) has its parameters already; it is already counted, so its
        # phase is that of the position it took. Nothing is pinned for it.
        return Decision("ask", phase=_phase_at(config, len(counted) - 1) + 1)
    return _decide_phase(config, counted, study_attrs)


def _decide_grid(config: Config, trials: list[FrozenTrial], waiting: bool) -> Decision:
    """Exactly-once grids: the next grid point no trial of the study holds yet, or done when none is left.

    Optuna's GridSampler shared by workers evaluated duplicates (3-5 among 4 workers) and, once the grid is
    used up, calls ``study.stop()``, which ask/tell workers cannot take. Under the study lock this is exact.
    """
    if waiting:
        return Decision("ask")  # a retry or the baseline holds its own parameters
    names = list(config.space)
    # An objective's trial holds its point as pinned values until the objective asks for them (and keeps
    # them pinned if it fails first): both count as taken.
    held = ({**t.system_attrs.get(attrs.FIXED_PARAMS, {}), **t.params} for t in trials)
    taken = {tuple(_grid_key(point.get(n)) for n in names) for point in held}
    for point in iter_grid(config.space):
        if tuple(_grid_key(point[n]) for n in names) not in taken:
            return Decision("ask", fixed=point)
    return Decision("done")


def _grid_key(value: Any) -> Any:
    return round(value, 9) if isinstance(value, float) else value


def _phase_at(config: Config, position: int) -> int:
    """0-based phase of the trial at this position of the budget."""
    budgets = phase_budgets(config)
    phase = 0
    while phase < len(budgets) - 1 and position >= sum(budgets[: phase + 1]):
        phase += 1
    return phase


def _decide_phase(config: Config, counted: list[FrozenTrial], study_attrs: Mapping[str, Any]) -> Decision:
    phase = _phase_at(config, len(counted))
    key = attrs.phase_fixed(phase + 1)
    if key in study_attrs:
        return Decision("ask", phase=phase + 1, fixed=dict(study_attrs[key]))
    if phase > 0 and any(t.state not in FINISHED for t in counted):
        # The pins come from the best trial of the earlier phases: wait until every one of them is known,
        # or a running trial that would have been the best is ignored (seen in a 2-worker test run).
        return Decision("wait")
    ranked = best_first(counted, config.direction)
    fixed = pinned_for_phase(config, phase, ranked[0] if ranked else None)
    return Decision("ask", phase=phase + 1, fixed=fixed, study_attrs={key: fixed})


def pinned_for_phase(config: Config, phase: int, best: FrozenTrial | None) -> dict[str, Any]:
    """Earlier phases' parameters from the best trial so far, later phases' from the baseline."""
    assert config.phases
    fixed: dict[str, Any] = {}
    baseline = config.baseline or {}
    for index, names in enumerate(config.phases):
        if index == phase:
            continue
        for name in names:
            # An earlier phase's parameter missing from the best trial was inactive there (a conditional
            # child); a later phase's parameter without a baseline value is a conditional child too (config
            # validation): both are left to the sampler.
            if index < phase and best is not None:
                if name in best.params:
                    fixed[name] = best.params[name]
            elif name in baseline:
                fixed[name] = baseline[name]
    return fixed


def _decide_screening(
    config: Config, counted: list[FrozenTrial], waiting: bool, study_attrs: Mapping[str, Any]
) -> Decision:
    assert config.fidelity is not None and config.fidelity.promote_top
    screening = [t for t in counted if not is_promoted(t)]
    if len(screening) < config.trials:
        return Decision("ask")
    if study_attrs.get(attrs.PROMOTED_STUDY):
        return Decision("ask") if waiting else Decision("done")
    if waiting:
        return Decision("ask")  # screening retries first: promotion needs every screening result
    if any(t.state not in FINISHED for t in screening):
        return Decision("wait")
    top = best_first(screening, config.direction)[: config.fidelity.promote_top]
    return Decision(
        "ask",
        study_attrs={attrs.PROMOTED_STUDY: [t.number for t in top]},
        enqueue=[(dict(t.params), {attrs.PROMOTED_FROM: t.number}) for t in top],
    )
