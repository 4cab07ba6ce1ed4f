"""Files that readers never see half-written: write a temporary file beside the target, then ``os.replace``.

Metrics, summaries, scripts and checkpoints are all written this way, so a crash, a kill or a full disk leaves
either the old file or the new one. It imports nothing of hpc_tune: the train engine (checkpoints) uses it as
much as the collector does.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON: NaN and infinities become null (JSON has none, and every reader, jq, pandas or
    a browser, must parse the file), numpy and torch scalars their Python value, tuples and sets lists, and
    anything else its ``str``."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return jsonable(obj.item())
    return str(obj)


def _umask() -> int:
    """The process's umask, read without changing it (os.umask can only be read by setting it, which races
    with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o077)
    os.umask(current)
    return current


@contextlib.contextmanager
def atomic_open(
    path: Path, mode: str = "w", *, durable: bool = True, private: bool = False
) -> Iterator[IO[Any]]:
    """Write to a temp file in the same directory, then os.replace: readers see old or new, never half.

    The temporary file is created 0600 (mkstemp); unless ``private`` (a password), it is given the
    permissions any new file of the user's would have (0666 less the umask) before it replaces the target,
    so that a colleague the user's umask lets in can read the report and the metrics.

    ``durable`` adds an fsync, which also survives a power loss; records rewritten every epoch skip it
    (a killed process loses nothing without it, and it cost ~5 ms per write), checkpoints keep it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if not private:
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str, *, durable: bool = True, private: bool = False) -> None:
    with atomic_open(path, durable=durable, private=private) as handle:
        handle.write(text)


def atomic_write_json(path: Path, data: Any, *, durable: bool = True) -> None:
    atomic_write_text(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n", durable=durable)
