"""Scale: many workers on one PostgreSQL study, cold start on a large study, per-trial cost at 1k vs 10k.

Same trivial objective as orchestration.py (below: suggests x in [-10, 10], reports x*step for steps 1..5,
returns x), ``task: <this file>:objective``, TPE (seed 0, hpc_tune's defaults: multivariate, constant liar,
10 startup trials), no pruner, default heartbeat (10 s / 60 s). The storage URL reaches every child through
HPCTUNE_STORAGE, never argv. Three parts, each printed with its figures and ratios:

1. Many workers. For each N of --workers-list (default 8,32,64), one fresh database and one command,
   ``python -m hpc_tune run --local --workers N -c <config>`` (exactly what ``hpctune run --local`` runs:
   N ``hpctune worker`` children plus the parent's progress poll and collect), ``trials: --trials`` (400).
   A thread polls ``pg_stat_activity`` (client backends of that database, less its own connection) every
   0.1 s for the PEAK number of connections. Printed: wall (command start to exit), trials/s (finished /
   wall), startup / loop / tail from the trials' own timestamps, peak connections, FAIL and finished counts.
   Correctness (exit non-zero otherwise): exit code 0, no FAIL trial, exactly --trials finished, none left.
2. Cold start. A study with --big (10000) COMPLETE trials (param x, value x, 20 intermediate values each)
   is written straight into Optuna's tables with SQL: ``study.add_trials`` took ~26 ms per trial here
   (2000 in 53 s, so ~4.5 min for 10000). ``optuna.load_study(...).get_trials()`` must return them all,
   checked before anything is timed. Then ONE ``python -m hpc_tune worker -c <config> --max-trials 1``
   (``trials: big + repeats``, so the budget is never the limit) is timed from spawn to the created trial's
   ``datetime_start`` ("trial created"), to its ``datetime_complete`` ("first trial done": also the
   sampler's read of the study, the verdict's figure) and to the process exit ("wall"). Same on an empty
   study (a new study name per run, ``trials: 1``, tables created beforehand). Runs alternate (empty, big,
   ...) --repeats times (3); medians and the big/empty ratios are printed (target: <= 2x).
3. Per-trial cost. The same single worker with ``--max-trials --per-trial`` (20) on a study of --small
   (1000) trials, built the same way, and on the big study of part 2 (which by then holds a few more).
   Per trial, from the new trials' own timestamps: "cycle" = (last complete - first complete) / (n - 1),
   the steady state including the budget read between trials (the headline); "in trial" = mean of
   complete - start (sampler + objective + tell); plus wall / n (includes startup). Alternating, --repeats
   runs each, medians and the ratio big/small.

    .venv/bin/python benchmarks/scale.py [--workers-list 8,32,64] [--trials 400] [--big 10000] \
        [--small 1000] [--per-trial 20] [--repeats 3] [--skip-many] [--skip-cold] [--skip-overhead] \
        [--storage URL]

Quick check: ``--workers-list 2,4 --trials 40 --big 1000``. Without --storage a throw-away PostgreSQL is
started (benchmarks/_pg.py, max_connections 300); with it, the URL's role must be allowed to CREATE DATABASE.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
STEPS = 5
BUILT_STEPS = 20  # intermediate values per pre-built trial
LOW, HIGH = -10.0, 10.0
POLL_S = 0.1


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", LOW, HIGH)
    for step in range(1, STEPS + 1):
        trial.report(x * step, step)
    return x


# ----------------------------------------------------------------------------------------------- helpers
def write_config(path: Path, study: str, trials: int, results: Path) -> Path:
    import yaml

    config = {
        "study": study,
        "direction": "minimize",
        "metric": "value",
        "task": f"{HERE}:objective",
        "trials": trials,
        "epochs": STEPS,
        "space": {"x": {"type": "float", "low": LOW, "high": HIGH}},
        "sampler": {"type": "tpe", "seed": 0},
        "pruner": {"type": "none"},
        "results": str(results),
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def child_env(url: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", HPCTUNE_STORAGE=url)
    for key in ("HPCTUNE_FAULT", "HPCTUNE_WORKERS", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"):
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def pg_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg2
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg2.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database)


def create_tables(url: str) -> None:
    optuna.storages.RDBStorage(url).engine.dispose()


def load_trials(url: str, study: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(url)
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


def run_command(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[int, float, float]:
    """Run ``cmd`` (its own process group, output to ``log``); returns (exit code, spawn epoch, wall s)."""
    with open(log, "wb") as out:
        spawn = time.time()
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the command and the workers it started
            proc.wait()
            code = -999
        return code, spawn, time.perf_counter() - start


def tail(log: Path, chars: int = 2000) -> str:
    return log.read_text(errors="replace")[-chars:]


def med(values: list[float]) -> float:
    return statistics.median(values)


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("inf")


# ----------------------------------------------------------------------------------------------- part 1
class PeakConnections:
    """Polls pg_stat_activity on its own connection every 0.1 s; ``peak`` excludes that connection."""

    QUERY = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' AND datname = current_database()"
    )

    def __init__(self, url: str) -> None:
        self.conn = pg_connect(url)
        self.conn.autocommit = True
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-connections", daemon=True)

    def _run(self) -> None:
        with self.conn.cursor() as cur:
            while not self._stop.is_set():
                cur.execute(self.QUERY)
                self.peak = max(self.peak, int(cur.fetchone()[0]) - 1)
                self.samples += 1
                self._stop.wait(POLL_S)

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.conn.close()


def many_workers(pg, workers: int, trials: int, tmp: Path, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    url = pg.new_database(f"scale_w{workers}")
    study = f"scale-w{workers}"
    workdir = tmp / f"many-{workers}"
    workdir.mkdir()
    config = write_config(workdir / "hpctune.yaml", study, trials, workdir / "runs")
    cmd = [sys.executable, "-m", "hpc_tune", "run", "--local", "--workers", str(workers), "-c", str(config)]
    log = workdir / "run.log"
    with PeakConnections(url) as peak:
        code, spawn, wall = run_command(cmd, child_env(url), log, timeout)
    all_trials = load_trials(url, study)
    done = [t for t in all_trials if t.state.is_finished()]
    failed = sum(1 for t in all_trials if t.state == optuna.trial.TrialState.FAIL)
    rate = len(done) / wall
    if done:
        first = min(t.datetime_start.timestamp() for t in done if t.datetime_start)
        last = max(t.datetime_complete.timestamp() for t in done if t.datetime_complete)
        split = (
            f"startup {first - spawn:5.2f} s, loop {last - first:6.2f} s, tail {spawn + wall - last:5.2f} s"
        )
    else:
        split = "no finished trial"
    print(
        f"  N={workers:<3d} wall {wall:7.2f} s  {rate:6.1f} trials/s  ({split})  "
        f"peak connections {peak.peak} ({peak.peak / workers:.2f}/worker, {peak.samples} samples)  "
        f"FAIL {failed}  "
        f"finished {len(done)}/{trials} (in study {len(all_trials)})",
        flush=True,
    )
    problems = []
    if code != 0:
        problems.append(f"exit code {code}")
    if failed:
        problems.append(f"{failed} FAIL trial(s)")
    if len(done) != trials or len(all_trials) != trials:
        problems.append(f"{len(done)} finished / {len(all_trials)} in study, expected exactly {trials}")
    if problems:
        print(f"  NOT OK (N={workers}): {'; '.join(problems)}; log {log}:\n{tail(log)}", flush=True)
        return False
    return True


# ----------------------------------------------------------------------------------------------- study build
@dataclass(frozen=True)
class BuiltTrial:
    """One finished trial to write with :func:`insert_trials`: parameters as (external value, distribution),
    the value (None for PRUNED/FAIL), intermediate values by step, user attributes (stored as JSON)."""

    state: str  # "COMPLETE", "PRUNED" or "FAIL"
    params: dict[str, tuple[Any, BaseDistribution]]
    value: float | None
    intermediate: dict[int, float]
    user_attrs: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.5  # datetime_complete - datetime_start


def insert_trials(
    url: str,
    study: str,
    trials: Sequence[BuiltTrial],
    *,
    direction: str = "minimize",
    study_attrs: dict[str, Any] | None = None,
) -> None:
    """Create ``study`` and write ``trials`` (numbers 0..n-1) straight into Optuna's tables.

    Rows as ``study.add_trials`` writes them (inspected with psql, Optuna 5.0): trials (number in trial_id
    order, as Optuna's count_past_trials gives), trial_params (internal float repr + distribution JSON),
    trial_values (objective 0), trial_intermediate_values, trial_user_attributes (JSON), with Optuna's own
    stored representation of non-finite values. Trial i starts at i seconds after a base an hour before n.
    """
    from optuna.storages._rdb.models import TrialIntermediateValueModel, TrialValueModel
    from psycopg2.extras import execute_values

    storage = optuna.storages.RDBStorage(url)
    created = optuna.create_study(study_name=study, storage=storage, direction=direction)
    for key, attr in (study_attrs or {}).items():
        created.set_user_attr(key, attr)
    storage.engine.dispose()
    n = len(trials)
    base = datetime.now() - timedelta(seconds=n + 3600)
    dist_json: dict[int, str] = {}  # by id(distribution): trials usually share a few distribution objects

    def as_json(dist: BaseDistribution) -> str:
        if id(dist) not in dist_json:
            dist_json[id(dist)] = optuna.distributions.distribution_to_json(dist)
        return dist_json[id(dist)]

    def stored(pair: tuple[float | None, Any]) -> tuple[float | None, str]:
        return pair[0], pair[1].name  # the enum's name is what SQLAlchemy stores

    conn = pg_connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT study_id FROM studies WHERE study_name = %s", (study,))
            study_id = cur.fetchone()[0]
            rows = [
                (
                    i,
                    study_id,
                    t.state,
                    base + timedelta(seconds=i),
                    base + timedelta(seconds=i + t.seconds),
                )
                for i, t in enumerate(trials)
            ]
            returned = execute_values(
                cur,
                "INSERT INTO trials (number, study_id, state, datetime_start, datetime_complete) VALUES %s "
                "RETURNING trial_id, number",
                rows,
                page_size=1000,
                fetch=True,
            )
            ids = dict((number, trial_id) for trial_id, number in returned)
            order = [number for _, number in sorted(returned)]
            if order != sorted(order):
                raise SystemExit("NOT OK: trial numbers are not in trial_id order after the bulk insert")
            execute_values(
                cur,
                "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES %s",
                [
                    (ids[i], name, dist.to_internal_repr(value), as_json(dist))
                    for i, t in enumerate(trials)
                    for name, (value, dist) in t.params.items()
                ],
                page_size=1000,
            )
            execute_values(
                cur,
                "INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES %s",
                [
                    (ids[i], 0, *stored(TrialValueModel.value_to_stored_repr(t.value)))
                    for i, t in enumerate(trials)
                    if t.value is not None
                ],
                page_size=1000,
            )
            execute_values(
                cur,
                "INSERT INTO trial_intermediate_values "
                "(trial_id, step, intermediate_value, intermediate_value_type) VALUES %s",
                [
                    (ids[i], step, *stored(TrialIntermediateValueModel.intermediate_value_to_stored_repr(v)))
                    for i, t in enumerate(trials)
                    for step, v in t.intermediate.items()
                ],
                page_size=2000,
            )
            execute_values(
                cur,
                "INSERT INTO trial_user_attributes (trial_id, key, value_json) VALUES %s",
                [(ids[i], k, json.dumps(v)) for i, t in enumerate(trials) for k, v in t.user_attrs.items()],
                page_size=1000,
            )
            cur.execute("ANALYZE")
    finally:
        conn.close()


def build_study(url: str, study: str, n: int, seed: int) -> float:
    """Create ``study`` with ``n`` COMPLETE trials (param x, value x, x * step at steps 1..20) written
    straight into Optuna's tables; returns seconds."""
    start = time.perf_counter()
    rng = random.Random(seed)
    dist = optuna.distributions.FloatDistribution(LOW, HIGH)
    xs = [rng.uniform(LOW, HIGH) for _ in range(n)]
    trials = [
        BuiltTrial("COMPLETE", {"x": (x, dist)}, x, {s: x * s for s in range(1, BUILT_STEPS + 1)}) for x in xs
    ]
    insert_trials(url, study, trials, direction="minimize")
    return time.perf_counter() - start


def verify_study(url: str, study: str, n: int) -> float:
    """``load_study(...).get_trials()`` returns the ``n`` built trials intact; returns the load's seconds."""
    start = time.perf_counter()
    trials = load_trials(url, study)
    took = time.perf_counter() - start
    bad = [
        t.number
        for t in trials
        if t.state != optuna.trial.TrialState.COMPLETE
        or set(t.params) != {"x"}
        or t.value != t.params["x"]
        or sorted(t.intermediate_values) != list(range(1, BUILT_STEPS + 1))
        or t.intermediate_values[BUILT_STEPS] != t.params["x"] * BUILT_STEPS
    ]
    numbers = sorted(t.number for t in trials)
    if len(trials) != n or bad or numbers != list(range(n)):
        raise SystemExit(
            f"NOT OK: the built study {study} reads back {len(trials)} trials (expected {n}); "
            f"wrong: {bad[:5]}; numbers 0..{n - 1}: {numbers == list(range(n))}"
        )
    return took


# ----------------------------------------------------------------------------------------------- worker runs
@dataclass
class WorkerRun:
    wall_s: float
    created_s: float  # spawn -> first new trial's datetime_start
    done_s: float  # spawn -> first new trial's datetime_complete
    cycle_s: float  # (last complete - first complete) / (n - 1); nan for n == 1
    in_trial_s: float  # mean complete - start of the new trials
    n: int


def run_worker(url: str, study: str, config: Path, max_trials: int, log: Path, timeout: float) -> WorkerRun:
    before = {t.number for t in load_trials(url, study)} if study_exists(url, study) else set()
    cmd = [sys.executable, "-m", "hpc_tune", "worker", "-c", str(config), "--max-trials", str(max_trials)]
    env = dict(child_env(url), OMP_NUM_THREADS="1")
    code, spawn, wall = run_command(cmd, env, log, timeout)
    if code != 0:
        raise SystemExit(f"NOT OK: worker on {study} exited {code}; log {log}:\n{tail(log)}")
    new = sorted((t for t in load_trials(url, study) if t.number not in before), key=lambda t: t.number)
    failed = [t.number for t in new if t.state != optuna.trial.TrialState.COMPLETE]
    if len(new) != max_trials or failed:
        raise SystemExit(
            f"NOT OK: worker on {study} made {len(new)} trial(s), expected {max_trials} COMPLETE; "
            f"not COMPLETE: {failed}; log {log}:\n{tail(log)}"
        )
    starts = [t.datetime_start.timestamp() for t in new]  # type: ignore[union-attr]
    completes = [t.datetime_complete.timestamp() for t in new]  # type: ignore[union-attr]
    cycle = (completes[-1] - completes[0]) / (len(new) - 1) if len(new) > 1 else float("nan")
    return WorkerRun(
        wall_s=wall,
        created_s=starts[0] - spawn,
        done_s=completes[0] - spawn,
        cycle_s=cycle,
        in_trial_s=statistics.fmean(c - s for s, c in zip(starts, completes, strict=True)),
        n=len(new),
    )


def study_exists(url: str, study: str) -> bool:
    storage = optuna.storages.RDBStorage(url)
    try:
        return study in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    finally:
        storage.engine.dispose()


def medians(runs: list[WorkerRun], attr: str) -> float:
    return statistics.median(getattr(x, attr) for x in runs)


def cold_start(pg, big_url: str, args: argparse.Namespace, tmp: Path) -> None:  # type: ignore[no-untyped-def]
    print(
        f"2. cold start: one `hpctune worker --max-trials 1`, spawn -> first trial, "
        f"{args.repeats} run(s) per side, alternating"
    )
    empty_url = pg.new_database("scale_empty")
    create_tables(empty_url)
    runs_dir = tmp / "runs"
    big_config = write_config(tmp / "big.yaml", "scale-big", args.big + args.repeats, runs_dir)
    runs: dict[str, list[WorkerRun]] = {"empty": [], "big": []}
    for r in range(args.repeats):
        name = f"scale-empty-{r}"  # a new, empty study every run
        empty_config = write_config(tmp / f"empty-{r}.yaml", name, 1, runs_dir)
        for side, url, study, config in (
            ("empty", empty_url, name, empty_config),
            ("big", big_url, "scale-big", big_config),
        ):
            res = run_worker(url, study, config, 1, tmp / f"cold-{side}-{r}.log", args.timeout)
            runs[side].append(res)
            print(
                f"  run {r + 1} {side:5s} trial created {res.created_s:6.2f} s  first trial done "
                f"{res.done_s:6.2f} s  wall {res.wall_s:6.2f} s",
                flush=True,
            )
    label = {"empty": "empty study", "big": f"{args.big}-trial study"}
    for side in ("empty", "big"):
        print(
            f"  median {label[side]:>17s}: trial created {medians(runs[side], 'created_s'):6.2f} s  "
            f"first trial done {medians(runs[side], 'done_s'):6.2f} s  "
            f"wall {medians(runs[side], 'wall_s'):6.2f} s"
        )
    r = {
        k: ratio(medians(runs["big"], k), medians(runs["empty"], k))
        for k in ("created_s", "done_s", "wall_s")
    }
    verdict = "met" if r["done_s"] <= 2.0 else "NOT met"
    print(
        f"  ratio big/empty (medians): first trial done {r['done_s']:.2f}x (target <= 2x: {verdict}); "
        f"trial created {r['created_s']:.2f}x; wall {r['wall_s']:.2f}x"
    )


def per_trial(urls: dict[str, str], args: argparse.Namespace, tmp: Path) -> None:
    n = args.per_trial
    print(
        f"3. per-trial cost: one `hpctune worker --max-trials {n}`, {args.repeats} run(s) per side, "
        "alternating"
    )
    budget = max(args.big, args.small) + args.repeats * (n + 1) + 10  # never the limit
    configs = {
        side: write_config(tmp / f"{side}-per-trial.yaml", f"scale-{side}", budget, tmp / "runs")
        for side in ("small", "big")
    }
    runs: dict[str, list[WorkerRun]] = {"small": [], "big": []}
    for r in range(args.repeats):
        for side in ("small", "big"):
            log = tmp / f"per-trial-{side}-{r}.log"
            res = run_worker(urls[side], f"scale-{side}", configs[side], n, log, args.timeout)
            runs[side].append(res)
            print(
                f"  run {r + 1} {side:5s} cycle {res.cycle_s * 1000:7.1f} ms/trial  in trial "
                f"{res.in_trial_s * 1000:7.1f} ms  wall/n {res.wall_s / n * 1000:7.1f} ms",
                flush=True,
            )
    size = {"small": args.small, "big": args.big}
    for side in ("small", "big"):
        print(
            f"  median {side:5s} ({size[side]:6d} trials): "
            f"cycle {medians(runs[side], 'cycle_s') * 1000:7.1f} ms/trial"
            f"  in trial {medians(runs[side], 'in_trial_s') * 1000:7.1f} ms"
            f"  wall/n {medians(runs[side], 'wall_s') / n * 1000:7.1f} ms"
        )
    cycle = ratio(medians(runs["big"], "cycle_s"), medians(runs["small"], "cycle_s"))
    inner = ratio(medians(runs["big"], "in_trial_s"), medians(runs["small"], "in_trial_s"))
    print(f"  ratio {args.big}/{args.small} (medians): cycle {cycle:.2f}x, in trial {inner:.2f}x")


# ----------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers-list", default="8,32,64", help="part 1: worker counts (default 8,32,64)")
    parser.add_argument("--trials", type=int, default=400, help="part 1: trials per run (default 400)")
    parser.add_argument("--big", type=int, default=10000, help="parts 2-3: trials in the big study")
    parser.add_argument("--small", type=int, default=1000, help="part 3: trials in the small study")
    parser.add_argument("--per-trial", type=int, default=20, help="part 3: --max-trials of the worker")
    parser.add_argument("--repeats", type=int, default=3, help="parts 2-3: runs per side, alternating")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per command before a kill")
    parser.add_argument("--seed", type=int, default=0, help="for the built studies' x values")
    parser.add_argument("--skip-many", action="store_true", help="skip part 1")
    parser.add_argument("--skip-cold", action="store_true", help="skip part 2")
    parser.add_argument("--skip-overhead", action="store_true", help="skip part 3")
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="an existing PostgreSQL whose role may CREATE DATABASE (default: a throw-away one)",
    )
    args = parser.parse_args()
    workers_list = [int(w) for w in args.workers_list.split(",") if w.strip()]
    if any(not 1 <= w <= 256 for w in workers_list) or args.per_trial < 2 or args.repeats < 1:
        parser.error("workers in 1..256, --per-trial >= 2, --repeats >= 1")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    from _pg import pg_server  # benchmarks/ is sys.path[0] when run as a script

    print(
        f"scale: optuna {optuna.__version__}, {os.cpu_count()} CPUs, PostgreSQL "
        f"{'at --storage' if args.storage else 'throw-away (max_connections 300)'}; trivial objective "
        f"({STEPS} reports), TPE seed 0 (hpc_tune defaults), no pruner",
        flush=True,
    )
    ok = True
    timings: dict[str, float] = {}
    with (
        pg_server(args.storage, max_connections=300) as pg,
        tempfile.TemporaryDirectory(prefix="hpctune-bench-scale-") as tmp_name,
    ):
        tmp = Path(tmp_name)
        if not args.skip_many:
            t0 = time.perf_counter()
            print(f"1. many workers: `hpctune run --local --workers N`, {args.trials} trials, fresh database")
            for workers in workers_list:
                ok = many_workers(pg, workers, args.trials, tmp, args.timeout) and ok
            timings["part 1"] = time.perf_counter() - t0

        urls: dict[str, str] = {}
        if not (args.skip_cold and args.skip_overhead):
            t0 = time.perf_counter()
            print(f"building studies ({BUILT_STEPS} intermediate values per trial, SQL bulk insert):")
            sizes = {"big": args.big} if args.skip_overhead else {"small": args.small, "big": args.big}
            for side, n in sizes.items():
                urls[side] = pg.new_database(f"scale_{side}")
                built = build_study(urls[side], f"scale-{side}", n, args.seed)
                read = verify_study(urls[side], f"scale-{side}", n)
                print(
                    f"  {side:5s} {n:6d} trials: written in {built:6.2f} s; load_study().get_trials() "
                    f"returns all {n} intact (read in {read:5.2f} s)",
                    flush=True,
                )
            timings["build"] = time.perf_counter() - t0
        if not args.skip_cold:
            t0 = time.perf_counter()
            cold_start(pg, urls["big"], args, tmp)
            timings["part 2"] = time.perf_counter() - t0
        if not args.skip_overhead:
            t0 = time.perf_counter()
            per_trial(urls, args, tmp)
            timings["part 3"] = time.perf_counter() - t0

    print("time taken: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    if not args.skip_many:
        verdict = "OK" if ok else "NOT OK"
        print(f"part 1 correctness (exit 0, no FAIL, exactly {args.trials} finished): {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
