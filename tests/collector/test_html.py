"""The report files (report.html, summary.md, plots/*.png) of real Optuna studies: self-contained, every
plot a PNG that decodes, warnings first, user strings escaped, notes instead of the plots a study lacks."""

from __future__ import annotations

import base64
import io
import math
import random
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.image
import matplotlib.pyplot as plt
import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpc_tune.collector.checks.best_at_boundary import BestAtBoundary, BestAtBoundaryDetails
from hpc_tune.collector.collect import TOP_K, summarize
from hpc_tune.collector.digest import render_digest
from hpc_tune.collector.figures import NO_MATPLOTLIB, PLOT_NAMES
from hpc_tune.collector.html import render_html, write_report
from hpc_tune.collector.plots import MAX_CURVES, MAX_PLOT_TRIALS, draw_plots, select_trials
from hpc_tune.collector.summary import Confirmation, ConfirmedConfig, Summary
from hpc_tune.storage.records import LoadedTrials, TrialRecord, read_trials, write_trial

METRIC = "val_acc"
EVIL = "<script>alert(1)</script>"
EPOCHS = 10
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DISTRIBUTIONS = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "layers": IntDistribution(1, 6),
    "opt": CategoricalDistribution(["adam", "sgd", EVIL]),
}


def build_study(
    study_dir: Path, n: int, *, one_param: bool = False, curves: bool = True, records: bool = True
) -> tuple[optuna.Study, LoadedTrials]:
    """A finished study named after ``study_dir``: trial 0 is the baseline, every 4th trial is pruned at epoch
    3, the value peaks at lr=10^-2.5 with EVIL the best optimizer; per-epoch records in trials/ when
    ``records``."""
    rng = random.Random(n)
    study = optuna.create_study(direction="maximize", study_name=study_dir.name)
    study.set_user_attr("metric", METRIC)
    study.set_user_attr("trials", n)  # as hpctune records its budget on the studies it creates
    distributions = {"lr": DISTRIBUTIONS["lr"]} if one_param else DISTRIBUTIONS
    trials = []
    for number in range(n):
        params: dict[str, Any] = {"lr": 10 ** rng.uniform(-5, -1)}
        if not one_param:
            params.update(layers=rng.randint(1, 6), opt=rng.choice(DISTRIBUTIONS["opt"].choices))
        final = 0.9 - 0.05 * (math.log10(params["lr"]) + 2.5) ** 2 + rng.gauss(0, 0.01)
        final += {"adam": 0.0, "sgd": -0.02, EVIL: 0.03}.get(params.get("opt"), 0.0)
        pruned = number % 4 == 3
        curve = {e: final * (1 - math.exp(-e / 3)) for e in range(1, (3 if pruned else EPOCHS) + 1)}
        state = TrialState.PRUNED if pruned else TrialState.COMPLETE
        trials.append(
            create_trial(
                state=state,
                value=None if pruned else final,
                params=params,
                distributions=distributions,
                intermediate_values=curve if curves else None,
                user_attrs={"baseline": True} if number == 0 else {},
            )
        )
        if records:
            record = TrialRecord(study=study_dir.name, trial=number, params=params, state=state.name)
            record.value = None if pruned else final
            for epoch, value in curve.items():
                record.add_epoch({"epoch": epoch, METRIC: value, "val_loss": 1 - value}, METRIC, "maximize")
            write_trial(study_dir, record)
    study.add_trials(trials)
    return study, read_trials(study_dir)


def confirmation_of(summary: Summary) -> Confirmation:
    """A hand-written summary.confirmation for the study's top 3, 3 seeds each."""
    configs = []
    for rank, top in enumerate(summary.top_k[:3], start=1):
        assert top.value is not None
        values = [top.value - 0.01 * rank + d for d in (-0.004, 0.0, 0.004)]
        mean = sum(values) / 3
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
        configs.append(
            ConfirmedConfig(
                source_trial=top.trial,
                params=top.params,
                single_value=top.value,
                mean=mean,
                sd=sd,
                n=3,
                values=values,
                rank_single=rank,
                rank_mean=rank,
            )
        )
    return Confirmation(
        study=f"{summary.study}-confirm",
        metric=METRIC,
        direction="maximize",
        seeds=3,
        configs=configs,
        ranking_changed=False,
        pick=configs[0].source_trial,
        single_winner_not_mean_winner=False,
    )


