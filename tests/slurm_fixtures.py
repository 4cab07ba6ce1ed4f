"""The one-node SLURM for tests, as a pytest plugin (tests/conftest.py lists it in ``pytest_plugins``).

Outside CI a machine without SLURM (no root, no apt) skips the ``slurm`` tests with the reason; in CI
(``CI=true``) that is a failure, so a broken cluster setup cannot turn the suite green by skipping.
Also registers ``--regen-golden`` (or ``HPCTUNE_REGEN_GOLDEN=1``) for the rendered-script golden files.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLURM_LOCAL = REPO / "scripts" / "slurm-local.sh"
GOLDEN_DIR = Path(__file__).resolve().parent / "launchers" / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/* from the current output instead of comparing (review the diff!)",
    )


def regen_golden(config: pytest.Config) -> bool:
    """Golden files change only on request, so a rendering change is always a reviewed diff."""
    try:
        flag = bool(config.getoption("--regen-golden"))
    except ValueError:  # the plugin that adds the option is not registered
        flag = False
    return flag or os.environ.get("HPCTUNE_REGEN_GOLDEN") == "1"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class SlurmCluster:
    node: str
    startup_output: str


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """Start (or confirm) the local one-node SLURM once per session with scripts/slurm-local.sh."""
    reason = None
    output = ""
    if os.name != "posix":
        reason = "SLURM tests need Linux"
    elif os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        reason = "scripts/slurm-local.sh needs root or passwordless sudo to start SLURM"
    else:
        try:
            proc = subprocess.run(
                ["bash", str(SLURM_LOCAL)], capture_output=True, text=True, timeout=600, check=False
            )
            output = proc.stdout + proc.stderr
            if proc.returncode != 0:
                tail = " | ".join(output.strip().splitlines()[-3:])
                reason = f"scripts/slurm-local.sh failed (exit {proc.returncode}): {tail}"
        except subprocess.TimeoutExpired:
            reason = "scripts/slurm-local.sh did not finish in 600 s"
    if reason is not None:
        if in_ci():
            pytest.fail(f"SLURM is required in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    node = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True).stdout.strip()
    return SlurmCluster(node=node, startup_output=output)


def active_jobs(job_ids: Iterable[str]) -> list[str]:
    """``<job_ref> <state> <reason>`` of the given jobs (an array id covers its tasks) still active."""
    wanted = {str(j) for j in job_ids}
    out = subprocess.run(
        ["squeue", "-h", "-r", "--me", "-o", "%F %i %T %r"], capture_output=True, text=True, check=True
    ).stdout
    lines = []
    for line in out.splitlines():
        fields = line.split()
        if fields and (fields[0] in wanted or fields[1] in wanted):
            lines.append(" ".join(fields[1:]))
    return lines


def wait_for_jobs(job_ids: Iterable[str], timeout: float = 60.0, poll: float = 0.5) -> float:
    """Block until none of ``job_ids`` (plain, array or ``A_T`` ids) is queued or running; return seconds.

    Polls squeue, not sacct (no accounting here). A requeued task counts as active while it waits to rerun.
    """
    ids = [str(j) for j in job_ids]
    start = time.monotonic()
    while True:
        left = active_jobs(ids)
        if not left:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"jobs still active after {timeout:g} s: {'; '.join(left)}")
        time.sleep(poll)


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, poll: float = 0.25) -> float:
    """Poll ``predicate()`` until it is truthy; return the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"condition not met after {timeout:g} s")
        time.sleep(poll)
    return time.monotonic() - start
