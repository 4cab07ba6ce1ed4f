"""Orchestration overhead: plain Optuna ``study.optimize`` vs ``hpctune worker``, side by side.

Both sides: the same trivial objective (below: reports x*step for steps 1..5, returns x), N processes
(default 4) sharing one study of T trials (default 400) in the same PostgreSQL (a fresh database per run),
the same TPE settings (seed+worker index, multivariate, constant liar, 10 startup trials), no pruner,
OMP_NUM_THREADS=1.
  plain:   each process runs optuna.create_study(load_if_exists=True).optimize(objective, n_trials=T/N);
  hpctune: each process runs ``python -m hpc_tune worker`` on a config with ``trials: T`` and
           ``task: <this file>:objective`` (heartbeat settings default), which must end with exactly T
           finished trials.
Wall time runs from the start of the processes to the last exit. It is split, from the trials' own
timestamps, into startup (spawn -> first trial started), loop (first start -> last finish) and tail (last
finish -> last exit). Sides alternate (plain, hpctune, plain, hpctune, ...); every run and the medians are
printed with the ratio hpctune/plain (target >= 0.9).

    .venv/bin/python benchmarks/orchestration.py [--trials 400] [--workers 4] [--repeats 2] [--storage URL]

Without --storage a throw-away PostgreSQL is started (benchmarks/_pg.py); with it, the URL's role must be
allowed to CREATE DATABASE. The storage URL reaches the children via the environment, never argv.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
STEPS = 5
STUDY = "bench-orchestration"
TPE = {"multivariate": True, "constant_liar": True, "n_startup_trials": 10}


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -10.0, 10.0)
    for step in range(1, STEPS + 1):
        trial.report(x * step, step)
    return x


# ----------------------------------------------------------------------------------------------- children
def plain_child(index: int, n_trials: int, seed: int) -> None:
    """One plain-Optuna process: what a user without hpc_tune would write."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=STUDY,
        storage=os.environ["BENCH_STORAGE"],
        sampler=optuna.samplers.TPESampler(seed=seed + index, **TPE),
        pruner=optuna.pruners.NopPruner(),
        direction="minimize",
        load_if_exists=True,
    )
    study.optimize(objective, n_trials=n_trials)


def write_config(directory: Path, trials: int, seed: int) -> Path:
    import yaml

    config = {
        "study": STUDY,
        "direction": "minimize",
        "metric": "value",
        "task": f"{HERE}:objective",
        "trials": trials,
        "epochs": STEPS,
        "space": {"x": {"type": "float", "low": -10.0, "high": 10.0}},
        "sampler": {"type": "tpe", "seed": seed, **TPE},
        "pruner": {"type": "none"},
        "results": str(directory / "runs"),
    }
    path = directory / "hpctune.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ----------------------------------------------------------------------------------------------- one run
@dataclass
class RunResult:
    side: str
    wall_s: float
    finished: int
    total: int
    startup_s: float
    loop_s: float
    tail_s: float

    @property
    def rate(self) -> float:
        return self.finished / self.wall_s


