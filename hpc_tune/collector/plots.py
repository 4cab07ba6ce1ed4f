"""The report's figures as PNG bytes: matplotlib only, so the report needs no browser library and no network.

Every plot is drawn on its own and may fail on its own: a study with one parameter has no contour, one without
per-epoch values has no learning curves. Such a plot becomes a one-line note, never an error, so a report is
always written. Large studies are downsampled (the top-k, the best and the baseline are always kept, the rest
is an even, deterministic sample) so that a 10,000-trial study is drawn in seconds and its report opens fast;
the caption says what was left out.

Optuna's matplotlib plots are used where their trial numbering does not matter (parallel coordinates, contour,
slice): they are drawn from an in-memory study holding the sample, whose trials Optuna renumbers. The
optimization history, the learning curves and the analysis figures are plain matplotlib.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # Headless: a compute node has no display, and the report embeds PNG bytes anyway.

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from optuna.exceptions import ExperimentalWarning  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from hpc_tune.collector.analysis_model import Analysis, Importance, ImportanceSkipped  # noqa: E402
from hpc_tune.collector.figures import PLOT_NAMES, PLOT_TITLES, Plot  # noqa: E402
from hpc_tune.collector.formatting import quiet_optuna  # noqa: E402
from hpc_tune.collector.summary import Summary  # noqa: E402
from hpc_tune.collector.ticks import readable_parallel_axes  # noqa: E402
from hpc_tune.policy.ranking import has_value, is_promoted  # noqa: E402

__all__ = [
    "MAX_CURVES",
    "MAX_PLOT_TRIALS",
    "PLOT_NAMES",
    "Plot",
    "draw_plots",
    "parallel_figure",
    "select_trials",
    "slice_figure",
]

_logger = logging.getLogger(__name__)

MAX_PLOT_TRIALS = 500
MAX_CURVES = 200
DPI = 100
_HIGHLIGHT = matplotlib.colormaps["tab10"]


class Unavailable(Exception):
    """This plot cannot be drawn for this study (one parameter, no curves...): a note, not a failure."""


@dataclass(frozen=True)
class _Context:
    summary: Summary
    trials: Sequence[FrozenTrial]
    records: Mapping[int, Mapping[str, Any]]
    keep: frozenset[int]
    top: tuple[int, ...]
    baseline: int | None

    @property
    def metric(self) -> str:
        return self.summary.metric or "value"

    @property
    def maximize(self) -> bool:
        return self.summary.direction == "maximize"

    @property
    def analysis(self) -> Analysis:
        return self.summary.analysis


def draw_plots(
    summary: Summary, trials: Sequence[FrozenTrial], records: Mapping[int, Mapping[str, Any]]
) -> list[Plot]:
    """Every figure of the report, in reading order; those that cannot be drawn carry a note instead."""
    top = tuple(t.trial for t in summary.top_k)
    best = summary.best.trial if summary.best is not None else None
    baseline = summary.baseline.trial if summary.baseline is not None else None
    keep = frozenset(n for n in (*top, best, baseline) if n is not None)
    ctx = _Context(summary, trials, records, keep, top, baseline)
    sample = _LazySample(ctx)
    drawers: dict[str, Callable[[], tuple[Figure, str]]] = {
        "history": lambda: _history(ctx),
        "learning_curves": lambda: _learning_curves(ctx),
        "importance": lambda: _importance(ctx),
        "parallel": lambda: _parallel(ctx, sample),
        "contour": lambda: _contour(ctx, sample),
        "slice": lambda: _slice(ctx, sample),
        "rank_correlation": lambda: _rank_corr(ctx),
        "confirmation": lambda: _confirmation(ctx),
    }
    # Optuna's plots are experimental and chatty (ExperimentalWarning, 'study created' logs), and matplotlib
    # warns about degenerate axes (a parameter with one value): not the user's concern when they asked for a
    # report, and the collector's terminal output must stay readable.
    with quiet_optuna(optuna.logging.ERROR, (ExperimentalWarning, UserWarning)):
        return [draw_plot(name, title, drawers[name]) for name, title in PLOT_TITLES.items()]


def draw_plot(name: str, title: str, draw: Callable[[], tuple[Figure, str]]) -> Plot:
    before = set(plt.get_fignums())
    try:
        # Optuna's plots switch the global style to ggplot: keep that change inside this one figure.
        with plt.rc_context():
            figure, caption = draw()
            png = _png(figure)
        return Plot(name, title, png, None, caption)
    except Unavailable as exc:
        return Plot(name, title, None, str(exc))
    except Exception as exc:  # one figure that fails must never cost the whole report
        _logger.warning("plot %s could not be drawn: %s", name, exc)
        _logger.debug("plot %s", name, exc_info=True)
        return Plot(name, title, None, f"could not be drawn: {type(exc).__name__}: {exc}")
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def select_trials(trials: Sequence[FrozenTrial], keep: frozenset[int], limit: int) -> list[FrozenTrial]:
    """At most ``limit`` trials in number order: every trial of ``keep``, the rest an even sample.

    Deterministic (no random draw), so two reports of the same study show the same trials.
    """
    if len(trials) <= limit:
        return sorted(trials, key=lambda t: t.number)
    kept = [t for t in trials if t.number in keep]
    rest = sorted((t for t in trials if t.number not in keep), key=lambda t: t.number)
    room = max(limit - len(kept), 0)
    picked: list[FrozenTrial] = []
    if room and rest:
        picked = [rest[i] for i in np.unique(np.linspace(0, len(rest) - 1, room).round().astype(int))]
    return sorted(kept + picked, key=lambda t: t.number)


def _shown(shown: int, total: int, what: str) -> str:
    return f"{shown:,} of {total:,} {what} shown (downsampled)" if shown < total else f"{total:,} {what}"


def _complete(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if has_value(t)]


class _LazySample:
    """The in-memory study Optuna's plots are drawn from, built once and only when a plot asks for it."""

    def __init__(self, ctx: _Context) -> None:
        self._ctx = ctx
        self._built: tuple[optuna.Study, str] | None = None

    def get(self) -> tuple[optuna.Study, str]:
        if self._built is None:
            complete = _complete(self._ctx.trials)
            if not complete:
                raise Unavailable("no completed trial yet")
            chosen = select_trials(complete, self._ctx.keep, MAX_PLOT_TRIALS)
            study = optuna.create_study(
                direction="maximize" if self._ctx.maximize else "minimize",
                sampler=optuna.samplers.RandomSampler(seed=0),
            )
            study.add_trials(chosen)
            self._built = (study, _shown(len(chosen), len(complete), "completed trials"))
        return self._built


