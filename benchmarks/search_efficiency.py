"""Search strategies compared on replayed learning curves: which one finds a good
configuration for the fewest epochs, with 1 and with 4 workers.

Why replay: a strategy's efficiency is a distribution over repetitions, not one run, and training is what
makes a run expensive. ``benchmarks/curves/make_tables.py`` trained every configuration of a grid once per
seed with hpctune's engine; here each strategy is a real Optuna study (the sampler and pruner it really
uses, hpctune's own ``make_sampler``/``make_pruner`` and campaign rules for hpctune's strategies) whose
objective replays the recorded curve of the (configuration, seed) it drew, epoch by epoch through
``trial.report``/``should_prune``. A pruned trial therefore costs exactly the epochs it ran, and hundreds of
searches take minutes.

Definitions (the choices behind the numbers):
- The space is the table's continuous ranges (``space`` in the table: what a user would write in
  hpctune.yaml), and every sampled point is snapped to the nearest grid value (in log space for log ranges).
  Categorical grid values would hide the ordering of lr/hidden/weight_decay from TPE and make it look worse
  than it is in use.
- A trial draws one of the table's seeds (the repetition's random stream). Its observed value is the best
  epoch's metric, as hpctune's engine reports a trial's value.
- The truth of a configuration: the mean over seeds of its LAST full-training epoch (a diverged seed counts
  as chance). The last epoch, not the best, because the best of 40 noisy validation values is an optimistic
  selection, while the last is the model one would keep; with a cosine schedule they rarely differ by much.
- Cost: epochs summed over every trial of every worker, in full-data epochs (a subset epoch costs its data
  fraction; a diverged trial also pays the epoch that diverged).
- Epochs to target: the cost at which the configuration the strategy would pick if stopped now (its best
  completed trial by its own observed value) first has a truth within 0.5 % of the best configuration's (or
  the table's own share: 2 % and 1 % on the 504-configuration tables, where 0.5 % holds 1 and 4). For
  strategies that end with full training of low-fidelity winners (the trap: 1 winner; screening: top-k), the
  cost of that final training is added and the pick is the best promoted one: each moment of the search
  stands for the campaign that would have stopped screening there. Phases depend on the campaign's size (the
  budget is split in trials), so they run as a ladder of campaign sizes and the cheapest one that reaches
  the target counts. Both give campaign strategies the best size in hindsight, a slight advantage.
- Regret at a budget B: the best truth minus the truth of the pick at the last moment with cost <= B
  (phases: the final pick of the largest campaign that fits in B).
- Workers: W asynchronous workers on one study (one Optuna Study object per worker over one shared in-memory
  storage, each with its own sampler seeded by its worker index, as ``hpctune worker`` does); every tick
  each busy worker runs one epoch; a trial is told when it completes, is pruned or diverges; an idle worker
  asks at the next tick, while others are still running (so constant liar matters).

Usage: .venv/bin/python benchmarks/search_efficiency.py [--table all|digits|shapes|noisy] [--reps 20]
[--workers 1,4] [--quick]; it ends with the default's verdict against the targets (docs/strategies.md).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from hpc_tune import attrs
from hpc_tune.config import Config, PrunerConfig
from hpc_tune.policy.campaign import decide
from hpc_tune.policy.reliable_pruning import MIN_COMPLETE
from hpc_tune.policy.strategy import make_pruner, make_sampler
from hpc_tune.policy.suggest import suggest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # curve_forecast.py lives beside this script (tests import it as a module)
    sys.path.insert(0, str(HERE))
from curve_forecast import CurveForecastPruner  # noqa: E402
from partial_evidence import PartialEvidencePruner  # noqa: E402

CURVES = HERE / "curves"
OPTUNA = 2  # the index of "Optuna defaults" in strategies(): the second reference of the targets
DEFAULT = 3  # the index of hpctune's default
TOLERANCE = 0.005  # "within 0.5 % of the best configuration's quality"
STUDY = "replay"

# ---------------------------------------------------------------------------------------------------- table


@dataclass
class Table:
    """Recorded curves: ``curves[fidelity][config][seed]`` = per-epoch metric (shorter = diverged)."""

    name: str
    direction: str
    epochs: int
    short_epochs: int
    data_fraction: float
    seeds: list[int]
    chance: float
    grid: dict[str, list[Any]]
    space: dict[str, dict[str, Any]]
    params: list[dict[str, Any]]
    curves: dict[str, list[list[list[float]]]]
    tolerance: float = TOLERANCE
    truth: list[float] = field(init=False)
    best: float = field(init=False)
    _index: dict[tuple[Any, ...], int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.truth = [
            float(np.mean([c[-1] if len(c) == self.epochs else self.chance for c in seeds]))
            for seeds in self.curves["full"]
        ]
        self.best = max(self.truth) if self.maximize else min(self.truth)
        self._index = {self._key(p): i for i, p in enumerate(self.params)}

    @property
    def maximize(self) -> bool:
        return self.direction == "maximize"

    @classmethod
    def from_dict(cls, data: dict[str, Any], name: str = "table") -> Table:
        fidelities = ("full", "short", "subset")
        return cls(
            name=name,
            direction=data["direction"],
            epochs=int(data["epochs"]),
            short_epochs=int(data["short_epochs"]),
            data_fraction=float(data["data_fraction"]),
            seeds=list(data["seeds"]),
            chance=float(data["chance"]),
            grid=data["grid"],
            space=data["space"],
            params=[c["params"] for c in data["configs"]],
            curves={f: [c[f] for c in data["configs"]] for f in fidelities if f in data["configs"][0]},
            tolerance=float(data.get("tolerance", TOLERANCE)),
        )

    def _key(self, params: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(params[name] for name in self.grid)

    def snap(self, params: dict[str, Any]) -> int:
        """The grid configuration nearest to a sampled point (log distance on log ranges)."""
        snapped = {}
        for name, values in self.grid.items():
            value = params[name]
            spec = self.space.get(name, {})
            if spec.get("type") == "categorical" or isinstance(value, str | bool):
                snapped[name] = value
                continue
            scale = math.log if spec.get("log") else float
            snapped[name] = min(values, key=lambda v: abs(scale(v) - scale(value)))
        return self._index[self._key(snapped)]

    def within_target(self, config: int) -> bool:
        return abs(self.best - self.truth[config]) <= self.tolerance * abs(self.best)

    def regret(self, config: int | None) -> float:
        if config is None:
            return math.nan
        return abs(self.best - self.truth[config])

    def observed(self, curve: list[float]) -> float:
        return max(curve) if self.maximize else min(curve)

    def cost_per_epoch(self, fidelity: str) -> float:
        return self.data_fraction if fidelity == "subset" else 1.0

    def planned_epochs(self, fidelity: str) -> int:
        return self.short_epochs if fidelity == "short" else self.epochs


def load_table(path: Path) -> Table:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return Table.from_dict(json.load(handle), name=path.name.split(".")[0])


# ------------------------------------------------------------------------------------------ strategies

SamplerFactory = Callable[[int, int], optuna.samplers.BaseSampler]  # (repetition, worker index) -> sampler
PrunerFactory = Callable[[], optuna.pruners.BasePruner]


@dataclass(frozen=True)
class Strategy:
    name: str
    sampler: SamplerFactory
    pruner: PrunerFactory
    fidelity: str = "full"  # the curves its search trials see
    # Winners at low fidelity trained fully at the end: the pick is the best of them at full fidelity.
    promote_top: int | None = None
    # hpctune campaign (phases): decide() chooses each trial's pins; run as a ladder of campaign sizes.
    campaign: Config | None = None
    general: str | None = None  # the name over every table, where ``name`` has this table's values in it
    # A campaign of this many trials, as a user sets ``trials``, instead of the ladder of sizes (which is
    # charged its cheapest size in hindsight).
    campaign_size: int | None = None
    # Screening whose promotion goes on while the subset's ranking disagrees with the promoted trials' full
    # results (the best at full fidelity is among the last two promoted), up to this many promoted trials.
    promote_until_agree: int | None = None

    @property
    def label(self) -> str:
        return self.general or self.name


def table_config(table: Table, **fields: Any) -> Config:
    """An hpctune Config whose space is the table's ranges: hpctune's own defaults unless overridden."""
    return Config(study=STUDY, space=table.space, epochs=table.epochs, **fields)


def _hpctune_sampler(config: Config) -> SamplerFactory:
    def make(rep: int, worker: int) -> optuna.samplers.BaseSampler:
        seeded = config.model_copy(update={"sampler": config.sampler.model_copy(update={"seed": 1000 * rep})})
        return make_sampler(seeded, worker)

    return make


def _random(rep: int, worker: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=1000 * rep + worker)


def _optuna_tpe(rep: int, worker: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=1000 * rep + worker)  # Optuna 5's defaults


def strategies(table: Table, promote_top: int = 3) -> list[Strategy]:
    default = table_config(table)
    names = list(table.grid)
    # The learning rate and the optimizer first (they interact most), then the rest at the best of those.
    first = [n for n in ("lr", "optimizer") if n in names]
    if not first or len(first) == len(names):
        first = names[:1]
    later = [n for n in names if n not in first]
    baseline = {n: table.grid[n][len(table.grid[n]) // 2] for n in later}
    phased = table_config(table, phases=[first, later], baseline=baseline)
    no_prune = table_config(table, pruner=PrunerConfig(type="none"))
    warm = table_config(table, pruner=PrunerConfig(n_warmup_steps=max(1, table.epochs // 4)))
    hyperband = table_config(table, pruner=PrunerConfig(type="hyperband"))
    asha = table_config(table, pruner=PrunerConfig(type="sh"))
    before = table_config(table, pruner=PrunerConfig(n_warmup_steps=3))  # the default until this benchmark
    hp = _hpctune_sampler(default)
    epochs = table.epochs
    return [
        Strategy("random, no pruning", _random, optuna.pruners.NopPruner),
        Strategy("random @1/4 epochs, winner trained (trap)", _random, optuna.pruners.NopPruner, "short", 1),
        Strategy("Optuna defaults (TPE + Median)", _optuna_tpe, optuna.pruners.MedianPruner),
        Strategy("hpctune default (TPE mv+liar, Median warm-up auto)", hp, lambda: make_pruner(default)),
        Strategy("hpctune TPE, no pruning", hp, lambda: make_pruner(no_prune)),
        Strategy(
            f"hpctune TPE, Median warm-up {warm.pruner.n_warmup_steps}",
            hp,
            lambda: make_pruner(warm),
            general="hpctune TPE, Median warm-up E/4",
        ),
        Strategy("hpctune TPE, Median warm-up 3 (the old default)", hp, lambda: make_pruner(before)),
        Strategy("Hyperband + TPE (BOHB-like)", hp, lambda: make_pruner(hyperband)),
        Strategy("ASHA + TPE", hp, lambda: make_pruner(asha)),
        Strategy(
            f"screening {table.data_fraction:g} data, top-{promote_top}",
            hp,
            lambda: make_pruner(default),
            "subset",
            promote_top,
            general=f"screening on a data subset, top-{promote_top} promoted",
        ),
        Strategy(
            "hpctune TPE, learning-curve forecast (z 2)",
            hp,
            lambda: CurveForecastPruner(epochs, z=2.0),
        ),
        Strategy(
            "hpctune default + learning-curve forecast (z 2)",
            hp,
            lambda: CurveForecastPruner(epochs, z=2.0, base=make_pruner(default)),
        ),
        Strategy(
            f"phases {first} then {later}",
            _hpctune_sampler(phased),
            lambda: make_pruner(phased),
            campaign=phased,
            general="phases (lr and optimizer, then the rest)",
        ),
        *(
            Strategy(
                f"phases {first} then {later}, {size} trials",
                _hpctune_sampler(phased),
                lambda: make_pruner(phased),
                campaign=phased,
                general=f"phases, {size} trials (a campaign of fixed size)",
                campaign_size=size,
            )
            for size in (25, 50)
        ),
        *(
            Strategy(
                f"hpctune TPE, reliable epoch from partial curves too (horizon {h:g})",
                hp,
                lambda h=h: PartialEvidencePruner(epochs, horizon=h),
            )
            for h in (0.25, 0.5)
        ),
        Strategy(
            f"screening {table.data_fraction:g} data, top-{promote_top}, more while the ranking disagrees",
            hp,
            lambda: make_pruner(default),
            "subset",
            promote_top,
            general=f"screening on a data subset, top-{promote_top}, promotion until the rankings agree",
            promote_until_agree=3 * promote_top,
        ),
    ]


# ---------------------------------------------------------------------------------------------------- replay


@dataclass
class TrialRun:
    number: int
    config: int
    seed: int  # index into table.seeds
    fidelity: str
    epochs_run: int = 0
    state: str = "RUNNING"
    value: float | None = None
    curve: list[float] = field(default_factory=list, repr=False)


@dataclass(frozen=True)
class Point:
    """The search at one moment: what stopping here would cost in all, and the configuration it would pick."""

    cost: float
    config: int


@dataclass
class SearchResult:
    trials: list[TrialRun]
    points: list[Point]
    spent: float  # epochs of the search trials (promotion costs are in the points)
    max_running: int
    finished: bool  # the campaign ended by itself (phases), not by the stop rule


@dataclass
class _Worker:
    study: optuna.Study
    sampler: optuna.samplers.BaseSampler
    run: TrialRun | None = None
    trial: optuna.Trial | None = None
    done: bool = False


def _seed_index(rep: int, salt: int, number: int, n: int) -> int:
    return int(np.random.default_rng([rep, salt, number]).integers(n))


def _best_of(runs: Sequence[TrialRun], maximize: bool) -> TrialRun | None:
    done = [r for r in runs if r.state == "COMPLETE" and r.value is not None]
    if not done:
        return None
    return max(done, key=lambda r: ((r.value if maximize else -r.value), -r.number))  # type: ignore[operator]


class Replay:
    """One search of one strategy: the event loop of W workers over recorded curves."""

    def __init__(
        self, table: Table, strategy: Strategy, rep: int, workers: int, campaign: Config | None = None
    ) -> None:
        self.table, self.strategy, self.rep = table, strategy, rep
        self.campaign = campaign
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.InMemoryStorage()
        self.workers = []
        for index in range(workers):
            sampler = strategy.sampler(rep, index)
            study = optuna.create_study(
                storage=storage,
                study_name=STUDY,
                direction=table.direction,
                sampler=sampler,
                pruner=strategy.pruner(),
                load_if_exists=True,
            )
            self.workers.append(_Worker(study, sampler))
        if campaign is not None and campaign.baseline:
            self.workers[0].study.enqueue_trial(dict(campaign.baseline), user_attrs={"baseline": True})
        self.space = (campaign or table_config(table)).space
        assert self.space is not None
        self.seeds = np.random.default_rng([rep, 1])
        self.runs: list[TrialRun] = []
        self.spent = 0.0
        self.points: list[Point] = []
        self.promoted: dict[int, TrialRun] = {}  # screening trial number -> its full-fidelity run

    #  trials -----------------------------------------------------------------------------------------------
    def _start(self, worker: _Worker) -> None:
        study = worker.study
        phase = None
        if self.campaign is not None:
            decision = decide(self.campaign, study.get_trials(deepcopy=False), study.user_attrs)
            if decision.kind == "done":
                worker.done = True
                return
            if decision.kind == "wait":
                return
            for key, value in decision.study_attrs.items():
                study.set_user_attr(key, value)
            study.sampler = (
                optuna.samplers.PartialFixedSampler(decision.fixed, worker.sampler)
                if decision.fixed
                else worker.sampler
            )
            phase = decision.phase
        trial = study.ask()
        if phase is not None and attrs.PHASE not in trial.user_attrs:
            trial.set_user_attr(attrs.PHASE, phase)
        config = self.table.snap(suggest(trial, self.space))
        seed = int(self.seeds.integers(len(self.table.seeds)))
        fidelity = self.strategy.fidelity
        run = TrialRun(trial.number, config, seed, fidelity, curve=self.table.curves[fidelity][config][seed])
        self.runs.append(run)
        worker.run, worker.trial = run, trial

    def _advance(self, worker: _Worker) -> bool:
        """One epoch of the worker's trial; True when the trial was told (finished)."""
        run, trial, study = worker.run, worker.trial, worker.study
        assert run is not None and trial is not None
        run.epochs_run += 1
        epoch = run.epochs_run
        self.spent += self.table.cost_per_epoch(run.fidelity)
        planned = self.table.planned_epochs(run.fidelity)
        if epoch > len(run.curve):  # the loss went non-finite in this epoch: the engine fails the trial
            run.state = "FAIL"
            study.tell(trial, state=TrialState.FAIL)
        else:
            value = run.curve[epoch - 1]
            trial.report(value, epoch)
            if epoch == planned:
                run.state, run.value = "COMPLETE", self.table.observed(run.curve[:epoch])
                study.tell(trial, run.value)
            elif trial.should_prune():  # as hpctune: never after the last epoch
                run.state = "PRUNED"
                study.tell(trial, state=TrialState.PRUNED)
            else:
                return False
        worker.run, worker.trial = None, None
        return True

    #  the pick ---------------------------------------------------------------------------------------------
    def _promote(self, run: TrialRun) -> TrialRun:
        """A low-fidelity winner trained fully (not pruned, as hpctune's promoted trials): its seed is fixed
        per screening trial so that every moment's virtual promotion of it agrees."""
        if run.number not in self.promoted:
            seed = _seed_index(self.rep, 2, run.number, len(self.table.seeds))
            curve = self.table.curves["full"][run.config][seed]
            full = TrialRun(run.number, run.config, seed, "full", curve=curve)
            if len(curve) == self.table.epochs:
                full.epochs_run, full.state, full.value = len(curve), "COMPLETE", self.table.observed(curve)
            else:
                full.epochs_run, full.state = len(curve) + 1, "FAIL"
            self.promoted[run.number] = full
        return self.promoted[run.number]

    def _point(self) -> None:
        maximize = self.table.maximize
        k = self.strategy.promote_top
        if not k:
            best = _best_of(self.runs, maximize)
            if best is not None:
                self.points.append(Point(self.spent, best.config))
            return
        done = sorted(
            (r for r in self.runs if r.state == "COMPLETE"),
            key=lambda r: ((r.value if maximize else -r.value), -r.number),
            reverse=True,
        )  # type: ignore[operator]
        if not done:
            return
        full = [self._promote(r) for r in done[:k]]
        while self.strategy.promote_until_agree and len(full) < min(
            len(done), self.strategy.promote_until_agree
        ):
            scored = [(f.value if maximize else -f.value) if f.value is not None else -math.inf for f in full]
            if scored.index(max(scored)) < len(full) - 2:
                break  # the subset's ranking agrees with the full results at the top: promotion ends
            full.append(self._promote(done[len(full)]))
        extra = sum(f.epochs_run for f in full)
        pick = full[0] if k == 1 else _best_of(full, maximize)  # one winner is kept whatever it shows
        if pick is not None and pick.state == "COMPLETE":
            self.points.append(Point(self.spent + extra, pick.config))

    #  the loop ---------------------------------------------------------------------------------------------
    def run(self, cap: float, enough: float) -> SearchResult:
        """Until the cost reaches ``cap``, or the target was reached and the cost passed ``enough`` (nothing
        after that changes a figure), or the campaign ends."""
        max_running = 0
        hit = False
        finished = False
        while True:
            for worker in self.workers:
                if worker.run is None and not worker.done:
                    self._start(worker)
            active = [w for w in self.workers if w.run is not None]
            max_running = max(max_running, len(active))
            if not active:
                finished = all(w.done for w in self.workers)
                if not finished:  # only a campaign's "wait" leaves every worker idle, and only while running
                    raise RuntimeError("no worker can start a trial and none is running")
                break
            for worker in active:
                if self._advance(worker):
                    self._point()
                    hit = hit or (bool(self.points) and self.table.within_target(self.points[-1].config))
            if self.spent >= cap or (hit and self.spent >= enough):
                break
        return SearchResult(self.runs, self.points, self.spent, max_running, finished)


