"""Collect at scale: ``hpctune collect`` on a 10,000-trial PostgreSQL study vs Optuna's own load of it.

The target: collect, with importance and the report, within 2x the time Optuna needs just to load the
trials. The study is written straight into Optuna's tables with SQL (``scale.insert_trials``;
``study.add_trials`` takes ~26 ms per trial) together with one JSON record per trial under
``<results>/<study>/trials/trial-N.json``, written with ``TrialRecord`` + ``write_trial`` as a worker does
(no fsync). It looks like a real tuning run, maximizing ``val_acc``:

- 4 parameters: lr (log 1e-4..1e-1), weight_decay (log 1e-6..1e-2), hidden (int 16..256), optimizer
  (adamw/sgd), sampled at random; the final accuracy is a smooth response surface (best near lr 3e-3 with
  adamw, 3e-2 with sgd; weight decay near 1e-4; hidden near 160) plus noise;
- ``--epochs`` (20) reported epochs per trial, learning curves 0.1 + (q - 0.1)(1 - exp(-e / tau)) + noise that
  rise and saturate (slower for small lr); each epoch record has epoch, val_acc, val_loss, lr (a cosine
  schedule over the epochs), train_loss; the trial's value is its best val_acc, as the worker reports it;
- ~60 % PRUNED by a successive-halving-like rule (at epochs 3, 6 and 12 a trial below the 27th percentile of
  the trials that reached that epoch stops; intermediate values and epochs up to there, no value);
- ~1.5 % FAIL: adamw with lr > 0.05 diverges at an early epoch (reason ``nonfinite_loss``);
- user attributes as the worker writes them: ``worker`` {host, pid}, ``reason`` for PRUNED/FAIL; the study's
  ``trials`` and ``metric`` attributes as ``hpctune`` sets them.

The study is read back with ``optuna.load_study(...).get_trials()`` and compared trial by trial (count,
numbers, states, params, values, intermediate values) before anything is timed. Then, --repeats (3) rounds,
each in this order:

(a) Optuna's load: ``optuna.load_study(name, storage=RDBStorage(url)).get_trials(deepcopy=False)``, a fresh
    storage object (engine) every time;
(b) hpctune's collect, the library call exactly as ``hpctune collect STUDY`` (no config, HPCTUNE_STORAGE)
    makes it: ``resolve_storage`` + ``load_existing_study`` + ``collect_shared(..., importance="ped_anova")``
    (the linked confirmation study looked up, the report included), a fresh storage every time;
(c) the same steps one by one around the public functions: load_existing_study (+ load_confirmation),
    read_trials, get_trials, summarize, trials.csv +
    summary.json, write_report; then ``analyze`` and ``param_importance`` alone (both run inside summarize:
    measured separately, not part of the sum).

Medians of (a) and (b) and their ratio collect/load are printed (target <= 2x: printed as met or not met;
timing never fails the script). Then ONE ``python -m hpc_tune collect STUDY --results ...`` subprocess with
HPCTUNE_STORAGE (the CLI itself, which also pays the interpreter start and the imports; those are timed
alone too). Correctness (exit non-zero, "NOT OK", otherwise): the study reads back intact; collect's counts,
trial rows, best trial and pruned fraction match what was built; no record is quarantined; PED-ANOVA
importance covers the 4 parameters; report.html embeds every plot, and plots/ has a PNG for each of them
(all of PLOT_NAMES but ``confirmation``, which needs a confirmation study); the CLI exits 0 with the same
counts.

    .venv/bin/python benchmarks/collect_scale.py [--trials 10000] [--epochs 20] [--repeats 3] \
        [--seed 0] [--storage URL]

Quick check: ``--trials 1000``. Without --storage a throw-away PostgreSQL is started (benchmarks/_pg.py); with
it, the URL's role must be allowed to CREATE DATABASE.
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from scale import BuiltTrial, child_env, insert_trials, load_trials, med, ratio, run_command, tail

STUDY = "collect-scale"
METRIC = "val_acc"
DIRECTION = "maximize"
SPACE = {
    "lr": FloatDistribution(1e-4, 1e-1, log=True),
    "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
    "hidden": IntDistribution(16, 256),
    "optimizer": CategoricalDistribution(("adamw", "sgd")),
}
RUNGS = (3, 6, 12)  # epochs where the simulated pruner decides
PRUNE_PERCENTILE = 27.0  # below this percentile of the trials that reached a rung: pruned
MIN_AT_RUNG = 10  # the first trials at a rung are never pruned (no reference yet)
SECONDS_PER_EPOCH = 6.0
TARGET = 2.0


# ----------------------------------------------------------------------------------------------- the study
@dataclass
class Simulated:
    """One trial as a worker would have run it: its parameters, its epoch records, how it ended."""

    number: int
    params: dict[str, Any]
    state: str
    epochs: list[dict[str, float]] = field(default_factory=list)
    reason: str | None = None

    @property
    def value(self) -> float | None:
        if self.state != "COMPLETE":
            return None
        return max(e[METRIC] for e in self.epochs)


def simulate(n: int, epochs: int, seed: int) -> list[Simulated]:
    """``n`` trials of a plausible study (see the module docstring), deterministic for ``seed``."""
    rng = random.Random(seed)
    at_rung: dict[int, list[float]] = {r: [] for r in RUNGS if r < epochs}
    out = []
    for number in range(n):
        params = {
            "lr": 10 ** rng.uniform(-4, -1),
            "weight_decay": 10 ** rng.uniform(-6, -2),
            "hidden": rng.randint(16, 256),
            "optimizer": rng.choice(("adamw", "sgd")),
        }
        best_lr = 3e-3 if params["optimizer"] == "adamw" else 3e-2
        ceiling = (
            0.93
            - 0.045 * math.log10(params["lr"] / best_lr) ** 2
            - 0.012 * (math.log10(params["weight_decay"]) + 4) ** 2
            - 0.02 * math.log2(params["hidden"] / 160) ** 2
            - (0.015 if params["optimizer"] == "sgd" else 0.0)
        )
        ceiling = max(ceiling + rng.gauss(0, 0.005), 0.12)
        tau = min(max(3.0 * math.sqrt(best_lr / params["lr"]), 1.0), 40.0)
        diverges = params["optimizer"] == "adamw" and params["lr"] > 0.05 and rng.random() < 0.3
        fail_at = rng.randint(1, 4) if diverges else None
        trial = Simulated(number, params, "COMPLETE")
        for epoch in range(1, epochs + 1):
            if epoch == fail_at:  # the loss went non-finite during this epoch: the engine stops before eval
                trial.state, trial.reason = "FAIL", "nonfinite_loss"
                break
            acc = 0.1 + (ceiling - 0.1) * (1 - math.exp(-epoch / tau)) + rng.gauss(0, 0.004)
            val_loss = 0.05 + 2.5 * (1 - acc) + rng.gauss(0, 0.01)
            trial.epochs.append(
                {
                    "epoch": epoch,
                    METRIC: acc,
                    "val_loss": val_loss,
                    "lr": params["lr"] * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs)),
                    "train_loss": 0.85 * val_loss + rng.gauss(0, 0.01),
                }
            )
            reached = at_rung.get(epoch)
            if reached is not None:
                bisect.insort(reached, acc)
                cut = reached[min(int(len(reached) * PRUNE_PERCENTILE / 100), len(reached) - 1)]
                if len(reached) > MIN_AT_RUNG and acc < cut:
                    trial.state, trial.reason = "PRUNED", "pruned"
                    break
        out.append(trial)
    return out


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


def write_records(study_dir: Path, trials: list[Simulated], epochs: int) -> None:
    """trial-N.json for every trial, as the worker leaves them (TrialRecord + write_trial, no fsync)."""
    from hpc_tune.storage.records import TrialRecord, write_trial

    base = datetime.now(timezone.utc) - timedelta(seconds=len(trials) + 3600)
    for t in trials:
        duration = SECONDS_PER_EPOCH * max(len(t.epochs), 1)
        started = base + timedelta(seconds=t.number)
        record = TrialRecord(
            study=study_dir.name,
            trial=t.number,
            params=dict(t.params),
            fidelity={"data_fraction": 1.0, "epochs": epochs},
            host=f"node{t.number % 16:02d}",
            pid=1000 + t.number % 64,
            started_at=_iso(started),
        )
        for epoch in t.epochs:
            record.add_epoch(epoch, METRIC, DIRECTION)
        record.state, record.reason, record.value = t.state, t.reason, t.value
        record.finished_at = _iso(started + timedelta(seconds=duration))
        record.duration_s = duration
        write_trial(study_dir, record)


def build(url: str, study_dir: Path, trials: list[Simulated]) -> None:
    built = [
        BuiltTrial(
            state=t.state,
            params={name: (value, SPACE[name]) for name, value in t.params.items()},
            value=t.value,
            intermediate={int(e["epoch"]): e[METRIC] for e in t.epochs},
            user_attrs={
                "worker": {"host": f"node{t.number % 16:02d}", "pid": 1000 + t.number % 64},
                **({"reason": t.reason} if t.reason else {}),
            },
            seconds=SECONDS_PER_EPOCH * max(len(t.epochs), 1),
        )
        for t in trials
    ]
    insert_trials(
        url, study_dir.name, built, direction=DIRECTION, study_attrs={"trials": len(trials), "metric": METRIC}
    )


def verify(url: str, study: str, expected: list[Simulated]) -> None:
    """The built study, as Optuna reads it, is exactly what was simulated."""
    trials = sorted(load_trials(url, study), key=lambda t: t.number)
    if [t.number for t in trials] != list(range(len(expected))):
        raise SystemExit(f"NOT OK: the built study reads back {len(trials)} trials, expected {len(expected)}")
    bad = [
        t.number
        for t, s in zip(trials, expected, strict=True)
        if t.state.name != s.state
        or t.params != s.params
        or t.value != s.value
        or t.intermediate_values != {int(e["epoch"]): e[METRIC] for e in s.epochs}
        or t.user_attrs.get("reason") != s.reason
    ]
    if bad:
        raise SystemExit(
            f"NOT OK: {len(bad)} trial(s) read back differently from what was written: {bad[:5]}"
        )


# ----------------------------------------------------------------------------------------------- the sides
def optuna_load(url: str, study: str) -> float:
    start = time.perf_counter()
    trials = load_trials(url, study)  # a fresh RDBStorage, disposed after
    took = time.perf_counter() - start
    if not trials:
        raise SystemExit("NOT OK: Optuna's load returned no trial")
    return took


def _dispose(opened: Any) -> None:
    engine = getattr(opened.storage, "engine", None)
    if engine is not None:
        engine.dispose()


def hpctune_collect(url: str, study_dir: Path) -> tuple[float, Any]:
    """What ``hpctune collect STUDY`` runs with HPCTUNE_STORAGE and no config; returns (seconds, the
    Collected)."""
    from hpc_tune.collector.collect import collect_shared, load_study
    from hpc_tune.storage.url import resolve_storage

    start = time.perf_counter()
    opened = load_study(resolve_storage(url, study_dir), study_dir.name, None, study_dir)
    result = collect_shared(opened, study_dir, config=None, importance="ped_anova")
    took = time.perf_counter() - start
    _dispose(opened)
    return took, result


PARTS = ("load_existing_study", "get_trials", "read_trials", "summarize", "csv+json", "write_report")
APART = ("analyze", "importance")


def collect_parts(url: str, study_dir: Path) -> dict[str, float]:
    """collect()'s steps one by one through the public functions (same order and arguments), then the
    analysis and the importance alone."""
    from hpc_tune.atomic import atomic_write_json, atomic_write_text
    from hpc_tune.collector.analysis import analyze, param_importance
    from hpc_tune.collector.collect import TOP_K, load_study, summarize, trials_csv
    from hpc_tune.collector.html import write_report
    from hpc_tune.collector.rerun_results import load_confirmation
    from hpc_tune.storage.records import read_trials
    from hpc_tune.storage.url import resolve_storage

    took: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        took[name] = time.perf_counter() - start
        return out

    def open_study() -> tuple[Any, Any]:
        opened = load_study(resolve_storage(url, study_dir), study_dir.name, None, study_dir)
        return opened, load_confirmation(opened.storage, opened.study)

    opened, confirmation = timed("load_existing_study", open_study)
    study = opened.study
    loaded = timed("read_trials", lambda: read_trials(study_dir))
    trials = timed("get_trials", lambda: study.get_trials(deepcopy=False))
    summary = timed(
        "summarize",
        lambda: summarize(
            study,
            loaded,
            budget=None,
            config=None,
            importance="ped_anova",
            confirmation=confirmation,
            trials=trials,
        ),
    )

    def write_tables() -> None:
        atomic_write_text(study_dir / "trials.csv", trials_csv(summary))
        atomic_write_json(study_dir / "summary.json", summary.model_dump(mode="json"))

    timed("csv+json", write_tables)
    timed("write_report", lambda: write_report(summary, trials, loaded.records, study_dir))
    timed(
        "analyze",
        lambda: analyze(
            trials,
            direction=summary.direction,
            records=loaded.records,
            metric=summary.metric,
            study_attrs=study.user_attrs,
            importance="ped_anova",
            top_k=TOP_K,
        ),
    )
    timed("importance", lambda: param_importance(trials, maximize=True, kind="ped_anova"))
    _dispose(opened)
    return took


# ----------------------------------------------------------------------------------------------- checks
def check_summary(summary: Any, expected: list[Simulated], where: str) -> list[str]:
    """What the collector must have found in the study it was given (a ``Summary``); returns the problems."""
    from hpc_tune.collector.analysis_model import Importance

    problems = []
    counts = Counter(t.state for t in expected)
    got = {k: getattr(summary.counts, k) for k in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")}
    want = {k: counts.get(k, 0) for k in got}
    if got != want:
        problems.append(f"{where}: counts {got}, expected {want}")
    if len(summary.trials) != len(expected):
        problems.append(f"{where}: {len(summary.trials)} trial rows, expected {len(expected)}")
    if summary.quarantined:
        problems.append(f"{where}: {len(summary.quarantined)} record(s) quarantined")
    complete = [t for t in expected if t.state == "COMPLETE"]
    best = max(complete, key=lambda t: t.value or -math.inf) if complete else None
    got_best = (summary.best.trial, summary.best.value) if summary.best is not None else (None, None)
    if best is not None and got_best != (best.number, best.value):
        problems.append(
            f"{where}: best trial {got_best[0]} ({got_best[1]}), expected {best.number} ({best.value})"
        )
    pruned = round(counts.get("PRUNED", 0) / len(expected), 4)
    if summary.pruning.pruned_fraction != pruned:
        problems.append(f"{where}: pruned fraction {summary.pruning.pruned_fraction}, expected {pruned}")
    importance = summary.analysis.importance
    if (
        not isinstance(importance, Importance)
        or importance.evaluator != "ped_anova"
        or set(importance.overall) != set(SPACE)
    ):
        problems.append(f"{where}: importance is {importance}, expected PED-ANOVA over {sorted(SPACE)}")
    return problems


def check_report(result: Any, study_dir: Path) -> tuple[list[str], str]:
    """report.html embeds every plot that can be drawn for this study and plots/ holds each; returns the
    problems and a one-line description."""
    from hpc_tune.collector.figures import PLOT_NAMES

    problems: list[str] = []
    if result.report is None:
        return ["collect wrote no report"], ""
    expected = [name for name in PLOT_NAMES if name != "confirmation"]  # no confirmation study here
    written = sorted(p.stem for p in result.report.plots)
    missing = [name for name in expected if not (study_dir / "plots" / f"{name}.png").is_file()]
    if missing:
        problems.append(f"plots not drawn: {missing}")
    html = result.report.html.read_text(encoding="utf-8")
    embedded = html.count("data:image/png;base64,")
    if embedded != len(written) or embedded < len(expected):
        problems.append(f"report.html embeds {embedded} image(s); {len(written)} PNG(s) written")
    if not result.report.digest.is_file():
        problems.append("summary.md missing")
    lines = (study_dir / "trials.csv").read_text(encoding="utf-8").count("\n")
    if lines != len(result.summary.trials) + 1:
        problems.append(f"trials.csv has {lines} lines")
    size = result.report.html.stat().st_size
    return problems, f"report.html {size / 1e6:.2f} MB, {embedded} embedded plots ({', '.join(written)})"


def cli_collect(url: str, study_dir: Path, expected: list[Simulated], tmp: Path, timeout: float) -> list[str]:
    """One ``python -m hpc_tune collect STUDY`` with HPCTUNE_STORAGE: the command itself, end to end."""
    import json

    env = child_env(url)
    log = tmp / "cli-import.log"
    imports = [sys.executable, "-c", "import hpc_tune.cli, hpc_tune.collector.collect"]
    code, _, import_s = run_command(imports, env, log, timeout)
    if code != 0:
        return [f"importing the CLI failed ({code}):\n{tail(log)}"]
    (study_dir / "summary.json").unlink()
    cmd = [sys.executable, "-m", "hpc_tune", "collect", study_dir.name, "--results", str(study_dir.parent)]
    log = tmp / "cli-collect.log"
    code, _, wall = run_command(cmd, env, log, timeout)
    print(
        f"  CLI `python -m hpc_tune collect {study_dir.name}` (one subprocess): {wall:6.2f} s wall, "
        f"exit {code}; of which interpreter start + imports (hpc_tune.cli, the collector) "
        f"~{import_s:.2f} s, timed alone"
    )
    if code != 0:
        return [f"the CLI exited {code}:\n{tail(log)}"]
    from hpc_tune.collector.summary import Summary

    # Read back through the model: the file must be what its schema says.
    summary = Summary.model_validate(json.loads((study_dir / "summary.json").read_text(encoding="utf-8")))
    return check_summary(summary, expected, "CLI")


# ----------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10000, help="trials in the study (default 10000)")
    parser.add_argument("--epochs", type=int, default=20, help="reported epochs per full trial (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of (load, collect, parts)")
    parser.add_argument("--seed", type=int, default=0, help="for the simulated study")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds for the CLI subprocess")
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="an existing PostgreSQL whose role may CREATE DATABASE (default: a throw-away one)",
    )
    args = parser.parse_args()
    if args.trials < 20 or args.epochs < 2 or args.repeats < 1:
        parser.error("--trials >= 20, --epochs >= 2, --repeats >= 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    from _pg import pg_server  # benchmarks/ is sys.path[0] when run as a script

    print(
        f"collect_scale: optuna {optuna.__version__}, {os.cpu_count()} CPUs, PostgreSQL "
        f"{'at --storage' if args.storage else 'throw-away'}; {args.trials} trials x {args.epochs} epochs",
        flush=True,
    )
    problems: list[str] = []
    with (
        pg_server(args.storage) as pg,
        tempfile.TemporaryDirectory(prefix="hpctune-bench-collect-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        study_dir = tmp / "runs" / STUDY
        t0 = time.perf_counter()
        expected = simulate(args.trials, args.epochs, args.seed)
        counts = Counter(t.state for t in expected)
        url = pg.new_database("collect_scale")
        build(url, study_dir, expected)
        t1 = time.perf_counter()
        write_records(study_dir, expected, args.epochs)
        t2 = time.perf_counter()
        verify(url, STUDY, expected)
        n_values = sum(len(t.epochs) for t in expected)
        print(
            f"built: {args.trials} trials (COMPLETE {counts['COMPLETE']}, PRUNED {counts['PRUNED']}, "
            f"FAIL {counts['FAIL']}), {n_values} intermediate values, 4 params; SQL {t1 - t0:.1f} s, "
            f"{args.trials} JSON records {t2 - t1:.1f} s; read back intact "
            f"({time.perf_counter() - t2:.1f} s)",
            flush=True,
        )

        loads: list[float] = []
        collects: list[float] = []
        parts: list[dict[str, float]] = []
        for r in range(args.repeats):
            loads.append(optuna_load(url, STUDY))
            took, result = hpctune_collect(url, study_dir)
            collects.append(took)
            parts.append(collect_parts(url, study_dir))
            if r == 0:
                problems += check_summary(result.summary, expected, "collect")
                report_problems, described = check_report(result, study_dir)
                problems += report_problems
            print(
                f"  round {r + 1}: Optuna load {loads[-1]:6.2f} s   hpctune collect {collects[-1]:6.2f} s   "
                f"({collects[-1] / loads[-1]:.2f}x)",
                flush=True,
            )
        load_s, collect_s = med(loads), med(collects)
        share = {k: med([p[k] for p in parts]) for k in (*PARTS, *APART)}
        summed = sum(share[k] for k in PARTS)
        print(f"median of {args.repeats}: Optuna load {load_s:.2f} s, hpctune collect {collect_s:.2f} s")
        print(
            "collect's parts (medians, timed one by one): "
            + ", ".join(f"{k} {share[k]:.2f} s" for k in PARTS)
            + f"; sum {summed:.2f} s. Inside summarize, timed alone: analyze {share['analyze']:.2f} s "
            f"(of which PED-ANOVA importance {share['importance']:.2f} s)"
        )
        print(f"report: {described}")
        problems += cli_collect(url, study_dir, expected, tmp, args.timeout)

    r = ratio(collect_s, load_s)
    verdict = "met" if r <= TARGET else "NOT met"
    print(f"ratio collect/load (medians): {r:.2f}x (target <= {TARGET:g}x: {verdict})")
    for p in problems:
        print(f"  problem: {p}")
    print(
        "correctness (study reads back intact; counts, rows, best, pruned fraction, importance; report with "
        f"every plot; CLI exit 0 with the same counts): {'OK' if not problems else 'NOT OK'}"
    )
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