def _param_order(ctx: _Context) -> list[str]:
    """Parameters by importance when it was computed, else in the order the trials first used them."""
    seen: dict[str, None] = {}
    for t in _complete(ctx.trials):
        for name in t.params:
            seen.setdefault(name, None)
    importance = ctx.analysis.importance
    overall = importance.overall if isinstance(importance, Importance) else {}
    ranked = [p for p in sorted(overall, key=lambda p: -float(overall[p])) if p in seen]
    return ranked + [p for p in seen if p not in ranked]


def _history(ctx: _Context) -> tuple[Figure, str]:
    complete = _complete(ctx.trials)
    if not complete:
        raise Unavailable("no completed trial yet")
    promoted = [t for t in complete if is_promoted(t)]
    # Screening values are not comparable with full-fidelity ones: once trials were promoted, the best-so-far
    # line follows the promoted (ranked) ones, as the summary's top-k does.
    ranked = promoted or complete
    fig, ax = plt.subplots(figsize=(9, 4.5))
    numbers = np.array([t.number for t in complete])
    values = np.array([float(t.value) for t in complete])  # type: ignore[arg-type]
    ax.scatter(numbers, values, s=10, color="#4c72b0", alpha=0.6, label="completed trial", zorder=2)
    if promoted:
        ax.scatter(
            [t.number for t in promoted],
            [t.value for t in promoted],
            s=28,
            marker="^",
            color="#55a868",
            label="promoted (full fidelity)",
            zorder=3,
        )
    order = sorted(ranked, key=lambda t: t.number)
    pick = np.maximum.accumulate if ctx.maximize else np.minimum.accumulate
    ax.step(
        [t.number for t in order],
        pick(np.array([float(t.value) for t in order])),  # type: ignore[arg-type]
        where="post",
        color="#c44e52",
        linewidth=1.8,
        label="best so far",
        zorder=4,
    )
    by_number = {t.number: t for t in complete}
    top = [by_number[n] for n in ctx.top if n in by_number]
    if top:
        ax.scatter(
            [t.number for t in top],
            [t.value for t in top],
            s=60,
            facecolors="none",
            edgecolors="#dd8452",
            linewidths=1.8,
            label=f"top {len(top)}",
            zorder=5,
        )
        for t in top:
            ax.annotate(f"#{t.number}", (t.number, float(t.value)), textcoords="offset points", xytext=(4, 4))  # type: ignore[arg-type]
    if ctx.baseline is not None and ctx.baseline in by_number:
        ax.axhline(
            float(by_number[ctx.baseline].value),  # type: ignore[arg-type]
            color="black",
            linestyle="--",
            linewidth=1,
            label=f"baseline (trial {ctx.baseline})",
        )
    ax.set_xlabel("trial")
    ax.set_ylabel(ctx.metric)
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    pruned = sum(1 for t in ctx.trials if t.state == TrialState.PRUNED)
    caption = f"{len(complete):,} completed trials ({ctx.summary.direction})"
    return fig, caption + (f"; {pruned:,} pruned trials have no final value" if pruned else "")


