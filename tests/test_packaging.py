"""The wheel as pip builds it: the templates the commands read at run time are inside, setuptools has
nothing to warn about, and the core needs none of the engine's or the report's libraries.

An editable install reads the templates from the checkout, so only a built wheel shows a template folder
left out of the package data (launchers/templates once was: ``render`` then failed on every real install).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.conftest import REPO

TEMPLATES = (
    "hpc_tune/launchers/templates/worker_array.sh.j2",
    "hpc_tune/launchers/templates/collect.sh.j2",
    "hpc_tune/collector/templates/report.html.j2",
    "hpc_tune/config/templates/hpctune.yaml",
)
# Installed into the user's training environment by the core, they would replace (torch) or bloat it; each
# belongs to an extra: engine (torch, scikit-learn), report (matplotlib).
NOT_IN_CORE = ("torch", "scikit-learn", "matplotlib")


@dataclass(frozen=True)
class Built:
    wheel: Path
    log: str  # pip's verbose output, the build backend's included

    def metadata(self) -> list[str]:
        """The wheel's Requires-Dist lines."""
        with zipfile.ZipFile(self.wheel) as whl:
            name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
            message = Parser().parsestr(whl.read(name).decode())
        return message.get_all("Requires-Dist") or []


def checkout_copy(src: Path) -> Path:
    """What a build reads of the checkout. __pycache__ folders are kept, as in any checkout that ran: they
    must not become packages."""
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "hpc_tune", src / "hpc_tune")
    return src


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """``pip wheel`` of a copy of the checkout: setuptools writes build/ into the tree it builds, and a stale
    build/lib from an earlier build can carry files into the wheel that the current configuration would leave
    out. No index: the setuptools of the test environment builds it (the test extra requires one that can)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = checkout_copy(tmp / "src")
    out = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--wheel-dir", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    wheels = list(out.glob("hpc_tune-*.whl"))
    assert len(wheels) == 1, (wheels, log[-2000:])
    return Built(wheels[0], log)


def test_the_wheel_holds_every_template(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as whl:
        names = set(whl.namelist())
    missing = [t for t in TEMPLATES if t not in names]
    assert missing == [], f"not in the wheel: {missing}"
    assert not any("__pycache__" in n for n in names)


def test_setuptools_ignores_no_package(built: Built) -> None:
    assert "running build_py" in built.log  # the backend's own output (pip -v), where setuptools warns
    ignored = re.findall(r"Python recognizes '([^']+)' as an importable package", built.log)
    assert "Package would be ignored" not in built.log, ignored


def test_the_editable_install_of_make_demo_prints_no_notice(tmp_path: Path) -> None:
    """What `make venv` runs (`pip install -e`): the build backend's editable hook, on a copy of the checkout.
    A recent pip shows every notice of it, a screen of asterisks, as the first thing a new user reads."""
    src = checkout_copy(tmp_path / "src")
    out = tmp_path / "out"
    out.mkdir()
    hook = "import sys, setuptools.build_meta as b; print(b.build_editable(sys.argv[1]))"
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c", hook, str(out)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Editable installation" not in log and "Warning" not in log, log[-4000:]
    with zipfile.ZipFile(out / proc.stdout.strip().splitlines()[-1]) as whl:
        pth = [whl.read(n).decode() for n in whl.namelist() if n.endswith(".pth")]
    assert pth == [f"{src.resolve()}\n"]  # the checkout on sys.path: hpc_tune imports from it


def test_the_core_requires_no_torch_sklearn_or_matplotlib(built: Built) -> None:
    requirements = [Requirement(line) for line in built.metadata()]
    core = {r.name.lower() for r in requirements if r.marker is None}
    assert "optuna" in core and "scipy" in core
    assert sorted(core & set(NOT_IN_CORE)) == []
    by_extra = {
        extra: {r.name.lower() for r in requirements if r.marker and r.marker.evaluate({"extra": extra})}
        for extra in ("engine", "report", "test")
    }
    assert {"torch", "scikit-learn"} <= by_extra["engine"]
    assert "matplotlib" in by_extra["report"]
    # The test extra pulls in the other two through the project itself.
    assert any(r.name == "hpc-tune" and {"engine", "report"} <= r.extras for r in requirements)
    torch = next(r for r in requirements if r.name == "torch")
    # A lower bound only: an upper one would make pip replace a cluster's newer torch.
    assert all(spec.operator == ">=" for spec in torch.specifier), torch
