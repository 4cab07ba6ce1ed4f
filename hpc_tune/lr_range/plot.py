"""``runs/<study>/lr-range.png``: the smoothed loss of every run against the learning rate, the suggested
range shaded, the space's current range marked.

matplotlib only (the ``hpc-tune[report]`` extra), headless, and drawn the way the report draws its figures
(hpc_tune/collector/plots.py: 9 x 4.5 inches at 100 dpi, the tab10 colours, a light grid), so that the
figure sits in the report beside them. Without matplotlib the test still writes its JSON and prints its
suggestion; the figure is then a note.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

from hpc_tune.atomic import atomic_open
from hpc_tune.lr_range.result import LrRangeResult

DPI = 100
NO_MATPLOTLIB = "not drawn: matplotlib is not installed here (pip install 'hpc-tune[report]')"
# The y axis stops this far above the highest smoothed loss of the runs' first steps: a diverged run's last
# points would otherwise flatten every curve against the bottom.
HEADROOM = 1.5


def draw(result: LrRangeResult) -> bytes:
    """The figure as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")  # a compute node has no display
    import matplotlib.pyplot as plt

    colours = matplotlib.colormaps["tab10"]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    try:
        tops: list[float] = []
        bottoms: list[float] = []
        for index, run in enumerate(result.runs):
            colour = colours(index % 10)
            points = [(lr, s) for lr, s in zip(run.lr, run.smoothed, strict=True) if s is not None]
            raw = [(lr, v) for lr, v in zip(run.lr, run.loss, strict=True) if v is not None]
            if raw:
                ax.scatter(*zip(*raw, strict=True), s=6, color=colour, alpha=0.25, linewidths=0)
            if points:
                end = {"diverged": ", diverged", "nonfinite": ", non-finite loss"}.get(run.stopped, "")
                ax.plot(*zip(*points, strict=True), color=colour, linewidth=1.8, label=run.label + end)
                tops.append(max(s for _, s in points[: max(1, len(points) // 4)]))
                bottoms.append(min(s for _, s in points))
            reading = result.readings[index] if index < len(result.readings) else None
            if reading is not None and reading.steepest_lr is not None and points:
                lookup = dict(points)
                for lr, marker in ((reading.steepest_lr, "o"), (reading.lowest_lr, "v")):
                    if lr in lookup:
                        ax.plot([lr], [lookup[lr]], marker=marker, color=colour, markersize=7)
        if result.suggestion is not None:
            s = result.suggestion
            ax.axvspan(
                s.low, s.high, color="#55a868", alpha=0.15, label=f"suggested {s.low:.1e} to {s.high:.1e}"
            )
        for lr in (result.space_low, result.space_high):
            ax.axvline(lr, color="black", linestyle=":", linewidth=1)
        ax.plot([], [], color="black", linestyle=":", linewidth=1, label=f"space.{result.param} now")
        ax.plot([], [], "o", color="grey", label="steepest descent")
        ax.plot([], [], "v", color="grey", label="lowest loss")
        ax.set_xscale("log")
        ax.set_xlim(result.start_lr, result.end_lr)
        if tops and bottoms and all(map(math.isfinite, tops + bottoms)):
            low, high = min(bottoms), max(tops) * HEADROOM
            margin = 0.05 * (high - low) if high > low else 1.0
            ax.set_ylim(low - margin, high)
        ax.set_xlabel(f"learning rate ({result.param})")
        ax.set_ylabel("training loss (smoothed)")
        ax.set_title(
            f"Learning-rate range test: {result.study}, {result.steps} steps per run", fontsize="medium"
        )
        ax.legend(loc="best", fontsize="small")
        ax.grid(alpha=0.3, which="both")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
        return buffer.getvalue()
    finally:
        plt.close(fig)


def write_figure(path: Path, result: LrRangeResult) -> str | None:
    """Write the figure; the note that stands in for it when matplotlib is missing, else None."""
    try:
        png = draw(result)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != "matplotlib":
            raise
        path.unlink(missing_ok=True)  # a figure of an earlier test would show another curve
        return NO_MATPLOTLIB
    with atomic_open(path, "wb") as handle:
        handle.write(png)
    return None