def _curve(trial: FrozenTrial, record: Mapping[str, Any] | None, metric: str | None) -> np.ndarray | None:
    """(epoch, value) points: the trial's record is the truth for curves, Optuna's intermediate values the
    fallback (a record that was quarantined or never written)."""
    points: list[tuple[float, float]] = []
    if record and metric:
        for row in record.get("epochs") or []:
            value, epoch = row.get(metric), row.get("epoch")
            if isinstance(value, int | float) and isinstance(epoch, int | float) and math.isfinite(value):
                points.append((float(epoch), float(value)))
    if not points:
        points = [
            (float(s), float(v)) for s, v in sorted(trial.intermediate_values.items()) if math.isfinite(v)
        ]
    return np.array(points) if points else None


def _learning_curves(ctx: _Context) -> tuple[Figure, str]:
    metric = ctx.summary.metric
    candidates = [t for t in ctx.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    curves = {}
    for t in candidates:
        curve = _curve(t, ctx.records.get(t.number), metric)
        if curve is not None:
            curves[t.number] = (t, curve)
    if not curves:
        raise Unavailable("no learning curves: no trial reported per-epoch values")
    shown = select_trials([t for t, _ in curves.values()], ctx.keep, MAX_CURVES)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    complete = [
        curves[t.number][1] for t in shown if t.state == TrialState.COMPLETE and t.number not in ctx.keep
    ]
    pruned = [curves[t.number][1] for t in shown if t.state == TrialState.PRUNED and t.number not in ctx.keep]
    # Collections draw hundreds of curves in one call; pruned ones are faded so the finished ones stand out.
    if pruned:
        ax.add_collection(LineCollection(pruned, colors="#8c8c8c", alpha=0.2, linewidths=0.7))
        ends = np.array([c[-1] for c in pruned])
        ax.scatter(ends[:, 0], ends[:, 1], marker="x", s=10, color="#8c8c8c", alpha=0.35, label="pruned")
    if complete:
        ax.add_collection(LineCollection(complete, colors="#4c72b0", alpha=0.45, linewidths=0.9))
        ax.plot([], [], color="#4c72b0", alpha=0.45, label="completed")
    for rank, number in enumerate(ctx.top):
        if number in curves:
            trial, curve = curves[number]
            ax.plot(
                curve[:, 0],
                curve[:, 1],
                color=_HIGHLIGHT(rank % 10),
                linewidth=2.2,
                label=f"#{number} (top {rank + 1})",
                zorder=5,
            )
    if ctx.baseline is not None and ctx.baseline in curves and ctx.baseline not in ctx.top:
        curve = curves[ctx.baseline][1]
        ax.plot(curve[:, 0], curve[:, 1], color="black", linestyle="--", linewidth=1.5, label="baseline")
    ax.autoscale_view()
    ax.set_xlabel("epoch")
    uses_records = bool(metric) and any(ctx.records.get(n) for n in curves)
    ax.set_ylabel(str(metric) if uses_records else "intermediate value")
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    return fig, _shown(len(shown), len(curves), "curves") + "; top-k highlighted, pruned trials faded"


def _importance(ctx: _Context) -> tuple[Figure, str]:
    importance = ctx.analysis.importance
    if isinstance(importance, ImportanceSkipped):
        raise Unavailable(f"parameter importance not computed: {importance.skipped}")
    overall = importance.overall
    if not overall:
        raise Unavailable("parameter importance not computed")
    ranked = sorted(overall.items(), key=lambda kv: float(kv[1]))
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(ranked) + 1.5))
    bars = ax.barh([str(k) for k, _ in ranked], [float(v) for _, v in ranked], color="#4c72b0")
    ax.bar_label(bars, labels=[f"{float(v):.2f}" for _, v in ranked], padding=3)
    ax.set_xlabel("share of importance")
    ax.set_xlim(0, max(1.0, max(float(v) for _, v in ranked) * 1.15))
    ax.grid(axis="x", alpha=0.3)
    return fig, f"{importance.evaluator} over {importance.n_trials} completed trials"