def epochs_to_target(points: Sequence[Point], table: Table) -> float:
    """The cost at the first moment the pick is within TOLERANCE of the best configuration (inf: never)."""
    for point in points:
        if table.within_target(point.config):
            return point.cost
    return math.inf


def regret_at(points: Sequence[Point], table: Table, budget: float) -> float:
    """The pick's regret at the last moment that cost at most ``budget`` (nan: no pick by then)."""
    pick = None
    for point in points:
        if point.cost <= budget:
            pick = point.config
    return table.regret(pick)


# -------------------------------------------------------------------------------------- one repetition


def phase_ladder(table: Table, cap: float) -> list[int]:
    """Campaign sizes (trials) for phases: x1.5 steps up to what the cap pays for without pruning, and beyond
    (pruning makes trials cheaper), so that the cheapest campaign reaching the target is found."""
    sizes, n = [], 4
    while n <= 2 * cap / table.epochs:
        sizes.append(n)
        n = max(n + 1, int(round(n * 1.5)))
    return sizes


def run_repetition(
    table: Table, strategy: Strategy, rep: int, workers: int, cap: float, budgets: Sequence[float]
) -> dict[str, Any]:
    """Epochs to target and regret at each budget, for one repetition."""
    enough = max(budgets)
    if strategy.campaign is None or strategy.campaign_size is not None:
        campaign = (
            None
            if strategy.campaign is None
            else strategy.campaign.model_copy(update={"trials": strategy.campaign_size})
        )
        result = Replay(table, strategy, rep, workers, campaign).run(cap, enough)
        return {
            "epochs_to_target": epochs_to_target(result.points, table),
            "regret": {b: regret_at(result.points, table, b) for b in budgets},
            "trials": len(result.trials),
            "max_running": result.max_running,
        }
    best_cost, trials, running = math.inf, 0, 0
    regret = {b: math.nan for b in budgets}
    fits: dict[float, int] = {}
    for size in phase_ladder(table, cap):
        campaign = strategy.campaign.model_copy(update={"trials": size})
        # Past the cheapest hit so far and past the budgets, a campaign can change no figure: stop it there.
        limit = min(cap, max(best_cost, enough))
        result = Replay(table, strategy, rep, workers, campaign).run(limit, enough)
        trials += len(result.trials)
        running = max(running, result.max_running)
        best_cost = min(best_cost, epochs_to_target(result.points, table))
        if result.finished and result.points:
            for b in budgets:
                if result.spent <= b and size >= fits.get(b, 0):
                    fits[b] = size
                    regret[b] = table.regret(result.points[-1].config)
    return {"epochs_to_target": best_cost, "regret": regret, "trials": trials, "max_running": running}