def shares(trials: int, workers: int) -> list[int]:
    return [trials // workers + (1 if i < trials % workers else 0) for i in range(workers)]


def run_side(side: str, url: str, trials: int, workers: int, seed: int, workdir: Path) -> RunResult:
    # Optuna's tables are created before the clock starts, for both sides alike (N processes racing to
    # create them on an empty database is a separate matter, handled in hpc_tune/storage/store.py).
    optuna.storages.RDBStorage(url).engine.dispose()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", BENCH_STORAGE=url, HPCTUNE_STORAGE=url)
    env.pop("HPCTUNE_FAULT", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    if side == "plain":
        cmds = [
            [
                sys.executable,
                str(HERE),
                "--plain-child",
                str(i),
                "--plain-trials",
                str(n),
                "--seed",
                str(seed),
            ]
            for i, n in enumerate(shares(trials, workers))
        ]
    else:
        config = write_config(workdir, trials, seed)
        cmds = [
            [sys.executable, "-m", "hpc_tune", "worker", "-c", str(config), "--worker-index", str(i)]
            for i in range(workers)
        ]
    logs = [workdir / f"{side}-{i}.log" for i in range(workers)]
    start_wall = time.time()
    start = time.perf_counter()
    procs = []
    for cmd, log in zip(cmds, logs, strict=True):
        with open(log, "wb") as out:
            procs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO))
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    if any(codes):
        bad = codes.index(next(c for c in codes if c))
        tail = logs[bad].read_text(errors="replace")[-2000:]
        raise SystemExit(f"{side} worker {bad} exited {codes[bad]}:\n{tail}")

    storage = optuna.storages.RDBStorage(url)
    study = optuna.load_study(study_name=STUDY, storage=storage)
    all_trials = study.get_trials(deepcopy=False)
    storage.engine.dispose()
    done = [t for t in all_trials if t.state.is_finished()]
    first = min(t.datetime_start.timestamp() for t in done if t.datetime_start)
    last = max(t.datetime_complete.timestamp() for t in done if t.datetime_complete)
    return RunResult(
        side, wall, len(done), len(all_trials), first - start_wall, last - first, start_wall + wall - last
    )


# ----------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="runs per side, alternating (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="an existing PostgreSQL whose role may CREATE DATABASE (default: a throw-away one)",
    )
    parser.add_argument("--plain-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--plain-trials", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_child is not None:
        plain_child(args.plain_child, args.plain_trials, args.seed)
        return 0

    from _pg import pg_server  # benchmarks/ is sys.path[0] when run as a script

    print(
        f"orchestration: {args.workers} processes, {args.trials} trials, "
        f"trivial objective ({STEPS} reports), TPE {TPE}, PostgreSQL, "
        f"optuna {optuna.__version__}, {os.cpu_count()} CPUs"
    )
    results: list[RunResult] = []
    ok = True
    with pg_server(args.storage) as pg, tempfile.TemporaryDirectory(prefix="hpctune-bench-orch-") as tmp:
        for r in range(args.repeats):
            for side in ("plain", "hpctune"):
                workdir = Path(tmp) / f"{side}-{r}"
                workdir.mkdir()
                res = run_side(side, pg.new_database(side), args.trials, args.workers, args.seed, workdir)
                results.append(res)
                check = ""
                if side == "hpctune":
                    exact = res.finished == args.trials
                    ok = ok and exact
                    check = f"  finished == {args.trials}: {'OK' if exact else 'NO'}"
                print(
                    f"  run {r + 1} {side:8s} wall {res.wall_s:6.2f} s  {res.rate:6.1f} trials/s  "
                    f"finished {res.finished}/{res.total}  (startup {res.startup_s:5.2f} s, "
                    f"loop {res.loop_s:5.2f} s, tail {res.tail_s:5.2f} s){check}",
                    flush=True,
                )

    def med(side: str, attr: str) -> float:
        return statistics.median(getattr(x, attr) for x in results if x.side == side)

    print("median:")
    for side in ("plain", "hpctune"):
        print(
            f"  {side:8s} wall {med(side, 'wall_s'):6.2f} s  {med(side, 'rate'):6.1f} trials/s  "
            f"(startup {med(side, 'startup_s'):5.2f} s, loop {med(side, 'loop_s'):5.2f} s, "
            f"tail {med(side, 'tail_s'):5.2f} s)"
        )
    plain_finished = [x.finished for x in results if x.side == "plain"]
    ratio = med("hpctune", "rate") / med("plain", "rate")
    loop_ratio = med("plain", "loop_s") / med("hpctune", "loop_s")
    print(
        f"ratio hpctune/plain (trials/s, median): {ratio:.2f}x  (target >= 0.9: "
        f"{'met' if ratio >= 0.9 else 'NOT met'}); loop only: {loop_ratio:.2f}x"
    )
    print(
        f"hpctune finished exactly {args.trials} in every run: {'yes' if ok else 'NO'}; "
        f"plain Optuna finished: {plain_finished}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
