"""Atomic files get the permissions of any file the user creates (the report is for colleagues too), except
the private ones (a password), which are never readable by anyone else, not even for an instant."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpc_tune.atomic import atomic_open, atomic_write_json, atomic_write_text


@pytest.fixture
def umask_022() -> Iterator[None]:
    before = os.umask(0o022)
    yield
    os.umask(before)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_written_file_has_the_users_usual_permissions(tmp_path: Path, umask_022: None) -> None:
    atomic_write_text(tmp_path / "report.html", "<html></html>")
    atomic_write_json(tmp_path / "summary.json", {"best": 1})
    assert mode_of(tmp_path / "report.html") == 0o644
    assert mode_of(tmp_path / "summary.json") == 0o644
    os.umask(0o077)  # a user who shares nothing gets what they asked for
    atomic_write_text(tmp_path / "mine.txt", "x")
    assert mode_of(tmp_path / "mine.txt") == 0o600


def test_a_private_file_is_0600_from_its_first_byte(tmp_path: Path, umask_022: None) -> None:
    seen: list[int] = []
    with atomic_open(tmp_path / "password", private=True) as handle:
        handle.write("s3cret\n")
        handle.flush()
        seen.append(stat.S_IMODE(os.fstat(handle.fileno()).st_mode))
    assert seen == [0o600]
    assert mode_of(tmp_path / "password") == 0o600
    atomic_write_text(tmp_path / "password", "other\n", private=True)  # replaced, still private
    assert mode_of(tmp_path / "password") == 0o600
