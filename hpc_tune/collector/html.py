"""runs/<study>/report.html: one self-contained file that opens offline, straight from a cluster's scratch,
written with its companions summary.md and plots/<name>.png.

Nothing is fetched: no script, font or image URL; the plots are base64 PNGs inside the page, the style is
inline. What the reader needs first comes first: the warnings and what to do, then the best trials, then the
plots. Every user string (parameter values, study name, reasons) goes through Jinja's autoescape.

Each file is replaced atomically, the PNGs and the digest first and report.html last, so whoever opens the
report (a browser on a shared filesystem, a colleague's copy) never reads half a file. The PNGs are the very
bytes embedded in the HTML: a plot can be pasted on its own.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from optuna.trial import FrozenTrial

from hpc_tune.atomic import atomic_open, atomic_write_text
from hpc_tune.collector.digest import fmt_params, fmt_value, next_steps, render_digest
from hpc_tune.collector.figures import NO_MATPLOTLIB, OPTIONAL_TITLES, PLOT_TITLES, Plot
from hpc_tune.collector.summary import Summary
from hpc_tune.errors import MetricsError
from hpc_tune.lr_range.result import LR_RANGE_PNG, read_result
from hpc_tune.storage.timelines import WorkerTimeline, read_timelines

__all__ = ["DIGEST_MD", "PLOTS_DIR", "REPORT_HTML", "ReportFiles", "render_html", "write_report"]

PLOTS_DIR = "plots"
REPORT_HTML = "report.html"
DIGEST_MD = "summary.md"

MAX_OVERTAKEN_SHOWN = 10


_TEMPLATES = Path(__file__).parent / "templates"
_ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(_TEMPLATES),
    autoescape=True,  # every user string: parameter values, study name, reasons, warnings
    undefined=jinja2.StrictUndefined,  # the summary is typed: a name the template gets wrong is an error
    trim_blocks=True,
    lstrip_blocks=True,
)


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def _fmt(value: Any) -> str:
    """``fmt_value``, and a list (a change's bounds) as ``[low, high]``."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    return fmt_value(value)


def render_html(summary: Summary, plots: Sequence[Plot]) -> str:
    """report.html's text."""
    analysis = summary.analysis
    recommendations = summary.recommendations
    space = recommendations.space
    overtaken = analysis.pruning_cost.overtaken
    return _ENVIRONMENT.get_template("report.html.j2").render(
        s=summary,
        warnings=analysis.warnings,
        rec=recommendations,
        pruner=recommendations.pruner.model_dump() if recommendations.pruner is not None else {},
        space_yaml=yaml.safe_dump(space, sort_keys=False, allow_unicode=True) if space else "",
        steps=next_steps(summary),
        top_params=list(dict.fromkeys(p for t in summary.top_k for p in t.params)),
        plots=plots,
        images=sum(1 for p in plots if p.png),
        confirmation=summary.confirmation,
        overtaken={"count": analysis.pruning_cost.count, "shown": overtaken[:MAX_OVERTAKEN_SHOWN]}
        if overtaken
        else None,
        screening=analysis.screening,
        fmt=_fmt,
        params=fmt_params,
        b64=_b64,
    )


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    digest: Path
    plots: list[Path]


def write_report(
    summary: Summary,
    trials: Sequence[FrozenTrial],
    records: Mapping[int, Mapping[str, Any]],
    study_dir: Path,
    timelines: Sequence[WorkerTimeline] | None = None,
) -> ReportFiles:
    """Draw the plots and write the three kinds of file; a plot that could not be drawn is a note in the
    HTML, and its PNG from an earlier report is removed so that plots/ never shows a stale figure.
    ``timelines``: the workers' (read from ``study_dir`` when not given)."""
    if timelines is None:
        timelines = read_timelines(study_dir)
    plots = (
        report_figures(summary, trials, records)
        + _utilization_figure(summary, records, timelines)
        + _lr_range_figure(study_dir)
    )
    _drop_stale(study_dir / PLOTS_DIR, plots)
    written = _write_pngs(plots, study_dir / PLOTS_DIR)
    digest = study_dir / DIGEST_MD
    atomic_write_text(digest, render_digest(summary))
    html = study_dir / REPORT_HTML
    atomic_write_text(html, render_html(summary, plots))
    return ReportFiles(html, digest, written)


def _lr_range_figure(study_dir: Path) -> list[Plot]:
    """The range test's figure (``hpctune lr-range``, before the study), shown as drawn, when there is one:
    the report then holds the evidence for the space's lr range beside the study's answer to it."""
    png = study_dir / LR_RANGE_PNG
    if not png.is_file():
        return []
    try:
        result = read_result(study_dir)
    except MetricsError:
        result = None
    caption = "the range test's result file is missing or unreadable"
    if result is not None:
        s = result.suggestion
        space = f"space.{result.param} was {result.space_low:.1e} to {result.space_high:.1e}"
        caption = (
            f"suggested {s.low:.1e} to {s.high:.1e} ({s.rule}); {space}" if s else f"no range found; {space}"
        )
    return [Plot("lr_range", OPTIONAL_TITLES["lr_range"], png.read_bytes(), None, caption)]


def _utilization_figure(
    summary: Summary, records: Mapping[int, Mapping[str, Any]], timelines: Sequence[WorkerTimeline]
) -> list[Plot]:
    """When each task's devices ran trials and when they sat idle; nothing for a study without worker
    timelines (one hpctune did not run), which has no idle time to show."""
    if not any(t.segments for t in timelines):
        return []
    try:
        from hpc_tune.collector.utilization import draw_utilization
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "matplotlib":
            raise
        return [Plot("utilization", OPTIONAL_TITLES["utilization"], None, NO_MATPLOTLIB)]
    return [draw_utilization(summary, records, timelines)]


def _drop_stale(folder: Path, plots: Sequence[Plot]) -> None:
    """An optional figure the study no longer has (its timelines or range test removed) leaves no PNG."""
    names = {p.name for p in plots}
    for name in OPTIONAL_TITLES:
        if name not in names:
            (folder / f"{name}.png").unlink(missing_ok=True)


def _write_pngs(plots: Sequence[Plot], folder: Path) -> list[Path]:
    written = []
    for plot in plots:
        path = folder / f"{plot.name}.png"
        if plot.png is None:
            path.unlink(missing_ok=True)
            continue
        with atomic_open(path, "wb") as handle:
            handle.write(plot.png)
        written.append(path)
    return written


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
