"""Commands that work on this machine: ``init``, ``check``, ``lr-range`` (before the study), ``worker`` (what
each array task runs) and ``run --local``."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hpc_tune.cli.app import (
    ArraySpecType,
    cli,
    config_option,
    echo_paths,
    load,
    setup_logging,
    shown,
    storage_option,
)
from hpc_tune.config import DEFAULT_CONFIG, LoadedConfig
from hpc_tune.errors import ConfigError, HpcTuneError

if TYPE_CHECKING:
    from hpc_tune.launchers.local import LocalReport
    from hpc_tune.lr_range.curve import LrRun


@cli.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(output: Path, force: bool) -> None:
    """Write a commented hpctune.yaml for the built-in digits task."""
    from hpc_tune.atomic import atomic_write_text

    if output.exists() and not force:
        raise ConfigError("file exists; use --force to overwrite", output)
    text = resources.files("hpc_tune.config").joinpath("templates/hpctune.yaml").read_text(encoding="utf-8")
    atomic_write_text(output, text)
    click.echo(f"wrote {output}; next: hpctune check -c {output}")


@cli.command()
@config_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Also run one short trial (one epoch; a tenth of the data for the engine) on a throw-away study "
    "and check that the metric is reported.",
)
@click.option(
    "--array",
    "array",
    type=ArraySpecType(),
    default=None,
    help="The --array the study will be submitted with: its workers are checked against the database's "
    "connection limits (default: slurm.array_parallelism).",
)
def check(config_path: Path, dry_run: bool, array: Any) -> None:
    """Validate the config, import the task, ask the database, and warn about settings that waste trials."""
    from hpc_tune.preflight import preflight

    found = preflight(load(config_path), array)
    for finding in found.findings:
        click.echo(finding.line())
    database = found.database_line()
    if database is not None:
        click.echo(database)
    if found.pack is not None:
        click.echo(found.pack)
    click.echo(found.summary_line())
    if dry_run:
        from hpc_tune.worker.dry_run import dry_run as run_dry

        result = run_dry(found.loaded)
        click.echo(
            f"dry run: ok, {found.loaded.config.metric} = {result.value:.6g} after {result.epochs} epoch"
            f"{'s' if result.epochs != 1 else ''} ({result.duration_s:.1f} s)"
        )


@cli.command("lr-range")
@config_option
@click.option(
    "--steps",
    type=click.IntRange(min=10),
    default=100,
    show_default=True,
    help="Optimizer steps per run (the training data is cycled through when it has fewer batches).",
)
@click.option(
    "--widen",
    type=click.FloatRange(min=1.0),
    default=100.0,
    show_default=True,
    help="Sweep from the space's lr low / WIDEN to its high x WIDEN.",
)
@click.option(
    "--param",
    default=None,
    metavar="NAME",
    help="The space's learning-rate parameter (default: the float named lr or learning_rate).",
)
def lr_range(config_path: Path, steps: int, widen: float, param: str | None) -> None:
    """Run the learning-rate range test: a short run per optimizer and batch size with a growing lr, and
    the range for space.lr it suggests (writes runs/<study>/lr-range.json and lr-range.png)."""
    from hpc_tune.lr_range.run import range_test

    setup_logging(False)
    found = range_test(load(config_path), steps=steps, widen=widen, param=param, on_run=_echo_run)
    result = found.result
    suggestion = result.suggestion
    assert suggestion is not None  # range_test raises when there is none
    click.echo(
        f"swept {result.param} from {result.start_lr:.1e} to {result.end_lr:.1e} in {result.steps} steps per "
        f"run (space.{result.param} is {result.space_low:.1e} to {result.space_high:.1e})"
    )
    click.echo(f"suggested {result.param}: {suggestion.low:.1e} to {suggestion.high:.1e}, {suggestion.rule}")
    click.echo(f"in hpctune.yaml's space:\n  {found.space_line}")
    click.echo(f"figure: {shown(found.png_path) if found.png_path else found.png_note}")
    click.echo(f"result: {shown(found.json_path)}")


def _echo_run(run: LrRun) -> None:
    """One line per run as it ends: a test of many runs shows its progress."""
    from hpc_tune.lr_range.suggest import read_run

    reading = read_run(run)
    ran = len(run.lr)
    ended = {
        "steps": f"all {run.steps} steps",
        "diverged": f"diverged at step {ran} of {run.steps}",
        "nonfinite": f"non-finite loss at step {ran} of {run.steps}",
    }[run.stopped]
    if reading.steepest_lr is None:
        click.echo(f"{run.label}: no range ({reading.note}); {ended}")
        return
    click.echo(
        f"{run.label}: steepest descent at {reading.steepest_lr:.1e}, lowest loss at "
        f"{reading.lowest_lr:.1e}; {ended}" + (f"; {reading.note}" if reading.note else "")
    )


@cli.command()
@config_option
@storage_option
@click.option(
    "--worker-index",
    type=click.IntRange(min=0),
    default=None,
    help="Decorrelates samplers of workers (default: the SLURM array task id, else 0). With it, or with "
    "--max-trials, this process is one worker whatever slurm.trials_per_gpu says.",
)
@click.option(
    "--max-trials", type=click.IntRange(min=1), default=None, help="Stop this worker after N trials."
)
@click.option("-v", "--verbose", is_flag=True)
def worker(
    config_path: Path, storage: str | None, worker_index: int | None, max_trials: int | None, verbose: bool
) -> int:
    """Run one worker: take trials from the shared study until its budget is used (an array task). With
    slurm.trials_per_gpu other than 1, run that many workers on this task's GPU(s) instead."""
    import os

    from hpc_tune.launchers.task_pack import REQUEUE_WANTED, as_pack_worker, is_pack_worker, packs
    from hpc_tune.storage.timelines import process_start_time
    from hpc_tune.worker.loop import run_worker

    setup_logging(verbose)
    loaded = load(config_path, storage)
    if worker_index is None and max_trials is None and packs(loaded, os.environ):
        return _pack(loaded, storage)
    in_pack = is_pack_worker(os.environ)
    report = run_worker(
        as_pack_worker(loaded, os.environ) if in_pack else loaded,
        storage,
        worker_index=worker_index,
        max_trials=max_trials,
        requeue=not in_pack,  # the pack's supervisor requeues the task, once
        started_at=process_start_time(),  # this process is the worker: its start-up is the allocation's
    )
    states = ", ".join(f"{k} {v}" for k, v in sorted(report.by_state.items())) or "none"
    click.echo(f"worker done: {report.trials_run} trial(s) ({states}); stopped by {report.stopped_by}")
    return REQUEUE_WANTED if in_pack and report.wants_requeue else report.exit_code