WARNING = BestAtBoundary(
    message=f"the best trial's opt is {EVIL} and lr sits at the high edge",
    action="widen lr to [1e-05, 1]",
    details=BestAtBoundaryDetails(params={}),
)


def full_summary(study: optuna.Study, loaded: LoadedTrials, *, confirmed: bool = True) -> Summary:
    """summarize()'s summary with its real analysis, plus a warning that carries a user string and, when
    ``confirmed``, confirmation runs."""
    summary = summarize(study, loaded)
    summary.analysis.warnings = [*summary.analysis.warnings, WARNING]
    summary.confirmation = confirmation_of(summary) if confirmed else None
    return summary


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside each <section id=...>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(text)
    return parser.tags


def figures_of(text: str) -> dict[str, str | None]:
    """data-plot name → the src of the figure's <img> (None for a figure with a note instead)."""
    out: dict[str, str | None] = {}
    current = None
    for tag, attrs in tags_of(text):
        if tag == "figure":
            current = attrs["data-plot"]
            assert current is not None
            out[current] = None
        elif tag == "img" and current is not None:
            out[current] = attrs["src"]
    return out


def decoded_png(src: str) -> bytes:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    return base64.b64decode(src[len(prefix) :], validate=True)


def test_report_is_one_self_contained_file_with_every_plot_embedded(tmp_path: Path) -> None:
    study_dir = tmp_path / "demo"
    study, loaded = build_study(study_dir, 60)
    summary = full_summary(study, loaded)
    files = write_report(summary, study.get_trials(deepcopy=False), loaded.records, study_dir)

    text = files.html.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    tags = tags_of(text)
    assert not [t for t, _ in tags if t in ("link", "iframe", "object", "embed")]
    for tag, attrs in tags:
        assert attrs.get("href") is None, (tag, attrs)
        if "src" in attrs:
            assert str(attrs["src"]).startswith("data:image/png;base64,"), tag

    figures = figures_of(text)
    assert list(figures) == list(PLOT_NAMES)
    assert files.plots == [study_dir / "plots" / f"{name}.png" for name in PLOT_NAMES]
    for name, src in figures.items():
        assert src is not None, f"{name} has no image"
        png = decoded_png(src)
        assert png.startswith(PNG_SIGNATURE)
        pixels = matplotlib.image.imread(io.BytesIO(png), format="png")
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, name
        assert (study_dir / "plots" / f"{name}.png").read_bytes() == png


def test_warnings_and_recommendations_come_before_the_plots_and_user_strings_are_escaped(
    tmp_path: Path,
) -> None:
    study_dir = tmp_path / "demo"
    study, loaded = build_study(study_dir, 60)
    summary = full_summary(study, loaded)
    assert summary.best is not None and summary.best.params["opt"] == EVIL
    text = write_report(summary, study.get_trials(deepcopy=False), loaded.records, study_dir).html.read_text()

    warnings_at = text.index('<section id="warnings">')
    assert warnings_at < text.index('<section id="recommendations">') < text.index('<section id="plots">')
    warnings_section = text[warnings_at : text.index("</section>", warnings_at)]
    for w in summary.analysis.warnings:
        assert f'data-code="{w.code}"' in warnings_section
    assert "the best trial&#39;s opt is &lt;script&gt;alert(1)&lt;/script&gt;" in warnings_section
    assert "Do: widen lr to [1e-05, 1]" in warnings_section
    # The user's "<script>" only ever appears escaped: the page's one script is its own.
    assert EVIL not in text
    assert text.count("<script") == 1
    assert "opt=&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_no_warnings_is_said_in_the_warnings_section(tmp_path: Path) -> None:
    study_dir = tmp_path / "demo"
    study, loaded = build_study(study_dir, 60)
    summary = full_summary(study, loaded)
    summary.analysis.warnings = []
    text = render_html(summary, [])
    section = text[text.index('<section id="warnings">') : text.index('<section id="recommendations">')]
    assert "No warnings" in section and "<li" not in section


