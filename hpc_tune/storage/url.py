"""Where a study lives, resolved once: a database URL or the embedded journal file, and how to print it.

Everything printed about a storage goes through :func:`redact_url` or :func:`scrub`: a password never reaches
a log, a terminal or an error line (driver messages can echo connection strings).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from hpc_tune.config import is_embedded
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
    """``url`` is already the winner of CLI flag > HPCTUNE_STORAGE > file; None means embedded."""
    if is_embedded(url):
        return StorageSpec(url=None, journal_path=study_dir / EMBEDDED_FILE, study_dir=study_dir)
    assert url is not None
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StorageError("storage is not a database URL", redact_url(url)) from None
    if not parsed.drivername.startswith(("postgresql", "sqlite", "mysql")):
        raise StorageError(f"unsupported storage '{parsed.drivername}'", redact_url(url))
    return StorageSpec(url=url, journal_path=None, study_dir=study_dir)


def redact_url(url: str) -> str:
    """The URL as it may be printed: any password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Not a SQLAlchemy URL: hide anything between '//' user ':' and '@' the crude way.
        head, sep, tail = url.partition("://")
        if sep and "@" in tail and ":" in tail.split("@", 1)[0]:
            user = tail.split("@", 1)[0].split(":", 1)[0]
            return f"{head}://{user}:***@{tail.split('@', 1)[1]}"
        return url


def url_password(url: str) -> str | None:
    try:
        return make_url(url).password
    except (ArgumentError, ValueError):
        return None


def scrub(text: str, url: str | None) -> str:
    """Remove the URL's password from any text (driver error messages can echo connection strings)."""
    password = url_password(url) if url else None
    return text.replace(password, "***") if password else text
