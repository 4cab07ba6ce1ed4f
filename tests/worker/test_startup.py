"""What a command task's worker imports: none of the engine's or the report's heavy libraries.

A command or objective worker runs in the user's own training environment, which a core install of hpctune
leaves without torch, scikit-learn or matplotlib; and on a cluster every array task pays its start-up. So a
real ``hpctune worker`` process runs a command trial here, and the modules it imported are read from inside
that process once the worker has finished (the command script is a child process and cannot see them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from optuna.trial import TrialState

from tests.conftest import REPO, worker_env, write_config
from tests.worker.test_loop import load

# Imported by the engine (torch, scikit-learn) and the report (matplotlib), or costly at import (scipy.stats,
# ~0.8 s): none of them may be imported by a command worker, neither at start-up nor while it runs a trial.
HEAVY = ("torch", "sklearn", "matplotlib", "scipy")

# ``python -m hpc_tune ...`` with a look at sys.modules at the very end: runpy runs hpc_tune/__main__.py as
# ``-m`` does, and the finally block runs after click's SystemExit, so the list holds every import the worker
# made, lazy ones during the trial included.
WRAPPER = """
import json, runpy, sys
out = sys.argv.pop(1)
try:
    runpy.run_module("hpc_tune", run_name="__main__", alter_sys=True)
finally:
    with open(out, "w") as f:
        json.dump({"modules": sorted(sys.modules), "hpc_tune": sys.modules["hpc_tune"].__file__}, f)
"""

# The trial: one JSON line for its one epoch, and the thread count it was given, for the test to read.
SCRIPT = """
import json, os, sys
open(sys.argv[2], "w").write(os.environ.get("OMP_NUM_THREADS", ""))
print(json.dumps({"epoch": 1, "val_acc": float(sys.argv[1])}))
"""


def test_command_worker_never_imports_torch_matplotlib_sklearn_or_scipy(tmp_path: Path) -> None:
    train = tmp_path / "train.py"
    train.write_text(SCRIPT)
    threads_seen = tmp_path / "threads.txt"
    cfg = write_config(
        tmp_path,
        study="t-startup",
        task={"command": [sys.executable, str(train), "{lr}", str(threads_seen)]},
        space={"lr": {"type": "float", "low": 0.1, "high": 0.9}},
        trials=2,
        epochs=1,
        train={"seed": 3},  # the digits defaults of write_config (batch size, compile) mean nothing here
    )
    env = worker_env(SLURM_CPUS_PER_TASK="2")
    env.pop("OMP_NUM_THREADS")  # as on a compute node: the worker derives it from SLURM_CPUS_PER_TASK
    # This checkout's hpc_tune, whatever the venv has installed in editable mode.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    seen = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, str(seen), "worker", "-c", str(cfg)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    study, _ = load(cfg)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.COMPLETE]

    report = json.loads(seen.read_text())
    assert Path(report["hpc_tune"]).resolve().is_relative_to(REPO)
    modules = set(report["modules"])
    # The list is the worker's own: it ran the command kind on Optuna.
    assert {"optuna", "hpc_tune.worker.loop", "hpc_tune.worker.kinds.command"} <= modules
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert heavy == [], f"a command worker imported {heavy[:10]}"
    # The thread limit reached the command without torch: limit_threads sets OMP_NUM_THREADS.
    assert threads_seen.read_text() == "2"
