"""How the collector writes a number for a person: four significant digits, in every message, table and file
it produces, so that the terminal, the warnings and the report show a value the same way."""

from __future__ import annotations

from typing import Any

__all__ = ["fmt"]


def fmt(value: Any) -> str:
    """A float with 4 significant digits; anything else as ``str`` writes it."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