def test_digest_holds_best_top5_warnings_and_the_next_step(tmp_path: Path) -> None:
    study_dir = tmp_path / "demo"
    study, loaded = build_study(study_dir, 60)
    summary = full_summary(study, loaded, confirmed=False)
    files = write_report(summary, study.get_trials(deepcopy=False), loaded.records, study_dir)
    digest = files.digest.read_text(encoding="utf-8")

    best = summary.best
    assert best is not None
    assert f"**Best:** trial {best.trial}, {METRIC} **{best.value:.4g}**" in digest
    rows = [line for line in digest.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(r.split("|")[2]) for r in rows] == [t.trial for t in summary.top_k][:5]
    assert len(rows) == min(5, TOP_K)
    assert "\\<script>alert(1)\\</script>" in rows[0]
    for w in summary.analysis.warnings:
        assert f"**{w.code}**" in digest
    assert "*Do:* widen lr to [1e-05, 1]" in digest
    assert "`hpctune rerun-top demo --k 5 --seeds 3`" in digest
    assert "`hpctune next demo -o next.yaml`" in digest

    summary.confirmation = confirmation_of(summary)
    confirmed = render_digest(summary)
    assert "rerun-top" not in confirmed.split("## Next step")[1]
    assert f"Pick: trial {summary.confirmation.pick}" in confirmed


def test_one_parameter_without_curves_renders_with_notes_and_drops_stale_pngs(tmp_path: Path) -> None:
    study_dir = tmp_path / "demo"
    study, loaded = build_study(study_dir, 60)
    write_report(full_summary(study, loaded), study.get_trials(deepcopy=False), loaded.records, study_dir)
    assert (study_dir / "plots" / "contour.png").exists()

    # The same study directory, now a one-parameter study that reported no per-epoch value.
    small = tmp_path / "small"
    study, loaded = build_study(small, 12, one_param=True, curves=False, records=False)
    summary = summarize(study, loaded)
    files = write_report(summary, study.get_trials(deepcopy=False), loaded.records, study_dir)

    figures = figures_of(files.html.read_text(encoding="utf-8"))
    assert list(figures) == list(PLOT_NAMES)
    missing = {name for name, src in figures.items() if src is None}
    assert {"learning_curves", "contour", "rank_correlation", "confirmation"} <= missing
    assert {"history", "parallel", "slice"}.isdisjoint(missing)
    text = files.html.read_text(encoding="utf-8")
    assert "a contour needs two parameters; the study has 1" in text
    assert "no learning curves" in text
    assert sorted(p.name for p in (study_dir / "plots").iterdir()) == sorted(f.name for f in files.plots)
    assert not (study_dir / "plots" / "contour.png").exists()


def test_a_plot_that_fails_is_a_note_and_leaves_no_figure_or_style_behind(tmp_path: Path) -> None:
    study_dir = tmp_path / "demo"
    study, loaded = build_study(study_dir, 40)
    summary = full_summary(study, loaded)
    assert summary.confirmation is not None
    summary.confirmation.configs[0].mean = "not a number"  # type: ignore[assignment]
    facecolor = matplotlib.rcParams["axes.facecolor"]
    open_before = plt.get_fignums()

    plots = {p.name: p for p in draw_plots(summary, study.get_trials(deepcopy=False), loaded.records)}

    assert plots["confirmation"].png is None
    assert plots["confirmation"].note is not None and "ValueError" in plots["confirmation"].note
    assert all(p.png is not None for name, p in plots.items() if name != "confirmation")
    # Optuna's plots switch to the ggplot style; none of that, and no figure, outlives the report.
    assert matplotlib.rcParams["axes.facecolor"] == facecolor
    assert plt.get_fignums() == open_before


