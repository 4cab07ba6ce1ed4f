"""``hpctune export``: a study copied into one file, to archive it or to hand it to someone without the
database: SQLite (``.db``, ``.sqlite``) or an Optuna journal file, with Optuna's own ``copy_study`` (every
trial with its parameters, values, intermediate values and attributes, and the study's attributes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import optuna

from hpc_tune.errors import StorageError
from hpc_tune.policy.shared_study import SharedStudy

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


@dataclass(frozen=True)
class Exported:
    path: Path
    kind: Literal["SQLite", "journal"]
    trials: int


def export_study(shared: SharedStudy, output: Path, *, force: bool = False) -> Exported:
    """Write the study into ``output`` (a new file; ``force`` replaces one)."""
    if output.exists():
        if not force:
            raise StorageError("file exists; pass --force to overwrite it", output)
        output.unlink()
    output.parent.mkdir(parents=True, exist_ok=True)
    kind: Literal["SQLite", "journal"]
    if output.suffix.lower() in SQLITE_SUFFIXES:
        kind, target = "SQLite", optuna.storages.RDBStorage(f"sqlite:///{output.resolve()}")
    else:
        kind = "journal"
        target = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(output)))
    name = shared.study.study_name
    optuna.copy_study(
        from_study_name=name, from_storage=shared.storage, to_storage=target, to_study_name=name
    )
    copied = optuna.load_study(study_name=name, storage=target)
    return Exported(output, kind, len(copied.get_trials(deepcopy=False)))
