"""``hpctune status``: counts, running trials, throughput and ETA from the storage alone, with the study's
current SLURM array when its config is at hand, and the GPU-hours so far and at the budget from the study's
folder where it is (its trial records and worker timelines). It only reads: watching a study never changes
it, and each refresh reads the storage once and the study's folder once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hpc_tune.cli.app import (
    any_config_option,
    cli,
    refuse_password_in_argv,
    results_option,
    storage_option,
    study_argument,
)
from hpc_tune.config import LoadedConfig
from hpc_tune.policy.locate import config_for, locate, served
from hpc_tune.policy.shared_study import SharedStudy


@cli.command()
@study_argument
@any_config_option
@storage_option
@results_option
@click.option(
    "--watch", is_flag=True, help="Refresh until the budget is used and nothing runs (Ctrl-C stops)."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=None,
    help="With --watch: seconds between refreshes (default 10).",
)
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="With --watch: refresh at most N times."
)
def status(
    study: str | None,
    config_path: Path | None,
    storage: str | None,
    results: Path,
    watch: bool,
    interval: float | None,
    count: int | None,
) -> None:
    """Counts by state, running trials (epoch, host, task), throughput, ETA, and GPU-hours so far with a
    projection to the budget; with the study's config, its current SLURM array too. Works from --storage or
    HPCTUNE_STORAGE alone."""
    if (interval is not None or count is not None) and not watch:
        raise click.UsageError("--interval and --count go with --watch")
    refuse_password_in_argv(storage)
    loaded = config_for(study, config_path, storage, "status")
    with served(loaded, storage):
        # Only reads: a trial whose worker died is failed by the next worker, `collect` or `rerun-top`.
        target = locate(study, storage, results, loaded, repair=False)
        if not watch:
            click.echo(_status_text(target.opened, loaded, target.study_dir)[1])
            return
        _watch_status(target.opened, loaded, target.study_dir, 10.0 if interval is None else interval, count)


def _status_text(opened: SharedStudy, loaded: LoadedConfig | None, study_dir: Path) -> tuple[Any, str]:
    """One look at the study (and, with its config, at squeue): the Progress and its text."""
    from hpc_tune.collector.progress import format_progress, progress_of

    budget = loaded.config.trials if loaded is not None else None
    progress = progress_of(opened.study, budget=budget, study_dir=study_dir)
    slurm, note = _slurm_view(loaded, progress.array_job_ids)
    text = format_progress(progress, slurm)
    return progress, text + (f"\n{note}" if note else "")


def _slurm_view(loaded: LoadedConfig | None, running_arrays: list[str]) -> tuple[Any, str | None]:
    """The study's current array(s) from squeue; (None, None) without a config or without SLURM here, and a
    note instead of an error when squeue is there but cannot answer (a status view must not fail for it)."""
    if loaded is None:
        return None, None
    import shutil

    from hpc_tune.errors import SlurmError
    from hpc_tune.launchers.submit import status as slurm_status

    if shutil.which("squeue") is None:
        return None, None
    try:
        return slurm_status(loaded).current(running_arrays), None
    except SlurmError as exc:
        return None, f"slurm: squeue did not answer: {exc.what}"


def _watch_status(
    opened: SharedStudy, loaded: LoadedConfig | None, study_dir: Path, interval: float, count: int | None
) -> None:
    """Refresh in place on a terminal (rich Live), or print each refresh after the last one when piped (a
    log then holds the history). Ends when the study is done, after ``count`` refreshes, or on Ctrl-C."""
    import time
    from datetime import datetime

    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console(highlight=False)
    live = Live(console=console, auto_refresh=False, transient=False) if console.is_terminal else None
    refreshes = 0
    try:
        if live is not None:
            live.start()
        while True:
            progress, text = _status_text(opened, loaded, study_dir)
            header = f"{datetime.now():%H:%M:%S}, every {interval:g} s (Ctrl-C stops)"
            if live is not None:
                live.update(Text(f"{header}\n{text}"), refresh=True)
            else:
                click.echo(("\n" if refreshes else "") + f"{header}\n{text}")
            refreshes += 1
            if progress.done or (count is not None and refreshes >= count):
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        if live is not None:
            live.stop()
