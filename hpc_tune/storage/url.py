"""Where a study lives, resolved once: a database URL, the study server's folder, or the embedded journal.

Everything printed about a storage goes through ``redact_url`` or ``scrub`` (config/storage_value.py): a
password never reaches a log, a terminal or an error line (driver messages can echo connection strings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpc_tune.config import LoadedConfig
from hpc_tune.config.storage_value import check_storage, is_embedded, is_server, redact_url
from hpc_tune.errors import StorageError

EMBEDDED_FILE = "journal.log"


# The study server's URL names its dialect and database; host and port come from its address.json at every
# connect (storage/store.py), since a requeued server may listen on another node.
SERVER_URL = "postgresql+psycopg2://hpctune@study-server/optuna"


@dataclass(frozen=True)
class StorageSpec:
    """A resolved storage: a database URL, the study server (``server_dir``), or the embedded journal file of
    one study; ``study_dir`` is the study's results folder (the journal's folder, and where a file lock lives
    for storages without one)."""

    url: str | None
    journal_path: Path | None
    study_dir: Path
    server_dir: Path | None = None

    @property
    def is_postgres(self) -> bool:
        return self.url is not None and self.url.startswith("postgresql")

    @property
    def is_server(self) -> bool:
        return self.server_dir is not None

    @property
    def display(self) -> str:
        if self.server_dir is not None:
            return f"server:{self.server_dir}"
        if self.url is not None:
            return redact_url(self.url)
        return f"journal:{self.journal_path}"


def resolve_storage(url: str | None, study_dir: Path, server_dir: Path | None = None) -> StorageSpec:
    """``url`` is already the winner of CLI flag > HPCTUNE_STORAGE > file; None means embedded, ``server``
    the study server (in ``server_dir``, default ``<study_dir>/server``). A config's value was checked when it
    was loaded; one given without a config (``collect STUDY --storage``) is checked here by the same rule."""
    try:
        check_storage(url)
    except ValueError as exc:
        raise StorageError(f"storage: {exc}", "--storage or HPCTUNE_STORAGE") from None
    if is_embedded(url):
        return StorageSpec(url=None, journal_path=study_dir / EMBEDDED_FILE, study_dir=study_dir)
    if is_server(url):
        folder = server_dir if server_dir is not None else study_dir / "server"
        return StorageSpec(url=SERVER_URL, journal_path=None, study_dir=study_dir, server_dir=folder)
    return StorageSpec(url=url, journal_path=None, study_dir=study_dir)


def spec_of(loaded: LoadedConfig, url: str | None = None) -> StorageSpec:
    """The storage of a loaded config (``url`` overrides its ``storage``), the study server's folder
    included."""
    value = url if url is not None else loaded.config.storage
    return resolve_storage(value, loaded.study_dir, loaded.server_dir)