def _parallel(ctx: _Context, sample: _LazySample) -> tuple[Figure, str]:
    study, caption = sample.get()
    params = _param_order(ctx)
    if not params:
        raise Unavailable("the study has no parameters")
    return parallel_figure(study, params, ctx.metric), caption


def parallel_figure(study: optuna.Study, params: Sequence[str], metric: str) -> Figure:
    """Optuna's parallel coordinates, with tick labels that differ on every axis (see ``ticks``)."""
    ax = optuna.visualization.matplotlib.plot_parallel_coordinate(
        study, params=list(params), target_name=metric
    )
    fig: Figure = ax.figure  # type: ignore[assignment]
    fig.set_size_inches(max(8, 1.6 * len(params) + 3), 5)
    readable_parallel_axes(fig)
    return fig


def _contour(ctx: _Context, sample: _LazySample) -> tuple[Figure, str]:
    study, caption = sample.get()
    params = _param_order(ctx)
    if len(params) < 2:
        raise Unavailable(f"a contour needs two parameters; the study has {len(params)}")
    ax = optuna.visualization.matplotlib.plot_contour(study, params=params[:2], target_name=ctx.metric)
    fig = _figure_of(ax)
    fig.set_size_inches(7, 5.5)
    return fig, f"{params[0]} × {params[1]}; {caption}"


def _slice(ctx: _Context, sample: _LazySample) -> tuple[Figure, str]:
    study, caption = sample.get()
    params = _param_order(ctx)[:2]
    if not params:
        raise Unavailable("the study has no parameters")
    fig = slice_figure(study, params, ctx.metric, [t.number for t in _complete(ctx.trials)])
    return fig, f"{', '.join(params)}; {caption}"


def slice_figure(study: optuna.Study, params: Sequence[str], metric: str, numbers: Sequence[int]) -> Figure:
    """Optuna's slice plot of ``study`` (the in-memory copy), whose colour scale is named for what it is
    when the copy's trial numbers are not the study's ``numbers`` (its completed trials)."""
    axes = optuna.visualization.matplotlib.plot_slice(study, params=list(params), target_name=metric)
    fig = _figure_of(axes)
    fig.set_size_inches(5 * len(params) + 1, 4.5)
    if [t.number for t in study.trials] != list(numbers):
        _relabel_trial_colorbar(fig, sampled=len(study.trials) < len(numbers))
    return fig


def _relabel_trial_colorbar(fig: Figure, *, sampled: bool) -> None:
    """The in-memory study numbers its trials 0..n-1 in the order they completed, skipping the pruned and
    failed ones: its colour scale is that order, not the study's trial numbers, and says so."""
    label = "order of the trial in the sample" if sampled else "order among the completed trials"
    for ax in fig.axes:
        if ax.get_ylabel() == "Trial":
            ax.set_ylabel(label)