def test_a_large_study_is_downsampled_keeping_the_top_k_and_says_so(tmp_path: Path) -> None:
    study_dir = tmp_path / "large"
    study, loaded = build_study(study_dir, 3000, records=False)
    summary = summarize(study, loaded)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]

    plots = {p.name: p for p in draw_plots(summary, trials, loaded.records)}

    shown = f"{MAX_PLOT_TRIALS} of {len(complete):,} completed trials shown"
    for name in ("parallel", "contour", "slice"):
        assert plots[name].png is not None and shown in plots[name].caption, name
    assert f"{MAX_CURVES} of {len(trials):,} curves shown" in plots["learning_curves"].caption
    assert plots["history"].caption.startswith(f"{len(complete):,} completed trials")

    assert summary.baseline is not None
    keep = frozenset([*(t.trial for t in summary.top_k), summary.baseline.trial])
    chosen = select_trials(complete, keep, MAX_PLOT_TRIALS)
    numbers = [t.number for t in chosen]
    assert len(chosen) == MAX_PLOT_TRIALS and keep <= set(numbers)
    assert numbers == sorted(set(numbers))
    assert numbers == [t.number for t in select_trials(complete, keep, MAX_PLOT_TRIALS)]
    # An even sample spans the whole study, not its first trials.
    gaps = [b - a for a, b in zip(numbers, numbers[1:], strict=False)]
    assert numbers[-1] > 0.95 * len(trials) and max(gaps) < 20


def test_without_matplotlib_collect_writes_everything_and_says_why_there_are_no_figures(
    tmp_path: Path,
) -> None:
    """A core install (no hpc-tune[report]) collects too: matplotlib is made unimportable in a real
    ``hpctune collect`` process, which writes summary.json, trials.csv, summary.md and report.html."""
    study_dir = tmp_path / "runs" / "nomatplotlib"
    study, _ = build_study(study_dir, 12)
    backend = optuna.storages.journal.JournalFileBackend(str(study_dir / "journal.log"))
    on_disk = optuna.create_study(
        study_name=study.study_name, storage=optuna.storages.JournalStorage(backend), direction="maximize"
    )
    on_disk.add_trials(study.get_trials())
    for key, value in study.user_attrs.items():
        on_disk.set_user_attr(key, value)
    block = (
        "import importlib.abc, sys\n"
        "class NoMatplotlib(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'matplotlib':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoMatplotlib())\n"
        "from hpc_tune.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", block, "collect", "nomatplotlib", "--results", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "matplotlib" not in proc.stderr  # no traceback, no warning: a report without images is expected
    for name in ("summary.json", "trials.csv", "summary.md", "report.html"):
        assert (study_dir / name).is_file(), name
    figures = figures_of((study_dir / "report.html").read_text())
    assert set(figures) == set(PLOT_NAMES) and not any(figures.values())
    page = (study_dir / "report.html").read_text()
    assert page.count(NO_MATPLOTLIB.split(" (")[0]) == len(PLOT_NAMES)
    assert not (study_dir / "plots").exists() or not list((study_dir / "plots").glob("*.png"))


def test_the_learning_rate_range_test_figure_joins_the_report_when_there_is_one(tmp_path: Path) -> None:
    """``hpctune lr-range`` wrote runs/<study>/lr-range.png (here a figure drawn for the test, and no result
    file): the report embeds it after the study's own figures, with a caption saying the result is missing;
    without the file the report has no such figure."""
    study_dir = tmp_path / "demo"
    study, loaded = build_study(study_dir, 12)
    summary = full_summary(study, loaded, confirmed=False)
    files = write_report(summary, study.get_trials(deepcopy=False), loaded.records, study_dir)
    assert "lr_range" not in figures_of(files.html.read_text(encoding="utf-8"))

    figure = matplotlib.figure.Figure(figsize=(3, 2))
    figure.add_subplot().semilogx([1e-5, 1e-3, 1e-1], [2.3, 1.2, 9.0])
    figure.savefig(study_dir / "lr-range.png", format="png")
    files = write_report(summary, study.get_trials(deepcopy=False), loaded.records, study_dir)
    text = files.html.read_text(encoding="utf-8")
    figures = figures_of(text)
    assert list(figures)[-1] == "lr_range"
    assert decoded_png(figures["lr_range"]) == (study_dir / "lr-range.png").read_bytes()
    assert "Learning-rate range test (before the study)" in text
    assert "missing or unreadable" in text
    assert (study_dir / "plots" / "lr_range.png").read_bytes() == (study_dir / "lr-range.png").read_bytes()
