"""Train every configuration of a grid once, per seed, and write its learning curves as a replay table.

Why a table: comparing search strategies needs many repetitions, and training is what makes a repetition
expensive. Training each (configuration, seed) once and replaying the recorded curves lets
``benchmarks/search_efficiency.py`` run hundreds of searches in minutes, on curves that are the built-in
tasks' real ones (hpctune's own engine, its cosine schedule, its data subsets) rather than a synthetic model.

Each (configuration, seed) is trained at three fidelities, because each strategy sees a different curve:
- ``full``: all training data, ``epochs`` epochs, cosine T_max = ``epochs``. A trial pruned at epoch e has
  seen exactly the first e values (the schedule does not know it will be pruned).
- ``short``: all data, ``epochs // 4`` epochs with T_max = ``epochs // 4`` (what ``fidelity.epochs`` runs: the
  engine always anneals over the epochs it really runs). The field notes' trap judges these.
- ``subset``: ``fidelity.data_fraction`` of the training data, ``epochs`` epochs (screening).

A curve shorter than its fidelity's epochs diverged: the engine raised NonFiniteLoss in the epoch after the
last recorded one (that epoch was run, so it is paid for in the replay).

Usage (from the repository root; single-threaded torch per process, ``--jobs`` processes):
    .venv/bin/python benchmarks/curves/make_tables.py digits [--jobs 2]
    .venv/bin/python benchmarks/curves/make_tables.py shapes [--jobs 2]
    .venv/bin/python benchmarks/curves/make_tables.py tabular [--jobs 2]    (and tabular_trap)
Interrupted runs resume from ``<out>.partial.jsonl``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gzip
import itertools
import json
import math
import multiprocessing
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the trap task (noisy_mlp.py) lives here, not in hpctune's built-in tasks
    sys.path.insert(0, str(HERE))
DECIMALS = 4  # val_acc on 360 (digits) or 600 (shapes) samples: 4 decimals keep every distinct value


@dataclass(frozen=True)
class TableSpec:
    """One task's grid. ``space`` is the continuous range a user would write in hpctune.yaml for it; the grid
    values lie inside it, so a replayed search can sample the range and be snapped to the grid."""

    task: str  # hpctune task module
    grid: dict[str, list[Any]]
    space: dict[str, dict[str, Any]]
    epochs: int
    seeds: list[int]
    data_fraction: float
    batch_size: int = 64
    chance: float = 0.1  # the metric of a model that learned nothing (a diverged seed's final value)
    extra: dict[str, Any] = field(default_factory=dict)  # fixed params, not tuned
    # The target: within this share of the best configuration's quality (search_efficiency.py's default
    # unless set). A space where one configuration in a hundred is that close needs a wider one, or every
    # search is judged on finding the single best cell of the grid within the noise of two seeds.
    tolerance: float | None = None

    @property
    def short_epochs(self) -> int:
        return max(1, self.epochs // 4)


TABLES: dict[str, TableSpec] = {
    # 8 x 3 x 3 x 2 = 144 configurations; lr spans 3.5 decades so that both optimizers have too-low and
    # too-high values (AdamW diverges or stalls at 0.1-0.3, nesterov SGD crawls at 1e-4).
    "digits": TableSpec(
        task="hpc_tune.tasks.digits",
        grid={
            "lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1],
            "hidden": [32, 128, 512],
            "weight_decay": [1e-5, 1e-3, 1e-1],
            "optimizer": ["adamw", "sgd"],
        },
        space={
            "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
            "hidden": {"type": "int", "low": 32, "high": 512, "log": True},
            "weight_decay": {"type": "float", "low": 1e-5, "high": 0.1, "log": True},
            "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
        },
        epochs=40,
        seeds=[0, 1, 2],
        data_fraction=0.25,
        chance=0.1,
    ),
    # 6 x 3 x 2 x 2 = 72 configurations. Measured on the 2-core CPU (one thread, another job running):
    # ~0.3 / 0.45 / 1.05 s per epoch at 8 / 16 / 32 channels, so the full table is ~45 CPU-minutes
    # (full 20 epochs + short 5 + subset 20 at a quarter of the data, 2 seeds).
    "shapes": TableSpec(
        task="hpc_tune.tasks.shapes_cnn",
        grid={
            "lr": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
            "channels": [8, 16, 32],
            "weight_decay": [1e-4, 1e-2],
            "optimizer": ["adamw", "sgd"],
        },
        space={
            "lr": {"type": "float", "low": 3e-4, "high": 0.1, "log": True},
            "channels": {"type": "int", "low": 8, "high": 32, "log": True},
            "weight_decay": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
        },
        epochs=20,
        seeds=[0, 1],
        data_fraction=0.25,
        chance=0.25,
    ),
    # 6 x 3 x 2 x 2 x 2 = 144 configurations of the trap task (noisy_mlp.py, beside this script): without
    # dropout the network leads for ~8 epochs and then memorises the flipped labels; with it, it starts
    # slower and finishes ~7 points ahead. ~4 s per 40-epoch run at 256 units on one thread.
    "noisy": TableSpec(
        task="noisy_mlp",
        grid={
            "lr": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
            "dropout": [0.0, 0.3, 0.6],
            "weight_decay": [1e-4, 1e-1],
            "hidden": [64, 256],
            "optimizer": ["adamw", "sgd"],
        },
        space={
            "lr": {"type": "float", "low": 3e-4, "high": 0.1, "log": True},
            "dropout": {"type": "float", "low": 0.0, "high": 0.6},
            "weight_decay": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
            "hidden": {"type": "int", "low": 64, "high": 256, "log": True},
            "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
        },
        epochs=40,
        seeds=[0, 1],
        data_fraction=0.25,
        chance=0.25,
    ),
}


def _tabular(label_noise: float, tolerance: float) -> TableSpec:
    """7 x 3 x 2 x 3 x 2 x 2 = 504 configurations of six parameters on the trap task's data, with
    ``label_noise`` of its labels flipped: a space where random search has to look (a few configurations
    within the target, not dozens). Batch 128: ~0.6 s (32 units, 1 layer) to ~1.7 s (128, 2) per 40-epoch
    run on one thread, so a table is ~35 CPU-minutes."""
    return TableSpec(
        task="noisy_mlp",
        grid={
            "lr": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
            "hidden": [32, 64, 128],
            "layers": [1, 2],
            "dropout": [0.0, 0.25, 0.5],
            "weight_decay": [1e-5, 1e-2],
            "optimizer": ["adamw", "sgd"],
        },
        space={
            "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
            "hidden": {"type": "int", "low": 32, "high": 128, "log": True},
            "layers": {"type": "int", "low": 1, "high": 2},
            "dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "weight_decay": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
            "optimizer": {"type": "categorical", "choices": ["adamw", "sgd"]},
        },
        epochs=40,
        seeds=[0, 1],
        data_fraction=0.25,
        batch_size=128,
        chance=0.25,
        extra={"label_noise": label_noise},
        tolerance=tolerance,
    )


# Clean labels (no trap: curves can be trusted early) and 20 % flipped (the late-winner trap), same space.
# The targets: within 0.5 % of the best, the clean table has 1 configuration of the 504 (0.45 points, the
# noise of the mean of two seeds on 2,000 validation samples); within 2 %, 5, and random search needs ~48
# trainings for one in the median. The noisy one has 8 within 1 % (~32 trainings; within 2 %, 17).
TABLES["tabular"] = _tabular(0.0, tolerance=0.02)
TABLES["tabular_trap"] = _tabular(0.2, tolerance=0.01)

FIDELITIES = ("full", "short", "subset")


def configurations(spec: TableSpec) -> list[dict[str, Any]]:
    names = list(spec.grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*spec.grid.values())]


def train_curve(
    task: str, params: dict[str, Any], seed: int, epochs: int, data_fraction: float, batch_size: int
) -> list[float]:
    """The per-epoch val_acc of one training run with hpctune's engine, cut where the loss went non-finite."""
    import importlib

    import torch

    from hpc_tune.config import FidelityConfig, TrainConfig
    from hpc_tune.errors import NonFiniteLoss
    from hpc_tune.train.engine import fit

    torch.set_num_threads(1)
    module = importlib.import_module(task)
    options = TrainConfig(device="cpu", seed=seed, batch_size=batch_size, compile="off")
    fidelity = None if data_fraction >= 1.0 else FidelityConfig(data_fraction=data_fraction)
    parts = module.build(dict(params), fidelity, seed, options)
    curve: list[float] = []
    # A NonFiniteLoss ends the curve: what came before is what a real trial reported before it failed.
    with contextlib.suppress(NonFiniteLoss):
        fit(
            parts,
            epochs=epochs,
            options=options,
            on_epoch=lambda record: curve.append(round(float(record["val_acc"]), DECIMALS)),
        )
    return curve


