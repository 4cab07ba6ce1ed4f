"""report.html in a real headless Chromium, opened from a file:// path as a user opens it from scratch: the
page paints, every embedded plot decodes, and the warnings are there. The browser is required."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from hpc_tune.collector.figures import PLOT_NAMES
from hpc_tune.collector.html import write_report
from tests.collector.test_html import build_study, full_summary
from tests.collector.test_utilization import write_timelines

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_TIMEOUT_S = 60


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: `make test-services` installs it")
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # Lets the page's load handler run before the screenshot or the DOM dump is taken.
        "--virtual-time-budget=5000",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str | None] = {}
        self.images = 0
        self.figures: dict[str, dict[str, str | None]] = {}
        self.section: str | None = None
        self.warnings: list[str] = []
        self.warnings_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "body":
            self.body = found
        elif tag == "figure":
            self.figures[str(found.get("data-plot"))] = found
        elif tag == "img":
            self.images += 1
        elif tag == "section":
            self.section = found.get("id")
        elif tag == "li" and self.section == "warnings":
            self.warnings.append(str(found.get("data-code")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.section = None

    def handle_data(self, data: str) -> None:
        if self.section == "warnings":
            self.warnings_text += data


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    study_dir = tmp_path_factory.mktemp("runs") / "demo"
    study, loaded = build_study(study_dir, 60)
    write_timelines(study_dir, 60)  # the workers' timelines: the report then has its utilization figure too
    summary = full_summary(study, loaded)
    write_report(summary, study.get_trials(deepcopy=False), loaded.records, study_dir)
    return study_dir / "report.html"


def test_the_report_paints_in_a_real_browser(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,4000", report.as_uri())

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (4000, 1280)
    colours = np.unique((pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    # A blank or error page has a handful of colours; text and plots bring thousands.
    assert len(colours) > 500, len(colours)
    assert float(pixels[..., :3].std()) > 0.05


def test_every_plot_decodes_in_the_browser_and_the_warnings_are_shown(report: Path, tmp_path: Path) -> None:
    done = chromium(tmp_path / "profile", "--dump-dom", report.as_uri())
    dom = _Dom()
    dom.feed(done.stdout)

    figures = len(PLOT_NAMES) + 1  # the utilization figure, drawn from the workers' timelines
    assert dom.images == figures
    assert dom.body.get("data-images-expected") == str(figures)
    # Set by the page's load handler: images that the browser decoded (complete, with a natural width).
    assert dom.body.get("data-images-total") == str(figures)
    assert dom.body.get("data-images-loaded") == str(figures)
    assert list(dom.figures) == [*PLOT_NAMES, "utilization"]
    for name, attrs in dom.figures.items():  # each figure's own image, by its decoded width in pixels
        assert int(attrs.get("data-decoded") or 0) > 100, name
    assert "best_at_boundary" in dom.warnings
    assert "<script>alert(1)</script>" in dom.warnings_text
    assert "widen lr" in dom.warnings_text
