"""The report's figures as the report sees them, without drawing any: their names and titles in reading
order, and :func:`report_figures`, which draws them when matplotlib is there (the ``hpc-tune[report]``
extra) and otherwise says so in each figure's place.

``collect`` must work wherever the study is collected: a core install (a command's or an objective's own
environment) writes summary.json, trials.csv, summary.md and report.html all the same, only without images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optuna.trial import FrozenTrial

from hpc_tune.collector.summary import Summary

__all__ = ["PLOT_NAMES", "PLOT_TITLES", "Plot", "report_figures"]

PLOT_TITLES = {
    "history": "Optimization history",
    "learning_curves": "Learning curves",
    "importance": "Parameter importance",
    "parallel": "Parallel coordinates",
    "contour": "Contour of the two most important parameters",
    "slice": "Slice plots of the most important parameters",
    "rank_correlation": "Rank correlation with the final value, by epoch",
    "confirmation": "Confirmation runs: mean ± sd over seeds",
}
PLOT_NAMES = tuple(PLOT_TITLES)
NO_MATPLOTLIB = "not drawn: matplotlib is not installed here (pip install 'hpc-tune[report]')"


@dataclass(frozen=True)
class Plot:
    """One figure of the report: ``png`` with its ``caption``, or no ``png`` and a ``note`` saying why."""

    name: str
    title: str
    png: bytes | None
    note: str | None = None
    caption: str = ""


def report_figures(
    summary: Summary, trials: Sequence[FrozenTrial], records: Mapping[int, Mapping[str, Any]]
) -> list[Plot]:
    """Every figure, drawn, or (without matplotlib) a note in its place."""
    try:
        from hpc_tune.collector.plots import draw_plots
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "matplotlib":
            raise
        return [Plot(name, title, None, NO_MATPLOTLIB) for name, title in PLOT_TITLES.items()]
    return draw_plots(summary, trials, records)