# ---------------------------------------------------------------------------------------------------- report


_TABLE: Table | None = None  # set before the pool forks: every search reads the same table


def _job(args: tuple[int, int, int, int, float, tuple[float, ...]]) -> tuple[int, int, dict[str, Any]]:
    index, rep, workers, promote_top, cap, budgets = args
    assert _TABLE is not None
    strategy = strategies(_TABLE, promote_top)[index]
    return index, workers, run_repetition(_TABLE, strategy, rep, workers, cap, budgets)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _rank(values: list[float], q: float) -> float:
    """Nearest-rank quantile: defined when some values are inf (never reached)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def _fmt(value: float, digits: int = 0) -> str:
    if math.isinf(value):
        return "never"
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def _ratio(value: float, reference: float) -> str:
    """value / reference; "never" reached by one side only is the clearest ratio there is, so it is said."""
    if math.isnan(value) or math.isnan(reference):
        return "-"
    if math.isinf(value) or math.isinf(reference):
        if math.isinf(value) and math.isinf(reference):
            return "="
        return "never" if math.isinf(value) else "ref. never"
    return _fmt(value / reference, 2) if reference > 0 else "-"


def median_epochs_to_target(
    results: dict[tuple[int, int], list[dict[str, Any]]], strategy: int, workers: int
) -> float:
    """The median over repetitions (never reached counts as infinitely many); nan when it did not run."""
    reps = results.get((strategy, workers))
    return _median([r["epochs_to_target"] for r in reps]) if reps else math.nan


def summarize(
    table: Table,
    results: dict[tuple[int, int], list[dict[str, Any]]],
    names: dict[int, str],
    workers: int,
    budgets: Sequence[float],
) -> list[str]:
    """Markdown rows, one per strategy; ratios are to strategy 0 (random without pruning) and, for epochs to
    target, to Optuna's defaults (strategy ``OPTUNA``) when it ran."""
    rows = []
    reference = results[(0, workers)]
    ref_ett = median_epochs_to_target(results, 0, workers)
    optuna_ett = median_epochs_to_target(results, OPTUNA, workers)
    ref_regret = {
        b: _median([r["regret"][b] for r in reference if not math.isnan(r["regret"][b])]) for b in budgets
    }
    header = (
        f"| strategy ({workers} worker{'s' if workers > 1 else ''}) | epochs to target (median) | x random "
        f"| x Optuna | never reached | "
        + " | ".join(f"regret @{b / table.epochs:g}xE (median, mean) | x random" for b in budgets)
        + " | trials run |"
    )
    rows += [header, "|" + "---|" * (header.count("|") - 1)]
    for index, name in names.items():
        reps = results[(index, workers)]
        ett = [r["epochs_to_target"] for r in reps]
        median = median_epochs_to_target(results, index, workers)
        never = sum(math.isinf(v) for v in ett) / len(ett)
        cells = [
            name,
            f"{_fmt(median)} ({_fmt(median / table.epochs, 1)}{'xE' * math.isfinite(median)}; "
            f"quartiles {_fmt(_rank(ett, 0.25))}-{_fmt(_rank(ett, 0.75))})",
            _ratio(median, ref_ett),
            _ratio(median, optuna_ett),
            f"{never:.0%}",
        ]
        for b in budgets:
            values = [r["regret"][b] for r in reps]
            finite = [v for v in values if not math.isnan(v)]
            med = _median(finite)
            ratio = (
                _fmt(med / ref_regret[b], 2)
                if ref_regret[b] > 0 and not math.isnan(med)
                else ("=" if med == ref_regret[b] else "-")
            )
            no_pick = len(values) - len(finite)
            cells.append(
                f"{_fmt(100 * med, 2)} pts, {_fmt(100 * statistics.fmean(finite), 2) if finite else '-'}"
                + (f" ({no_pick} no pick)" if no_pick else "")
            )
            cells.append(ratio)
        cells.append(_fmt(_median([r["trials"] for r in reps])))
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def tables(name: str) -> list[Path]:
    """``all``: every table shipped in benchmarks/curves/; else one name or path."""
    if name == "all":
        return sorted(CURVES.glob("*.json.gz"))
    return [Path(name) if name.endswith(".json.gz") else CURVES / f"{name}.json.gz"]


