"""CUDA MPS for the workers of one array task that share its GPU(s) (``slurm.trials_per_gpu``).

Without MPS, processes on one GPU are time-sliced: each kernel of one waits for the other's time slice, so
small models (whose kernels leave most of the GPU's SMs idle) gain little from sharing. An MPS daemon runs
their kernels side by side. It is per task: its pipe and log folders are a temporary folder of the task's own
(``CUDA_MPS_PIPE_DIRECTORY`` / ``CUDA_MPS_LOG_DIRECTORY``, given to the workers), so two tasks on one node
never share a daemon, and it is quit when the task's workers are done. Off when the task holds no GPU, when
``nvidia-cuda-mps-control`` is not on PATH, or when the environment already names an MPS daemon (a site's).

No GPU was lent to this project's tests: only the calls (start, the variables, quit) are tested, with a
stand-in for the binary.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hpc_tune.slurm.allocation import Devices

log = logging.getLogger(__name__)

MPS_CONTROL = "nvidia-cuda-mps-control"
PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
LOG_ENV = "CUDA_MPS_LOG_DIRECTORY"
_TIMEOUT_S = 30


@dataclass
class Mps:
    """The task's MPS daemon, or why there is none (``env`` empty)."""

    state: str  # "on (...)" or "off (why)": logged, and said by the supervisor's last line
    env: dict[str, str] = field(default_factory=dict)  # what the workers get
    folder: Path | None = None
    control: str | None = None

    @property
    def on(self) -> bool:
        return bool(self.env)

    def quit(self, environ: Mapping[str, str]) -> None:
        """``echo quit | nvidia-cuda-mps-control`` with the daemon's variables, then its folder goes."""
        if not self.on or self.control is None:
            return
        try:
            subprocess.run(
                [self.control],
                input="quit\n",
                text=True,
                env={**environ, **self.env},
                capture_output=True,
                timeout=_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("MPS: quitting the daemon failed: %s", exc)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.env = {}


def start_mps(devices: Devices, environ: Mapping[str, str], task: str) -> Mps:
    """Start the task's MPS daemon when it can help (see the module's docstring); never raises."""
    if devices.kind != "gpu":
        return Mps("off (the task holds no GPU)")
    if environ.get(PIPE_ENV):
        return Mps(f"off (the environment already names an MPS daemon: {PIPE_ENV})")
    control = shutil.which(MPS_CONTROL, path=environ.get("PATH"))
    if control is None:
        return Mps(f"off ({MPS_CONTROL} is not on PATH)")
    folder = Path(tempfile.mkdtemp(prefix=f"hpctune-mps-{task}-"))
    env = {PIPE_ENV: str(folder / "pipe"), LOG_ENV: str(folder / "log")}
    for path in env.values():
        Path(path).mkdir()
    try:
        proc = subprocess.run(
            [control, "-d"],
            env={**environ, **env},
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return Mps(f"off ({MPS_CONTROL} -d failed: {exc})")
    if proc.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
        return Mps(f"off ({MPS_CONTROL} -d failed: {detail[0]})")
    return Mps(f"on (daemon in {folder})", env, folder, control)
