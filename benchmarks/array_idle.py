"""Idle allocated time of a real array: ``hpctune submit --array 0-3`` of the digits task on the local SLURM
(scripts/slurm-local.sh), on the study server (``storage: server``), then ``hpctune collect``'s hours line.

What SLURM bills while no trial runs is what this measures: each worker's timeline, from its process's start
(interpreter, imports, connecting to a server that may still be starting) through waiting for a trial and
the study's tail to its exit, against the hours it held. The figures are those ``collect`` prints and writes
to summary.json (``device_hours.allocated``, ``idle``, ``idle_share``); this script only submits, waits for
the jobs to leave the queue, and reads them back. Longer trials weigh start-up less, so it takes
``--trials`` and ``--epochs``. Run it as an ordinary user: the study server's PostgreSQL refuses root (as
root: ``runuser -u USER -- .venv/bin/python benchmarks/array_idle.py``). Usage: python
benchmarks/array_idle.py [--tasks 4] [--trials 40] [--epochs 24] [--dir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from hpc_tune.config import load_config
from hpc_tune.slurm import job_name_for, squeue_study
from hpc_tune.storage.server.service import server_job_name

REPO = Path(__file__).resolve().parent.parent


def write_config(folder: Path, tasks: int, trials: int, epochs: int) -> Path:
    config = {
        "study": f"array-idle-{folder.name[-6:].lower().replace('_', '-')}",
        "direction": "maximize",
        "metric": "val_acc",
        "task": "hpc_tune.tasks.digits",
        "storage": "server",
        "trials": trials,
        "epochs": epochs,
        "space": {
            "lr": {"type": "float", "low": 1e-3, "high": 3e-2, "log": True},
            "hidden": {"type": "int", "low": 32, "high": 128, "log": True},
        },
        "pruner": {"type": "none"},  # every trial trains as long: the idle share is not the pruner's
        "train": {"batch_size": 64, "compile": "off", "seed": 0},
        "slurm": {
            "cpus_per_task": 1,
            "mem": "400M",
            "time": "60",
            "setup": [f"source {shlex.quote(str(Path(sys.executable).parent / 'activate'))}"],
            "server": {"time": "90", "mem": "500M"},
        },
    }
    path = folder / "hpctune.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def hpctune(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPCTUNE_", "PG", "SLURM_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "hpc_tune", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def wait_for_jobs(study: str, timeout: float) -> float:
    """Seconds until no job of the study (array, collector, and the server, named apart) is pending or
    running any more: a collect while the server winds down would find it going away under it."""
    started = time.monotonic()
    names = (job_name_for(study), server_job_name(study))
    while time.monotonic() - started < timeout:
        if not [t for name in names for t in squeue_study(name) if t.active]:
            return time.monotonic() - started
        time.sleep(5)  # polling the queue, not standing in for a condition
    raise SystemExit(f"array_idle: the jobs of {study} were still queued after {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=4, help="array tasks (one worker each)")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=24)
    parser.add_argument("--dir", help="the study's folder (default: a new one under $HOME, kept)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if os.geteuid() == 0:
        raise SystemExit("array_idle: run it as an ordinary user (the server's PostgreSQL refuses root)")
    if shutil.which("sbatch") is None:
        raise SystemExit("array_idle: no sbatch on PATH (start the local SLURM: bash scripts/slurm-local.sh)")
    home = Path.home()
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="hpctune-array-idle-", dir=home))
    folder.mkdir(parents=True, exist_ok=True)
    cfg = write_config(folder, args.tasks, args.trials, args.epochs)
    study = load_config(cfg).config.study
    print(
        f"{args.tasks} array tasks of the digits task, {args.trials} trials of {args.epochs} epochs, "
        f"storage: server, in {folder}; load average {os.getloadavg()[0]:.2f}"
    )
    submitted = hpctune("submit", "-c", str(cfg), "--array", f"0-{args.tasks - 1}", cwd=folder)
    if submitted.returncode != 0:
        raise SystemExit(f"array_idle: submit failed: {submitted.stderr.strip() or submitted.stdout.strip()}")
    waited = wait_for_jobs(study, args.timeout)
    collected = hpctune("collect", "-c", str(cfg), cwd=folder)
    if collected.returncode != 0:
        raise SystemExit(f"array_idle: collect failed: {collected.stderr.strip()}")
    hours_line = next((ln for ln in collected.stdout.splitlines() if "workers held" in ln), None)
    summary = json.loads((load_config(cfg).study_dir / "summary.json").read_text())
    hours: dict[str, Any] = summary.get("device_hours") or {}
    print(f"jobs done after {waited:.0f} s; budget {summary.get('budget')}")
    print(f"collect: {hours_line.strip() if hours_line else '(no hours line)'}")
    if hours.get("allocated"):
        idle = hours.get("idle") or {}
        parts = ", ".join(f"{k} {v / hours['allocated']:.1%}" for k, v in idle.items())
        held = hours["allocated"] * 3600
        print(f"idle {hours['idle_share']:.1%} of {held:.0f} core-seconds held ({parts})")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"tasks": args.tasks, "trials": args.trials, "epochs": args.epochs, **hours}, indent=2)
        )


if __name__ == "__main__":
    main()