def _job(args: tuple[str, int, dict[str, Any], str, int, int, float, int]) -> dict[str, Any]:
    task, index, params, fidelity, seed, epochs, fraction, batch_size = args
    start = time.perf_counter()
    curve = train_curve(task, params, seed, epochs, fraction, batch_size)
    return {
        "config": index,
        "fidelity": fidelity,
        "seed": seed,
        "curve": curve,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _jobs(spec: TableSpec, configs: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    plan = {
        "full": (spec.epochs, 1.0),
        "short": (spec.short_epochs, 1.0),
        "subset": (spec.epochs, spec.data_fraction),
    }
    return [
        (spec.task, index, {**spec.extra, **params}, fidelity, seed, *plan[fidelity], spec.batch_size)
        for index, params in enumerate(configs)
        for seed in spec.seeds
        for fidelity in FIDELITIES
    ]


def make_table(name: str, out: Path, jobs: int) -> dict[str, Any]:
    spec = TABLES[name]
    configs = configurations(spec)
    partial = out.with_suffix(out.suffix + ".partial.jsonl")
    done: dict[tuple[int, str, int], dict[str, Any]] = {}
    if partial.is_file():
        for line in partial.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[(row["config"], row["fidelity"], row["seed"])] = row
    todo = [j for j in _jobs(spec, configs) if (j[1], j[3], j[4]) not in done]
    print(
        f"{name}: {len(configs)} configurations x {len(spec.seeds)} seeds x {len(FIDELITIES)} fidelities; "
        f"{len(done)} runs already done, {len(todo)} to go with {jobs} processes",
        flush=True,
    )
    start = time.perf_counter()
    with partial.open("a") as sink, multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for k, row in enumerate(pool.imap_unordered(_job, todo, chunksize=1), 1):
            done[(row["config"], row["fidelity"], row["seed"])] = row
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            if k % 25 == 0 or k == len(todo):
                elapsed = time.perf_counter() - start
                print(
                    f"  {k}/{len(todo)} runs, {elapsed:.0f} s, ~{elapsed / k * (len(todo) - k):.0f} s left",
                    flush=True,
                )
    import torch

    table = {
        "task": spec.task,
        "metric": "val_acc",
        "direction": "maximize",
        "epochs": spec.epochs,
        "short_epochs": spec.short_epochs,
        "data_fraction": spec.data_fraction,
        "seeds": spec.seeds,
        "chance": spec.chance,
        "grid": spec.grid,
        "space": spec.space,
        "fixed_params": spec.extra,
        **({"tolerance": spec.tolerance} if spec.tolerance is not None else {}),
        "made": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": "python benchmarks/curves/make_tables.py " + " ".join(sys.argv[1:]),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, 1 torch thread per process",
            "train": {
                "batch_size": spec.batch_size,
                "schedule": "cosine (T_max = epochs run)",
                "device": "cpu",
                "engine": "hpc_tune.train.engine.fit",
            },
            "cpu_seconds": round(sum(r["seconds"] for r in done.values()), 1),
        },
        "configs": [
            {
                "params": params,
                **{
                    fidelity: [done[(index, fidelity, seed)]["curve"] for seed in spec.seeds]
                    for fidelity in FIDELITIES
                },
            }
            for index, params in enumerate(configs)
        ],
    }
    with gzip.open(out, "wt", encoding="utf-8", compresslevel=9) as handle:
        json.dump(table, handle, separators=(",", ":"))
    partial.unlink()
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("table", choices=sorted(TABLES))
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)))
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/curves/<table>.json.gz")
    args = parser.parse_args(argv)
    out = args.out or HERE / f"{args.table}.json.gz"
    start = time.perf_counter()
    table = make_table(args.table, out, args.jobs)
    finals = sorted(
        (
            sum(c[-1] if len(c) == table["epochs"] else table["chance"] for c in cfg["full"])
            / len(cfg["full"]),
            json.dumps(cfg["params"]),
        )
        for cfg in table["configs"]
    )
    print(
        f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB) in {time.perf_counter() - start:.0f} s "
        f"({table['made']['cpu_seconds']:.0f} CPU-s of training)"
    )
    for value, params in finals[-5:][::-1]:
        print(f"  {value:.4f}  {params}")
    if not math.isfinite(finals[-1][0]):
        raise SystemExit("no finite result")


if __name__ == "__main__":
    main()
