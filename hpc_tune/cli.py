"""The ``hpctune`` command: parse, call the library, print. Nothing here that a test of the library needs.

Every HpcTuneError becomes exactly one ``Error: <what> (<where>)`` line on stderr with the error's exit code;
click's own usage errors are shortened to one line too, so scripts and humans see the same thing.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import click

from hpc_tune import __version__
from hpc_tune.errors import ConfigError, HpcTuneError, StudyNotFoundError
from hpc_tune.study.config import DEFAULT_CONFIG, LoadedConfig, load_config
from hpc_tune.study.storage import redact_url, resolve_storage, url_password


class _OneLineGroup(click.Group):
    """Turns every expected failure into a single ``Error:`` line and an exit code (no traceback)."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except HpcTuneError as exc:
            click.echo(f"Error: {exc.line()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "hpctune"
            click.echo(f"Error: {exc.format_message()} ({where} --help)", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("Error: aborted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="The study's YAML file.",
)
storage_option = click.option(
    "--storage",
    default=None,
    metavar="URL",
    help="Study storage URL (overrides HPCTUNE_STORAGE and the file). Prefer PGPASSFILE for passwords.",
)


class ArraySpecType(click.ParamType):
    """``--array`` validated at the edge: 0-3, 0-31%8, 1,3,5, 0-15:2."""

    name = "ARRAY"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from hpc_tune.slurm import ArraySpec

        if not isinstance(value, str):
            return value
        try:
            return ArraySpec.parse(value)
        except HpcTuneError as exc:
            self.fail(exc.what, param, ctx)


array_option = click.option(
    "--array",
    "array",
    type=ArraySpecType(),
    required=True,
    help="Array task ids, as sbatch --array: 0-3, 0-31%8, 1,3,5, 0-15:2.",
)


def _load(config_path: Path, storage: str | None = None) -> LoadedConfig:
    _refuse_password_in_argv(storage)
    return load_config(config_path, overrides={"storage": storage})


def _refuse_password_in_argv(storage: str | None) -> None:
    """Command-line arguments are visible to every user in ``ps``: a password must not travel there."""
    if storage and url_password(storage):
        raise ConfigError(
            "--storage holds a password, which every user can read in `ps`; put it in PGPASSFILE "
            "(or HPCTUNE_STORAGE)",
            redact_url(storage),
        )


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpctune")
def cli() -> None:
    """Tune PyTorch models with Optuna on SLURM job arrays: one shared study, many workers."""


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
    if output.exists() and not force:
        raise ConfigError("file exists; use --force to overwrite", output)
    text = resources.files("hpc_tune.study").joinpath("templates/hpctune.yaml").read_text(encoding="utf-8")
    from hpc_tune.study.records import atomic_write_text

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
def check(config_path: Path, dry_run: bool) -> None:
    """Validate the config, import the task, and warn about settings that waste trials."""
    from hpc_tune.study.lint import lint
    from hpc_tune.tasks.base import load_task

    loaded = _load(config_path)
    # Import the task as a worker would: a missing file, a typo in the module or a broken import is one line
    # here, not a failure in every array task.
    load_task(loaded.config.task, loaded.root, has_space=loaded.config.space is not None)
    findings = lint(loaded.config)
    for finding in findings:
        click.echo(finding.line())
    c = loaded.config
    parameters = (
        f"{len(c.space)} parameter{'s' if len(c.space) != 1 else ''}"
        if c.space
        else "parameters defined by the objective"
    )
    click.echo(
        f"ok: study {c.study}, {parameters}, {c.trials} trials x {c.effective_epochs()} epochs, "
        f"sampler {c.sampler.type}, pruner {c.pruner.type}, storage "
        f"{resolve_storage(c.storage, loaded.study_dir).display if c.storage else 'embedded'}"
        + (f" ({len(findings)} warning{'s' if len(findings) != 1 else ''})" if findings else "")
    )
    if dry_run:
        from hpc_tune.worker.dry_run import dry_run as run_dry

        result = run_dry(loaded)
        click.echo(
            f"dry run: ok, {c.metric} = {result.value:.6g} after {result.epochs} epoch"
            f"{'s' if result.epochs != 1 else ''} ({result.duration_s:.1f} s)"
        )


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


@cli.command()
@config_option
@storage_option
@click.option(
    "--worker-index",
    type=click.IntRange(min=0),
    default=None,
    help="Decorrelates samplers of workers (default: the SLURM array task id, else 0).",
)
@click.option(
    "--max-trials", type=click.IntRange(min=1), default=None, help="Stop this worker after N trials."
)
@click.option("-v", "--verbose", is_flag=True)
def worker(
    config_path: Path, storage: str | None, worker_index: int | None, max_trials: int | None, verbose: bool
) -> int:
    """Run one worker: take trials from the shared study until its budget is used (an array task)."""
    from hpc_tune.worker.loop import run_worker

    _setup_logging(verbose)
    loaded = _load(config_path, storage)
    if worker_index is None:
        worker_index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0") or 0) + int(
            os.environ.get("HPCTUNE_ARRAY_OFFSET", "0") or 0
        )
    report = run_worker(loaded, storage, worker_index=worker_index, max_trials=max_trials)
    states = ", ".join(f"{k} {v}" for k, v in sorted(report.by_state.items())) or "none"
    click.echo(f"worker done: {report.trials_run} trial(s) ({states}); stopped by {report.stopped_by}")
    return report.exit_code


@cli.command()
@config_option
@storage_option
@click.option("--local", "local", is_flag=True, required=True, help="Run the workers on this machine.")
@click.option("-w", "--workers", type=click.IntRange(1, 256), default=2, show_default=True)
def run(config_path: Path, storage: str | None, local: bool, workers: int) -> int:
    """Run N worker processes here on one study, then collect it."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hpc_tune.report.collect import collect, format_table
    from hpc_tune.study.shared import open_study
    from hpc_tune.worker.local import first_worker_error, run_local

    _setup_logging(False)
    loaded = _load(config_path, storage)
    c = loaded.config
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
        bar = progress.add_task(c.study, total=c.trials, detail="")

        def show(counts: dict[str, int]) -> None:
            progress.update(
                bar,
                completed=counts["finished"],
                detail=(f"running {counts['RUNNING']}  pruned {counts['PRUNED']}  failed {counts['FAIL']}"),
            )

        report = run_local(loaded, storage, workers, on_progress=show)
    if report.failed_workers:
        why = first_worker_error(report) or f"exit codes {report.failed_workers}"
        raise HpcTuneError(f"worker failed: {why}", report.logs[0].parent)
    shared = open_study(loaded, storage, with_heartbeat=False)
    result = collect(shared.study, loaded.study_dir, budget=c.trials)
    click.echo(format_table(result.summary))
    if report.recovered_trials:
        click.echo(f"recovered trials of killed workers: {report.recovered_trials} (retried)")
    click.echo(f"summary: {result.summary_path}")
    click.echo(f"trials:  {result.csv_path}")
    return 0


@cli.command(name="collect")
@click.argument("study", required=False)
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The study's YAML file (default: hpctune.yaml when it names STUDY).",
)
@storage_option
@click.option(
    "--results",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs"),
    show_default=True,
    help="Results root when no config is given.",
)
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of the table.")
@click.option(
    "--slurm-guard",
    is_flag=True,
    help="In the collector job: if tasks of the study are still queued, resubmit after them and exit.",
)
def collect_cmd(
    study: str | None,
    config_path: Path | None,
    storage: str | None,
    results: Path,
    as_json: bool,
    slurm_guard: bool,
) -> None:
    """Aggregate STUDY into runs/<study>/summary.json and trials.csv, and print the top trials."""
    from hpc_tune.report.collect import collect, format_table, load_study

    _refuse_password_in_argv(storage)
    loaded = _loaded_for(study, config_path, storage)
    if slurm_guard:
        if loaded is None:
            raise ConfigError("--slurm-guard needs the study's config", "--config")
        from hpc_tune.slurm.submit import guard_collector

        waited = guard_collector(loaded)
        if waited:
            click.echo(
                f"tasks of {loaded.config.study} still queued in job(s) {', '.join(waited)}: "
                "collector resubmitted after them"
            )
            return
    if loaded is not None:
        name, study_dir = loaded.config.study, loaded.study_dir
        url = storage or loaded.config.storage
        budget = loaded.config.trials
    else:
        assert study is not None
        from hpc_tune.study.config import STUDY_NAME_RE

        if not STUDY_NAME_RE.match(study):
            raise ConfigError(f"{study!r} is not a valid study name", "STUDY")
        name, study_dir = study, (results / study).resolve()
        url = storage or os.environ.get("HPCTUNE_STORAGE") or None
        budget = None
    spec = resolve_storage(url, study_dir)
    # With the study's config, trials of workers that died without a word are failed before counting.
    liveness = loaded.config.worker if loaded is not None else None
    opened = load_study(spec, name, liveness, study_dir)
    result = collect(opened.study, study_dir, budget=budget)
    if as_json:
        click.echo(json.dumps(result.summary, indent=2))
        return
    click.echo(format_table(result.summary))
    click.echo(f"summary: {result.summary_path}")
    click.echo(f"trials:  {result.csv_path}")


@cli.command()
@config_option
@array_option
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the scripts (default: jobs/ beside the config).",
)
def render(config_path: Path, array: Any, out_dir: Path | None) -> None:
    """Write jobs/<study>.sh (the array) and jobs/collect/<study>.sh; then type `sbatch jobs/*.sh`."""
    from hpc_tune.slurm.render import render_scripts

    scripts = render_scripts(_load(config_path), array, out_dir=out_dir)
    for path in scripts.removed:
        click.echo(f"removed {_shown(path)} (old layout: `sbatch jobs/*.sh` would have submitted it)")
    n = len(scripts.chunks)
    what = f"the other {n - 1} part(s) of the split array and the collector" if n > 1 else "the collector"
    click.echo(f"wrote {_shown(scripts.array_path)} (worker array; its first task submits {what})")
    click.echo(f"wrote {_shown(scripts.collect_path)} (collector)")
    jobs = _shown(scripts.array_path.parent)
    pattern = "*.sh" if jobs == Path(".") else f"{shlex.quote(str(jobs))}/*.sh"
    if not scripts.neighbours:
        click.echo(f"submit by hand: sbatch {pattern}")
        return
    click.echo(f"submit by hand: sbatch {shlex.quote(str(_shown(scripts.array_path)))}")
    names = [p.name for p in scripts.neighbours]
    others = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    click.echo(
        f"warning: {jobs}/ also holds {others}: `sbatch {pattern}` submits only the first file it is given; "
        f'to submit every study there: for f in {pattern}; do sbatch "$f"; done',
        err=True,
    )


def _shown(path: Path) -> Path:
    """``path`` as the user would type it here: relative to the current directory when it is below it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


@cli.command()
@config_option
@array_option
@click.option("--dry-run", is_flag=True, help="Print the scripts and sbatch commands; submit nothing.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def submit(config_path: Path, array: Any, dry_run: bool, out_dir: Path | None) -> None:
    """Render and submit the worker array and, after it (afterany), the collector."""
    from hpc_tune.slurm.submit import submit as submit_study

    loaded = _load(config_path)
    result = submit_study(loaded, array, dry_run=dry_run, out_dir=out_dir)
    if dry_run:
        click.echo(f"# {result.scripts.array_path}")
        click.echo(result.scripts.array_text)
        click.echo(f"# {result.scripts.collect_path}")
        click.echo(result.scripts.collect_text)
        click.echo("# commands (not run):")
        for line in result.commands:
            click.echo(line)
        return
    click.echo(f"array job(s): {', '.join(result.array_job_ids)}")
    click.echo(f"collector job: {result.collect_job_id} (afterany)")
    click.echo(f"follow: hpctune status -c {loaded.path}   logs: {result.scripts.logs_dir}")


@cli.command()
@click.argument("study", required=False)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@storage_option
def status(study: str | None, config_path: Path | None, storage: str | None) -> None:
    """Array tasks from squeue and trial counts by state."""
    from hpc_tune.report.collect import load_study
    from hpc_tune.slurm.submit import status as slurm_status
    from hpc_tune.worker.local import study_counts

    loaded = _loaded_for(study, config_path, storage)
    if loaded is None:
        raise StudyNotFoundError(f"no config for study '{study}' here; pass -c CONFIG", "hpctune status")
    c = loaded.config
    counts = study_counts(load_study(resolve_storage(storage or c.storage, loaded.study_dir), c.study).study)
    click.echo(
        f"study {c.study}: {counts['finished']}/{c.trials} finished (COMPLETE {counts['COMPLETE']}, "
        f"PRUNED {counts['PRUNED']}, FAIL {counts['FAIL']}, RUNNING {counts['RUNNING']}, "
        f"WAITING {counts['WAITING']})"
    )
    jobs = slurm_status(loaded)
    if not jobs.tasks:
        click.echo(f"slurm: no job named {jobs.job_name} in squeue")
        return
    states = ", ".join(f"{k} {v}" for k, v in sorted(jobs.by_state.items())) or "none"
    click.echo(f"slurm: array tasks {states}; collector jobs {len(jobs.collectors)}")


@cli.command()
@config_option
def cancel(config_path: Path) -> None:
    """Cancel the study's SLURM jobs; workers fail and re-enqueue their running trials on the way out."""
    from hpc_tune.slurm.submit import cancel as cancel_jobs
    from hpc_tune.slurm.submit import fail_trials_of_jobs
    from hpc_tune.study.shared import open_study

    loaded = _load(config_path)
    ids = cancel_jobs(loaded)
    if not ids:
        click.echo("no active job of this study")
        return
    click.echo(f"cancelled job(s): {', '.join(ids)}")
    # Workers fail their trials on SIGTERM; one that was SIGKILLed first would leave its trial RUNNING.
    failed = fail_trials_of_jobs(open_study(loaded, None, with_heartbeat=False), loaded, ids)
    if failed:
        click.echo(f"failed and re-enqueued trial(s) left running by cancelled tasks: {failed}")


@cli.command()
@click.argument("study", required=False)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@storage_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (keep it local; use an SSH tunnel from your laptop).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard(study: str | None, config_path: Path | None, storage: str | None, host: str, port: int) -> None:
    """Serve optuna-dashboard on the study's storage (live while the array runs)."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise HpcTuneError(
            "optuna-dashboard is not installed: pip install 'hpc-tune[dashboard]'", "hpctune dashboard"
        ) from None
    from hpc_tune.report.collect import load_study

    loaded = _loaded_for(study, config_path, storage)
    if loaded is None:
        raise StudyNotFoundError(f"no config for study '{study}' here; pass -c CONFIG", "hpctune dashboard")
    spec = resolve_storage(storage or loaded.config.storage, loaded.study_dir)
    opened = load_study(spec, loaded.config.study)
    click.echo(
        f"dashboard for {loaded.config.study} ({spec.display}) on http://{host}:{port}/ — Ctrl-C stops it",
        err=True,
    )
    run_server(opened.storage, host=host, port=port)


def _loaded_for(study: str | None, config_path: Path | None, storage: str | None) -> LoadedConfig | None:
    """The config to use for a STUDY argument: the one given, or hpctune.yaml here if it names STUDY."""
    if config_path is not None:
        loaded = _load(config_path, storage)
        if study is not None and loaded.config.study != study:
            raise ConfigError(
                f"the config describes study '{loaded.config.study}', not '{study}'", config_path
            )
        return loaded
    default = Path(DEFAULT_CONFIG)
    if default.is_file():
        try:
            loaded = _load(default, storage)
        except ConfigError:
            loaded = None
        if loaded is not None and (study is None or loaded.config.study == study):
            return loaded
    if study is None:
        raise StudyNotFoundError("name a STUDY or pass -c CONFIG", "hpctune collect")
    return None


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="hpctune")