def _pack(loaded: LoadedConfig, storage: str | None) -> int:
    """``slurm.trials_per_gpu``: this task's workers, through their supervisor (launchers/task_pack.py)."""
    from hpc_tune.launchers.task_pack import run_pack

    report = run_pack(loaded, storage, say=lambda line: click.echo(f"hpctune: {line}"))
    codes = ", ".join(str(c) for c in report.exit_codes) or "none"
    click.echo(
        f"workers done: {len(report.pids)} process(es) for {report.size} slot(s) (exit codes {codes}); "
        f"{len(report.recovered_trials)} trial(s) of killed workers re-run; MPS {report.mps}"
        + (f"; requeued {report.requeued}" if report.requeued else "")
    )
    return report.exit_code


@cli.command()
@config_option
@storage_option
@click.option("--local", "local", is_flag=True, required=True, help="Run the workers on this machine.")
@click.option("-w", "--workers", type=click.IntRange(1, 256), default=2, show_default=True)
def run(config_path: Path, storage: str | None, local: bool, workers: int) -> int:
    """Run N worker processes here on one study, then collect it."""
    from hpc_tune.collector.collect import collect_shared, format_table
    from hpc_tune.launchers.local import first_worker_error
    from hpc_tune.policy.locate import served
    from hpc_tune.policy.shared_study import open_study

    setup_logging(False)
    loaded = load(config_path, storage)
    c = loaded.config
    with served(loaded, storage, workers=workers):
        report = _run_with_progress(loaded, storage, workers)
        if report.failed_workers:
            why = first_worker_error(report) or f"exit codes {report.failed_workers}"
            raise HpcTuneError(f"worker failed: {why}", report.logs[0].parent)
        shared = open_study(loaded, storage, with_heartbeat=False)
        result = collect_shared(shared, loaded.study_dir, config=c)
    click.echo(format_table(result.summary))
    if report.recovered_trials:
        click.echo(f"recovered trials of killed workers: {report.recovered_trials} (retried)")
    echo_paths(result)
    return 0


def _run_with_progress(loaded: LoadedConfig, storage: str | None, workers: int) -> LocalReport:
    """``run_local`` with a progress bar on stderr (the table and paths go to stdout)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hpc_tune.launchers.local import run_local

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as progress:
        bar = progress.add_task(loaded.config.study, total=loaded.config.trials, detail="")

        def show(counts: dict[str, int]) -> None:
            progress.update(
                bar,
                completed=counts["finished"],
                detail=(f"running {counts['RUNNING']}  pruned {counts['PRUNED']}  failed {counts['FAIL']}"),
            )

        return run_local(loaded, storage, workers, on_progress=show)
