"""Tick labels on Optuna's parallel-coordinate figure that a reader can tell apart.

Optuna labels the axis of a parameter that some trials lack (a conditional one, such as ``momentum`` only
under ``optimizer: sgd``) itself: a ``None`` tick for the trials without it, then the observed range at three
significant digits. When the observed values are close together, as they are after a handful of SGD trials,
that prints the same label five times (0.879, 0.879, 0.879...) and the axis says nothing. The other numeric
axes are matplotlib's own, which may move the leading digits into an offset above the axis, easy to miss.

The lines of the figure are left as Optuna drew them: only the labels change, each tick keeping its place.
"""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

__all__ = ["distinct_labels", "readable_parallel_axes"]

_MISSING_LABEL = "None"  # Optuna's label for the trials that lack the parameter
_OPTUNA_DIGITS = 3
_MAX_DIGITS = 12


def distinct_labels(values: Sequence[float]) -> list[str]:
    """The shortest labels (three significant digits at least) that differ wherever the values differ."""
    labels = [f"{v:.{_OPTUNA_DIGITS}g}" for v in values]
    for digits in range(_OPTUNA_DIGITS, _MAX_DIGITS + 1):
        labels = [f"{v:.{digits}g}" for v in values]
        if len(set(labels)) == len(set(values)):
            break
    return labels


def readable_parallel_axes(figure: Figure) -> None:
    """Relabel the numeric axes of Optuna's parallel-coordinate figure so that no two ticks read the same."""
    for ax in figure.axes:
        if _is_conditional_numeric(ax):
            _relabel_conditional(ax)
        elif isinstance(ax.yaxis.get_major_formatter(), ScalarFormatter) and ax.get_yscale() == "linear":
            ax.yaxis.get_major_formatter().set_useOffset(False)  # type: ignore[attr-defined]


def _tick_texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels()]


def _is_conditional_numeric(ax: Axes) -> bool:
    texts = _tick_texts(ax)
    return bool(texts) and texts[0] == _MISSING_LABEL and _scale_of(ax) is not None


def _scale_of(ax: Axes) -> str | None:
    """``linear`` or ``log`` when every label after ``None`` is Optuna's three-digit label of its tick (the
    tick itself, or ten to its power on a log axis), ``None`` for a categorical axis (labels are choices)."""
    positions = [float(p) for p in ax.get_yticks()][1:]
    texts = _tick_texts(ax)[1:]
    if not positions or len(positions) != len(texts):
        return None
    for scale, value in (("linear", lambda p: p), ("log", lambda p: 10.0**p)):
        if all(text == f"{value(p):.{_OPTUNA_DIGITS}g}" for p, text in zip(positions, texts, strict=True)):
            return scale
    return None


def _relabel_conditional(ax: Axes) -> None:
    ticks = [float(p) for p in ax.get_yticks()]
    scale = _scale_of(ax)
    values = [10.0**p if scale == "log" else p for p in ticks[1:]]
    labels = distinct_labels(values)
    # Ticks whose values are equal (a parameter with one observed value) are shown once.
    kept: dict[str, float] = {}
    for position, label in zip(ticks[1:], labels, strict=True):
        kept.setdefault(label, position)
    ax.set_yticks([ticks[0], *kept.values()])
    ax.set_yticklabels([_MISSING_LABEL, *kept.keys()])
