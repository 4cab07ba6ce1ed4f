"""Where a study lives, resolved once: a database URL or the embedded journal file.

Everything printed about a storage goes through ``redact_url`` or ``scrub`` (config/storage_value.py): a
password never reaches a log, a terminal or an error line (driver messages can echo connection strings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpc_tune.config.storage_value import check_storage, is_embedded, redact_url
from hpc_tune.errors import StorageError

EMBEDDED_FILE = "journal.log"


@dataclass(frozen=True)
class StorageSpec:
    """A resolved storage: a database URL, or the embedded journal file of one study; ``study_dir`` is the
    study's results folder (the journal's folder, and where a file lock lives for storages without one)."""

    url: str | None
    journal_path: Path | None
    study_dir: Path

    @property
    def is_postgres(self) -> bool:
        return self.url is not None and self.url.startswith("postgresql")

    @property
    def display(self) -> str:
        if self.url is not None:
            return redact_url(self.url)
        return f"journal:{self.journal_path}"


def resolve_storage(url: str | None, study_dir: Path) -> StorageSpec:
    """``url`` is already the winner of CLI flag > HPCTUNE_STORAGE > file; None means embedded. A config's
    value was checked when it was loaded; one given without a config (``collect STUDY --storage``) is checked
    here by the same rule."""
    try:
        check_storage(url)
    except ValueError as exc:
        raise StorageError(f"storage: {exc}", "--storage or HPCTUNE_STORAGE") from None
    if is_embedded(url):
        return StorageSpec(url=None, journal_path=study_dir / EMBEDDED_FILE, study_dir=study_dir)
    return StorageSpec(url=url, journal_path=None, study_dir=study_dir)
