"""The embedded default storage: Optuna journal file vs SQLite, with PostgreSQL for reference, side by side.

N processes (default 4) x M trials each (default 100) of a trivial objective (benchmarks/orchestration.py's:
5 reports, returns x) on one shared study per backend:
  journal:  optuna.storages.JournalStorage(JournalFileBackend(<tmp>/journal.log))  (what hpc_tune embeds)
  sqlite:   sqlite:///<tmp>/study.db
  postgres: a fresh database on a throw-away server (benchmarks/_pg.py) or on --storage URL
Each process runs an ask / objective / tell loop and counts the storage errors it gets (a "lock" error is one
whose message mentions a lock, e.g. SQLite's "database is locked"); a trial that raised is not retried.
Wall time runs from the start of the processes to the last exit; the study is created before the clock
starts. Backends are run round-robin --repeats times (default 3) and every run and the median are printed,
with each backend's trials/s relative to the journal's.

    .venv/bin/python benchmarks/storage_backends.py [--processes 4] [--trials 100] [--repeats 3]
        [--sampler random|tpe] [--backends journal,sqlite,postgres] [--storage URL]
"""

from __future__ import annotations

import argparse
import json
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
STUDY = "bench-storage"
BACKENDS = ("journal", "sqlite", "postgres")


def open_storage(backend: str, target: str) -> optuna.storages.BaseStorage:
    if backend == "journal":
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(target))
    return optuna.storages.RDBStorage(target)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def child(backend: str, index: int, n_trials: int, sampler: str) -> None:
    from orchestration import objective  # benchmarks/ is sys.path[0] when run as a script

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    errors = {"lock": 0, "other": 0}
    first_error = ""
    storage = open_storage(backend, os.environ["BENCH_TARGET"])
    study = optuna.load_study(study_name=STUDY, storage=storage, sampler=make_sampler(sampler, index))
    done = 0
    for _ in range(n_trials):
        try:
            trial = study.ask()
            study.tell(trial, objective(trial))
            done += 1
        except Exception as exc:  # counted, not retried: the point is how often it happens
            kind = "lock" if "lock" in str(exc).lower() else "other"
            errors[kind] += 1
            first_error = first_error or f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    print(json.dumps({"done": done, "errors": errors, "first_error": first_error}))


@dataclass
class RunResult:
    backend: str
    wall_s: float
    finished: int
    lock_errors: int
    other_errors: int
    first_error: str

    @property
    def rate(self) -> float:
        return self.finished / self.wall_s


def run_backend(backend: str, target: str, processes: int, trials: int, sampler: str) -> RunResult:
    setup = open_storage(backend, target)
    optuna.create_study(study_name=STUDY, storage=setup, direction="minimize")
    if isinstance(setup, optuna.storages.RDBStorage):
        setup.engine.dispose()
    del setup
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", BENCH_TARGET=target)
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE),
                "--child",
                backend,
                "--index",
                str(i),
                "--trials",
                str(trials),
                "--sampler",
                sampler,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        for i in range(processes)
    ]
    outputs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    lock = other = 0
    first = ""
    for proc, (out, err) in zip(procs, outputs, strict=True):
        lines = out.decode().strip().splitlines()
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"{backend} child exited {proc.returncode}:\n{err.decode()[-2000:]}")
        report = json.loads(lines[-1])
        lock += report["errors"]["lock"]
        other += report["errors"]["other"]
        first = first or report["first_error"]
    storage = open_storage(backend, target)
    finished = sum(
        1
        for t in optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)
        if t.state.is_finished()
    )
    if isinstance(storage, optuna.storages.RDBStorage):
        storage.engine.dispose()
    return RunResult(backend, wall, finished, lock, other, first)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--trials", type=int, default=100, help="trials per process")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--sampler",
        choices=("random", "tpe"),
        default="random",
        help="random (default) isolates the storage; tpe reads every trial per ask",
    )
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="an existing PostgreSQL whose role may CREATE DATABASE (default: a throw-away one)",
    )
    parser.add_argument("--child", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.index, args.trials, args.sampler)
        return 0

    from _pg import pg_server

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {BACKENDS}")
    print(
        f"storage backends: {args.processes} processes x {args.trials} trials, trivial objective, "
        f"{args.sampler} sampler, optuna {optuna.__version__}, {os.cpu_count()} CPUs"
    )
    results: list[RunResult] = []
    needs_pg = "postgres" in backends
    with tempfile.TemporaryDirectory(prefix="hpctune-bench-storage-") as tmp:
        pg_ctx = pg_server(args.storage) if needs_pg else None
        pg = pg_ctx.__enter__() if pg_ctx is not None else None
        try:
            for r in range(args.repeats):
                for backend in backends:
                    if backend == "journal":
                        target = str(Path(tmp) / f"journal-{r}.log")
                    elif backend == "sqlite":
                        target = f"sqlite:///{Path(tmp) / f'study-{r}.db'}"
                    else:
                        assert pg is not None
                        target = pg.new_database("storage")
                    res = run_backend(backend, target, args.processes, args.trials, args.sampler)
                    results.append(res)
                    note = f"  first error: {res.first_error}" if res.first_error else ""
                    print(
                        f"  run {r + 1} {backend:8s} wall {res.wall_s:6.2f} s  {res.rate:6.1f} trials/s  "
                        f"finished {res.finished}/{args.processes * args.trials}  "
                        f"lock errors {res.lock_errors}  other errors {res.other_errors}{note}",
                        flush=True,
                    )
        finally:
            if pg_ctx is not None:
                pg_ctx.__exit__(None, None, None)

    print("median:")
    medians = {b: statistics.median(x.rate for x in results if x.backend == b) for b in backends}
    for b in backends:
        runs = [x for x in results if x.backend == b]
        rates = ", ".join(f"{x.rate:.1f}" for x in runs)
        rel = f"  ({medians[b] / medians['journal']:.2f}x journal)" if "journal" in medians else ""
        lock, other = sum(x.lock_errors for x in runs), sum(x.other_errors for x in runs)
        print(
            f"  {b:8s} {medians[b]:6.1f} trials/s (runs: {rates}){rel}  lock errors {lock}  "
            f"other errors {other}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