def _figure_of(axes: Any) -> Figure:
    first = axes.flat[0] if isinstance(axes, np.ndarray) else axes
    return first.figure  # type: ignore[no-any-return]


def _rank_corr(ctx: _Context) -> tuple[Figure, str]:
    corr = ctx.analysis.rank_correlation
    if corr is None or not corr.by_epoch:
        raise Unavailable("no rank correlation: too few completed trials with per-epoch values")
    rows = sorted(corr.by_epoch, key=lambda r: float(r.epoch))
    epochs = [float(r.epoch) for r in rows]
    rho = [float(r.spearman) if r.spearman is not None else math.nan for r in rows]
    threshold = float(corr.threshold)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    pruned_at = {float(k): int(v) for k, v in corr.pruned_at.items()}
    if pruned_at:
        counts = ax.twinx()
        counts.bar(list(pruned_at), list(pruned_at.values()), width=0.8, color="#8c8c8c", alpha=0.35)
        counts.set_ylabel("trials pruned at this epoch")
        ax.set_zorder(counts.get_zorder() + 1)
        ax.patch.set_visible(False)
    ax.plot(epochs, rho, marker="o", markersize=3, color="#4c72b0", label="Spearman ρ with final value")
    ax.axhline(threshold, color="#c44e52", linestyle="--", linewidth=1.2, label=f"threshold {threshold:g}")
    reliable = corr.reliable_from
    if reliable is not None:
        ax.axvline(float(reliable), color="#55a868", linewidth=1.2, label=f"reliable from epoch {reliable}")
    ax.set_ylim(min(-0.05, np.nanmin(rho) - 0.05) if not all(map(math.isnan, rho)) else -1, 1.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("Spearman ρ")
    handles, _ = ax.get_legend_handles_labels()
    if pruned_at:
        handles.append(Patch(color="#8c8c8c", alpha=0.35, label="trials pruned at epoch (right axis)"))
    ax.legend(handles=handles, loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    caption = (
        f"reliable from epoch {reliable}" if reliable is not None else f"never reaches ρ ≥ {threshold:g}"
    ) + (f"; trials pruned at epochs {', '.join(f'{e:g}' for e in sorted(pruned_at))}" if pruned_at else "")
    return fig, caption


def _confirmation(ctx: _Context) -> tuple[Figure, str]:
    confirmation = ctx.summary.confirmation
    if confirmation is None or not confirmation.configs:
        raise Unavailable(
            "no confirmation runs yet (hpctune rerun-top re-runs the top trials with more seeds)"
        )
    configs = confirmation.configs
    labels = [f"#{c.source_trial}" for c in configs]
    x = np.arange(len(configs))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(configs) + 3), 4.5))
    for i, c in enumerate(configs):
        values = [float(v) for v in c.values if v is not None]
        if values:
            ax.scatter(np.full(len(values), i) + 0.12, values, s=12, color="#8c8c8c", zorder=2)
    means = [math.nan if c.mean is None else float(c.mean) for c in configs]
    sds = [0.0 if c.sd is None else float(c.sd) for c in configs]
    ax.errorbar(x, means, yerr=sds, fmt="o", color="#4c72b0", capsize=5, label="mean ± sd", zorder=3)
    singles = [math.nan if c.single_value is None else float(c.single_value) for c in configs]
    ax.scatter(x - 0.12, singles, marker="D", s=28, color="#dd8452", label="original single run", zorder=3)
    pick = confirmation.pick
    for i, c in enumerate(configs):
        if c.source_trial == pick and not math.isnan(means[i]):
            ax.annotate("pick", (i, means[i]), textcoords="offset points", xytext=(8, -12), color="#c44e52")
    ax.set_xticks(x, labels)
    ax.set_xlabel("configuration (source trial)")
    ax.set_ylabel(ctx.metric)
    ax.legend(loc="best", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    caption = f"{confirmation.seeds} seeds per configuration; grey dots are single seeds"
    if confirmation.ranking_changed:
        caption += "; the ranking by mean differs from the single-run ranking"
    return fig, caption
