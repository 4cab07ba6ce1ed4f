"""Start-up of ``hpctune worker`` on a command task: as it is now vs with what the old worker imported.

Every array task of a study starts a worker, and a command or objective worker used to pay for libraries it
never uses: at commit 2573c50 ``python -X importtime -m hpc_tune worker`` on a command task imported torch
(``limit_threads`` called ``torch.set_num_threads``, ~1.6 s) and scipy.stats (the reliable pruner's
``spearmanr``, imported with the policy, ~1.0 s); matplotlib and scikit-learn were installed beside them but
not imported. The sides, each one worker process of one trial on its own fresh embedded study:
  now:  ``python -m hpc_tune worker -c <config>`` (through runpy, the same as ``-m``);
  old:  the same worker with ``import torch, scipy.stats`` forced first: what the old start-up cost;
  all:  the same with matplotlib.pyplot and sklearn forced too: every heavy library of the old install, an
        upper bound (only a worker of the engine, or a collector, imports them).
The task is a tiny Python script printing one JSON epoch; the config has one trial of one epoch, no pruner.
``SLURM_CPUS_PER_TASK=1`` and no ``OMP_NUM_THREADS``, as on a compute node. Two figures per run: start-up,
from the spawn of the worker to the first line of the trial's script (whose own interpreter start, ~20 ms,
is in it on every side), and the whole worker, spawn to exit. Sides are interleaved round by round, in an
order that rotates each round, after one warm-up round that is not counted (cold page cache); medians,
spread (min-max) and the ratio of the medians to ``now`` are printed, and the heavy modules each side ended
with, which shows that ``now`` imported none.

    .venv/bin/python benchmarks/worker_startup.py [--rounds 5] [--sides now,old,all]
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
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
HEAVY = ("torch", "scipy", "matplotlib", "sklearn")
# side -> modules imported before the worker starts
SIDES: dict[str, tuple[str, ...]] = {
    "now": (),
    "old": ("torch", "scipy.stats"),
    "all": ("torch", "scipy.stats", "matplotlib.pyplot", "sklearn"),
}

# argv: out.json, forced imports (comma-separated), then the hpctune arguments. The finally block runs after
# click's SystemExit, so the list of heavy modules is the worker's own at its end.
WRAPPER = """
import importlib, json, runpy, sys
out, forced = sys.argv.pop(1), sys.argv.pop(1)
for name in filter(None, forced.split(",")):
    importlib.import_module(name)
try:
    runpy.run_module("hpc_tune", run_name="__main__", alter_sys=True)
finally:
    heavy = sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))
    open(out, "w").write(json.dumps({"heavy": heavy}))
""".replace("HEAVY", repr(HEAVY))

# The trial: the time it started (wall clock: the worker and the script are two processes), one epoch.
SCRIPT = """
import time
started = time.time()
import json, sys
open(sys.argv[1], "w").write(repr(started))
print(json.dumps({"epoch": 1, "val_acc": 0.5}))
"""


@dataclass
class Side:
    name: str
    startup: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    heavy: set[str] = field(default_factory=set)


def write_config(folder: Path, script: Path, started: Path) -> Path:
    config = {
        "study": "bench-startup",
        "direction": "maximize",
        "metric": "val_acc",
        "task": {"command": [sys.executable, str(script), str(started)]},
        "trials": 1,
        "epochs": 1,
        "space": {"lr": {"type": "float", "low": 1e-3, "high": 0.1, "log": True}},
        "pruner": {"type": "none"},
        "results": str(folder / "runs"),
    }
    path = folder / "hpctune.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_once(side: str, folder: Path, script: Path) -> tuple[float, float, list[str]]:
    """One worker of one trial on a fresh study in ``folder``: (start-up s, total s, heavy modules)."""
    folder.mkdir(parents=True)
    started, out = folder / "started.txt", folder / "modules.json"
    config = write_config(folder, script, started)
    env = dict(os.environ, SLURM_CPUS_PER_TASK="1", PYTHONUNBUFFERED="1")
    env.pop("OMP_NUM_THREADS", None)
    env.pop("HPCTUNE_STORAGE", None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-c", WRAPPER, str(out), ",".join(SIDES[side]), "worker", "-c", str(config)]
    spawn = time.time()
    proc = subprocess.run(argv, env=env, cwd=folder, capture_output=True, text=True)
    end = time.time()
    if proc.returncode != 0 or not started.exists():
        tail = proc.stdout[-1500:] + proc.stderr[-1500:]
        raise SystemExit(f"{side}: worker exited {proc.returncode}\n{tail}")
    heavy = json.loads(out.read_text())["heavy"]
    return float(started.read_text()) - spawn, end - spawn, heavy


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sides", default=",".join(SIDES), help=f"from {','.join(SIDES)}; now is the base")
    args = parser.parse_args()
    names = [s.strip() for s in args.sides.split(",") if s.strip()]
    unknown = sorted(set(names) - set(SIDES))
    if unknown or "now" not in names:
        parser.error(f"sides must include now and come from {tuple(SIDES)}; got {names}")
    sides = {name: Side(name) for name in names}
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(
        f"worker start-up: command task, 1 trial, embedded store; {args.rounds} rounds + 1 warm-up, "
        f"{os.cpu_count()} CPUs, load average {load:.1f}, Python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory(prefix="hpctune-bench-startup-") as tmp:
        script = Path(tmp) / "train.py"
        script.write_text(SCRIPT)
        for r in range(args.rounds + 1):
            order = names[r % len(names) :] + names[: r % len(names)]
            line = []
            for name in order:
                startup, total, heavy = run_once(name, Path(tmp) / f"{name}-{r}", script)
                if r == 0:
                    continue  # warm-up: page cache, byte-compiled files
                sides[name].startup.append(startup)
                sides[name].total.append(total)
                sides[name].heavy.update(heavy)
                line.append(f"{name} {startup:5.2f} s / {total:5.2f} s")
            label = "warm-up" if r == 0 else f"round {r}"
            print(f"  {label:8s} " + ("  ".join(line) if line else "(not counted)"), flush=True)

    base = sides["now"]
    print("median start-up (spawn -> trial script) and whole worker (spawn -> exit), spread min-max:")
    for side in sides.values():
        up, total = statistics.median(side.startup), statistics.median(side.total)
        ratio = f"{up / statistics.median(base.startup):.2f}x / {total / statistics.median(base.total):.2f}x"
        imported = ", ".join(sorted(side.heavy)) or "none"
        print(
            f"  {side.name:4s} start-up {up:5.2f} s ({spread(side.startup)})  whole {total:5.2f} s "
            f"({spread(side.total)})  vs now {ratio}  heavy modules imported: {imported}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