def replay_table(
    table: Table,
    chosen: list[int],
    workers_list: list[int],
    reps: int,
    promote_top: int,
    cap: float,
    budgets: tuple[float, ...],
    jobs: int,
) -> dict[tuple[int, int], list[dict[str, Any]]]:
    global _TABLE
    _TABLE = table
    work = [
        (i, rep, w, promote_top, cap, budgets) for w in workers_list for i in chosen for rep in range(reps)
    ]
    results: dict[tuple[int, int], list[dict[str, Any]]] = {(i, w): [] for i in chosen for w in workers_list}
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        for k, (index, workers, figures) in enumerate(pool.imap_unordered(_job, work), 1):
            results[(index, workers)].append(figures)
            if k % 20 == 0:
                print(
                    f"  {k}/{len(work)} searches, {time.perf_counter() - start:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"{len(work)} searches replayed in {time.perf_counter() - start:.0f} s\n")
    return results


def random_hit_rate(table: Table, draws: int = 2000) -> float:
    """The share of random draws from the table's space (snapped to its grid, as the replay does) whose
    configuration is within the target: what the first, random trials of any TPE study hit."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=table.direction, sampler=optuna.samplers.RandomSampler(seed=0))
    space = table_config(table).space
    assert space is not None
    hits = sum(table.within_target(table.snap(suggest(study.ask(), space))) for _ in range(draws))
    return hits / draws


def _median_first_hit(hit_rate: float) -> int:
    """The median trial number of the first within-target draw, when each draw hits with ``hit_rate``."""
    if not 0 < hit_rate <= 1:
        raise ValueError(f"a hit rate is in (0, 1], not {hit_rate}")
    t = 1
    while 1 - (1 - hit_rate) ** t < 0.5:
        t += 1
    return t


def search_floor(table: Table, workers: int, hit_rate: float | None = None) -> tuple[float, str]:
    """The fewest epochs, in the median, that a search needs before its pick is within the target, and why.
    Whatever it prunes or screens, a search picks a configuration it has trained fully, so one within-target
    configuration runs all its epochs.

    - 1 worker, hit rate known: the first trials of a TPE study (its startup trials) are random draws, the
      first within-target one is trial T (geometric in the hit rate), every miss before it costs at least the
      one epoch it reported before it could be pruned (on the table's cheapest data: a subset epoch costs its
      fraction), and the hit costs E. Past the random trials the sampler may aim, so at most that many misses
      are counted.
    - 1 worker, no hit rate: E.
    - W workers, each starting a trial as soon as it is free (as ``hpctune worker`` does): every worker
      trains an epoch in every round until the hit has run its E epochs, so W x E epochs, less the W - 1
      that the workers after the hit in its last round have not yet run. A search that leaves workers idle
      (waiting between phases, or counting a final training alone) is not bound by this; the campaign
      strategies of this benchmark are such searches."""
    epochs = table.epochs
    if workers > 1:
        return (
            float(workers * epochs - (workers - 1)),
            f" that keeps its {workers} workers busy (each trains in every round until a within-target trial "
            f"has run its {epochs} epochs)",
        )
    if not hit_rate:
        return float(epochs), f" (it must train a within-target configuration for all {epochs} epochs)"
    first = _median_first_hit(hit_rate)
    random_trials = table_config(table).sampler.n_startup_trials
    misses = min(first - 1, random_trials)
    cheapest = min(table.cost_per_epoch(fidelity) for fidelity in table.curves)
    epoch = "1 epoch" if cheapest == 1 else f"1 epoch ({cheapest:g} of a full one on its data subset)"
    where = (
        f"the first hit is trial {first} in the median; each miss before it"
        if first - 1 <= random_trials
        else f"none of the first {random_trials} hits in the median; each of them"
    )
    return (
        epochs + misses * cheapest,
        f" whose first trials are random draws, as TPE's are (1 draw in {1 / hit_rate:.1f} is within the "
        f"target, so {where} costs at least {epoch}, the hit {epochs})",
    )


def gated_floor(table: Table, hit_rate: float, min_complete: int = MIN_COMPLETE) -> float:
    """The fewest epochs, in the median over searches with one worker, that a strategy needs when it draws its
    first ``min_complete`` trials at random and prunes nothing until they have finished — as the default's
    ``auto`` warm-up must, to learn whether the curves can be trusted before it acts on them.

    If the first within-target draw is trial T <= ``min_complete``, every trial up to it ran fully: T full
    trainings. Otherwise ``min_complete`` trials ran fully and the within-target one must finish too: at least
    ``min_complete + 1`` full trainings, whatever the sampler does after the random ones. So the cost is at
    least min(T, min_complete + 1) full trainings, with T geometric in the hit rate (TPE's startup trials,
    10 by default, are random draws)."""
    return float(min(_median_first_hit(hit_rate), min_complete + 1) * table.epochs)


def miss_share(results: dict[tuple[int, int], list[dict[str, Any]]], strategy: int, workers: int) -> float:
    """The share of repetitions that never reached the target within the cap; nan when it did not run."""
    reps = results.get((strategy, workers))
    return sum(math.isinf(r["epochs_to_target"]) for r in reps) / len(reps) if reps else math.nan


def dominated_by(
    results: dict[tuple[int, int], list[dict[str, Any]]], strategy: int, workers: int
) -> list[int]:
    """The strategies that beat ``strategy`` on (median epochs to target, share of misses): no worse on
    both and better on one. Empty: it is on the Pareto front of what was measured."""
    mine = (median_epochs_to_target(results, strategy, workers), miss_share(results, strategy, workers))
    out = []
    for index, w in sorted(results):
        if w != workers or index == strategy:
            continue
        theirs = (median_epochs_to_target(results, index, workers), miss_share(results, index, workers))
        if theirs[0] <= mine[0] and theirs[1] <= mine[1] and theirs != mine:
            out.append(index)
    return out


def verdict(
    table: Table,
    results: dict[tuple[int, int], list[dict[str, Any]]],
    workers_list: list[int],
    hit_rate: float | None = None,
    names: dict[int, str] | None = None,
) -> list[str]:
    """The default against the targets, one line per cell (table, workers):

    - never behind Optuna's defaults: median epochs to target and share of misses both <= theirs;
    - on the Pareto front of (median epochs, share of misses) among every strategy measured in the cell;
    - >= 3x fewer epochs than random search without pruning where the cell's floor (``search_floor``) leaves
      random at least 4x above it, and never more epochs than random anywhere.

    A median counts a search that never got there as infinitely many epochs."""
    names = names or {}
    lines = []
    for workers in workers_list:
        if any((i, workers) not in results for i in (0, OPTUNA, DEFAULT)):
            continue
        ett = {i: median_epochs_to_target(results, i, workers) for i in (0, OPTUNA, DEFAULT)}
        miss = {i: miss_share(results, i, workers) for i in (0, OPTUNA, DEFAULT)}
        floor, why = search_floor(table, workers, hit_rate)  # a hit rate bounds 1 worker only
        checks: list[tuple[str, bool | None]] = []
        behind = ett[DEFAULT] <= ett[OPTUNA] and miss[DEFAULT] <= miss[OPTUNA]
        checks.append(
            (
                f"never behind Optuna's defaults (epochs {_fmt(ett[DEFAULT])} vs {_fmt(ett[OPTUNA])}, "
                f"misses {miss[DEFAULT]:.0%} vs {miss[OPTUNA]:.0%})",
                behind,
            )
        )
        beaten = dominated_by(results, DEFAULT, workers)
        front = "on the Pareto front of (epochs, misses)" + (
            ""
            if not beaten
            else " (beaten by "
            + ", ".join(
                f"{names.get(i, f'strategy {i}')}: {_fmt(median_epochs_to_target(results, i, workers))}, "
                f"{miss_share(results, i, workers):.0%}"
                for i in beaten
            )
            + ")"
        )
        checks.append((front, not beaten))
        room = ett[0] / floor if math.isfinite(ett[0]) else math.inf
        vs_random = ett[0] / ett[DEFAULT] if math.isfinite(ett[DEFAULT]) else 0.0
        shown_floor = _fmt(floor, 0 if floor.is_integer() else 1)
        if math.isinf(ett[0]):
            checks.append(
                (
                    ">= 3x fewer epochs than random (random never reached the target in the median)",
                    math.isfinite(ett[DEFAULT]),
                )
            )
        elif room >= 4:
            gain = f">= 3x fewer epochs than random ({vs_random:.2f}x; the floor allows {room:.1f}x)"
            if vs_random < 3 and workers == 1 and hit_rate:
                gated = gated_floor(table, hit_rate)
                if gated > ett[0] / 3:
                    gain += (
                        f" [waiting for {MIN_COMPLETE} finished random trials before pruning costs at least "
                        f"{_fmt(gated)} epochs here]"
                    )
            checks.append((gain, vs_random >= 3))
        else:
            checks.append(
                (
                    f">= 3x fewer than random: not asked, the floor ({shown_floor} epochs{why}) leaves "
                    f"random only {_fmt(room, 1)}x above it",
                    None,
                )
            )
        checks.append(
            (
                f"never more epochs than random ({_fmt(ett[DEFAULT])} vs {_fmt(ett[0])})",
                ett[DEFAULT] <= ett[0],
            )
        )
        failed = [text for text, ok in checks if ok is False]
        lines.append(
            f"{table.name}, {workers} worker{'s' * (workers > 1)}: "
            + ("all targets met" if not failed else f"{len(failed)} target(s) NOT met")
            + f"; floor {shown_floor} epochs; "
            + "; ".join(f"{text}: {'-' if ok is None else 'met' if ok else 'NOT met'}" for text, ok in checks)
        )
    return lines


def overview(
    measured: dict[str, tuple[Table, dict[tuple[int, int], list[dict[str, Any]]]]],
    names: dict[int, str],
    workers_list: list[int],
) -> list[str]:
    """One markdown table over every table and worker count: per strategy, the median epochs to target in
    full trainings, its ratio to random search without pruning, and the share of misses."""
    columns = [(name, w) for name in measured for w in workers_list]
    header = "| strategy | " + " | ".join(f"{name} {w}w" for name, w in columns) + " |"
    rows = [header, "|---|" + "---:|" * len(columns)]
    for index, label in names.items():
        cells = []
        for name, w in columns:
            table, results = measured[name]
            if (index, w) not in results:
                cells.append("-")
                continue
            median = median_epochs_to_target(results, index, w)
            shown = "never" if math.isinf(median) else f"{median / table.epochs:.1f}×E"
            ratio = _ratio(median, median_epochs_to_target(results, 0, w))
            cells.append(f"{shown} · {ratio} ({miss_share(results, index, w):.0%})")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--table", default="all", help="all (default), or a table in benchmarks/curves/ (name or path)"
    )
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--workers", default="1,4")
    parser.add_argument("--budgets", default="5,10,25", help="regret budgets, in full trainings (x epochs)")
    parser.add_argument("--cap", type=float, default=100, help="most a search may spend, in full trainings")
    parser.add_argument("--promote-top", type=int, default=3)
    parser.add_argument(
        "--only", default=None, help="comma-separated strategy numbers (0 = random, always run)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help=f"target: within this share of the best (default: the table's own, else {TOLERANCE})",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="3 repetitions, cap 50 full trainings")
    parser.add_argument("--json", type=Path, default=None, help="write every repetition's figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.cap = 3, 50
    workers_list = [int(w) for w in args.workers.split(",")]
    figures: dict[str, Any] = {}
    verdicts: list[str] = []
    measured: dict[str, tuple[Table, dict[tuple[int, int], list[dict[str, Any]]]]] = {}
    labels: dict[int, str] = {}
    for path in tables(args.table):
        table = load_table(path)
        if args.tolerance is not None:
            table.tolerance = args.tolerance
        budgets = tuple(float(b) * table.epochs for b in args.budgets.split(","))
        listed = strategies(table, args.promote_top)
        names = [s.name for s in listed]
        chosen = (
            sorted({0, *(int(i) for i in args.only.split(","))}) if args.only else list(range(len(names)))
        )
        near = sum(table.within_target(i) for i in range(len(table.params)))
        best = int(np.argmax(table.truth) if table.maximize else np.argmin(table.truth))
        print(
            f"## table {path.name}: {len(table.params)} configurations x {len(table.seeds)} seeds, "
            f"{table.epochs} epochs; best truth {table.best:.4f} {table.params[best]}; {near} configurations "
            f"within {table.tolerance:.1%} (target >= {table.best * (1 - table.tolerance):.4f}); "
            f"{args.reps} repetitions, cap {args.cap:g}xE",
            flush=True,
        )
        results = replay_table(
            table,
            chosen,
            workers_list,
            args.reps,
            args.promote_top,
            args.cap * table.epochs,
            budgets,
            args.jobs,
        )
        shown = {i: names[i] for i in chosen}
        for workers in workers_list:
            print("\n".join(summarize(table, results, shown, workers, budgets)) + "\n", flush=True)
        hit_rate = random_hit_rate(table) if 1 in workers_list else None
        verdicts += verdict(table, results, workers_list, hit_rate, shown)
        measured[table.name] = (table, results)
        # Phases and screening are named by the table's parameters; the overview names them in general.
        labels.update({i: listed[i].label for i in shown})
        figures[path.name] = {
            "names": names,
            "results": {f"{names[i]}|{w}": v for (i, w), v in results.items()},
        }
    if len(measured) > 1:
        print("## every table: median epochs to target · x random (share never reached)\n")
        print("\n".join(overview(measured, labels, workers_list)) + "\n")
    print("\n".join(verdicts))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, default=str, indent=1))


if __name__ == "__main__":
    main()
