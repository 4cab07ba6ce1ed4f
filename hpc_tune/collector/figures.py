"""The report's figures as the report sees them, without drawing any: their names and titles in reading
order, and what one figure is (``Plot``). plots.py draws them with matplotlib (the ``hpc-tune[report]``
extra); without it, html.py writes the report with a note in each figure's place, since ``collect`` must work
wherever the study is collected (a core install: a command's or an objective's own environment).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NO_MATPLOTLIB", "OPTIONAL_TITLES", "PLOT_NAMES", "PLOT_TITLES", "Plot"]

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
# After those, and only for a study that has what they show (no note otherwise: a foreign study has neither):
# the workers' timelines (utilization.py), the learning-rate range test run before the study.
OPTIONAL_TITLES = {
    "utilization": "Utilization over time, per array task",
    "lr_range": "Learning-rate range test (before the study)",
}
NO_MATPLOTLIB = "not drawn: matplotlib is not installed here (pip install 'hpc-tune[report]')"


@dataclass(frozen=True)
class Plot:
    """One figure of the report: ``png`` with its ``caption``, or no ``png`` and a ``note`` saying why."""

    name: str
    title: str
    png: bytes | None
    note: str | None = None
    caption: str = ""
