"""How the collector writes a number for a person: four significant digits, in every message, table and file
it produces, so that the terminal, the warnings and the report show a value the same way.

Also the one way the collector keeps Optuna quiet: it builds throw-away in-memory studies (importance, the
report's plots) whose logs and warnings are not the user's concern.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import optuna

__all__ = ["fmt", "quiet_optuna"]


def fmt(value: Any) -> str:
    """A float with 4 significant digits; anything else as ``str`` writes it."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@contextlib.contextmanager
def quiet_optuna(
    level: int = optuna.logging.WARNING, categories: tuple[type[Warning], ...] = (Warning,)
) -> Iterator[None]:
    """Optuna's logs below ``level`` and the Python warnings of ``categories`` are silenced inside, and the
    caller's settings come back after: a study created only to compute something ('study created' logs),
    small-sample and experimental warnings would bury the collector's own output."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(verbosity, level))
    try:
        with warnings.catch_warnings():
            for category in categories:
                warnings.simplefilter("ignore", category)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)
