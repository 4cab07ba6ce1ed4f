"""Trials per device-hour with 1, 2, 4 (8) trials per array task sharing its devices, side by side in one run.

One array task is what is measured: ``hpctune worker -c CONFIG`` started as a task's script starts it, with
the task's allocation in its environment (``SLURM_CPUS_PER_TASK`` cores on a CPU; one GPU with ``--device
cuda``) and ``slurm.trials_per_gpu`` N, on a fresh study of the same ``--trials`` trials (random sampler, no
pruning, so every side trains the same amount). Its device-hours are the task's wall time, from the
process's start to its exit (start-up and the study's tail included: what SLURM bills), times its devices;
trials per device-hour is ``--trials`` over that. ``auto`` is measured beside the fixed sizes, with the N
it chose. Sides are interleaved round by round, so that a neighbour slowing the machine slows every side
of a round alike; each figure is the median over the rounds, each ratio (against N = 1) the median of the
per-round ratios. Usage: python benchmarks/gpu_hours.py [--device cpu|cuda] [--sizes 1,2,4,auto]
[--tasks digits] [--trials 12] [--epochs E] [--rounds 2] [--json out.json]
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
from pathlib import Path
from typing import Any

import optuna
import yaml

from hpc_tune import attrs
from hpc_tune.config import load_config
from hpc_tune.storage.store import open_store
from hpc_tune.storage.url import resolve_storage

REPO = Path(__file__).resolve().parent.parent
TASKS: dict[str, dict[str, Any]] = {
    "digits": {
        "task": "hpc_tune.tasks.digits",
        "epochs": 4,
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            "hidden": {"type": "int", "low": 32, "high": 128, "log": True},
        },
    },
    "shapes": {
        "task": "hpc_tune.tasks.shapes_cnn",
        "epochs": 2,
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            "channels": {"type": "int", "low": 8, "high": 32, "log": True},
        },
    },
    "resnet": {
        "task": str(REPO / "benchmarks" / "resnet_task.py"),
        "epochs": 1,
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True}},
    },
}


def write_config(
    folder: Path, task: str, size: int | str, trials: int, device: str, epochs: int | None
) -> Path:
    spec = TASKS[task]
    config = {
        "study": f"gpu-hours-{task}-{size}",
        "direction": "maximize",
        "metric": "val_acc",
        "task": spec["task"],
        "trials": trials,
        "epochs": epochs or spec["epochs"],
        "space": spec["space"],
        "sampler": {"type": "random", "seed": 0},
        "pruner": {"type": "none"},
        "train": {"batch_size": 64, "device": device, "compile": "off", "seed": 0},
        "slurm": {"trials_per_gpu": size},
        "results": str(folder / "runs"),
    }
    path = folder / "hpctune.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def task_environment(device: str, cores: int) -> dict[str, str]:
    """The allocation of one array task, as SLURM would describe it to its script."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCTUNE_", "SLURM_", "OMP_"))}
    env.update(SLURM_CPUS_PER_TASK=str(cores), PYTHONUNBUFFERED="1")
    env["CUDA_VISIBLE_DEVICES"] = "0" if device == "cuda" else ""
    return env


def run_task(
    task: str, size: int | str, trials: int, device: str, cores: int, epochs: int | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hpctune-gpu-hours-") as tmp:
        folder = Path(tmp)
        cfg = write_config(folder, task, size, trials, device, epochs)
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "hpc_tune", "worker", "-c", str(cfg)],
            env=task_environment(device, cores),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
            raise SystemExit(f"gpu_hours: {task} with trials_per_gpu {size} failed: {' | '.join(tail)}")
        study_dir = folder / "runs" / f"gpu-hours-{task}-{size}"
        records = [json.loads(p.read_text()) for p in (study_dir / "trials").glob("trial-*.json")]
        finished = [r for r in records if r.get("state") in ("COMPLETE", "PRUNED")]
        devices = 1 if device == "cuda" else cores
        loaded = load_config(cfg)
        store = open_store(resolve_storage(loaded.config.storage, loaded.study_dir))
        study = optuna.load_study(study_name=loaded.config.study, storage=store.storage)
        choice = study.user_attrs.get(attrs.TRIALS_PER_GPU)
        chosen = f"chose {choice.get('n')}: {choice.get('why')}" if isinstance(choice, dict) else None
        return {
            "wall_s": wall,
            "finished": len(finished),
            "device_hours": wall * devices / 3600,
            "trials_per_device_hour": len(finished) / (wall * devices / 3600),
            "chosen": chosen,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--sizes",
        default=None,
        help="comma-separated N (and 'auto'); default 1,2,4,auto on a CPU, 1,2,4,8,auto on a GPU",
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help=f"comma-separated, of {', '.join(TASKS)}; default "
        "digits on a CPU, digits,shapes,resnet on a GPU",
    )
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs per trial (default: the task's); longer trials weigh start-up and auto's measuring less",
    )
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="the task's CPU cores")
    parser.add_argument("--json", help="also write every figure to this file")
    args = parser.parse_args()
    gpu = args.device == "cuda"
    sizes: list[int | str] = [
        s if s == "auto" else int(s)
        for s in (args.sizes or ("1,2,4,8,auto" if gpu else "1,2,4,auto")).split(",")
    ]
    tasks = (args.tasks or ("digits,shapes,resnet" if gpu else "digits")).split(",")
    unit = "GPU-hour" if gpu else "CPU core-hour"
    print(
        f"one task of {'1 GPU' if gpu else f'{args.cores} CPU cores'}, {args.trials} trials per side, "
        f"{args.rounds} interleaved round(s); load average {os.getloadavg()[0]:.2f}"
    )
    figures: dict[str, Any] = {"device": args.device, "cores": args.cores, "trials": args.trials, "tasks": {}}
    for task in tasks:
        if task not in TASKS:
            parser.error(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
        runs: dict[str, list[dict[str, Any]]] = {str(s): [] for s in sizes}
        for _ in range(args.rounds):
            for size in sizes:
                runs[str(size)].append(
                    run_task(task, size, args.trials, args.device, args.cores, args.epochs)
                )
        base = runs[str(sizes[0])]
        print(f"\n== {task}: trials per {unit} (median of {args.rounds}), ratio to N = {sizes[0]}")
        table: dict[str, Any] = {}
        for size in sizes:
            mine = runs[str(size)]
            rate = statistics.median(r["trials_per_device_hour"] for r in mine)
            ratio = statistics.median(
                m["trials_per_device_hour"] / b["trials_per_device_hour"]
                for m, b in zip(mine, base, strict=True)
            )
            wall = statistics.median(r["wall_s"] for r in mine)
            chosen = next((r["chosen"] for r in mine if r["chosen"]), None)
            note = f"  ({chosen})" if size == "auto" and chosen else ""
            print(
                f"  N = {size!s:>4}: {rate:10.1f} trials per {unit}  {ratio:5.2f}x  task {wall:6.1f} s{note}"
            )
            table[str(size)] = {"trials_per_device_hour": rate, "ratio": ratio, "wall_s": wall, "runs": mine}
        figures["tasks"][task] = table
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
