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
from dataclasses import dataclass
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
    from hpc_tune.study.lint import lint, lint_against_study, lint_for_task
    from hpc_tune.study.shared import existing_study_attrs
    from hpc_tune.tasks.base import load_task

    loaded = _load(config_path)
    # Import the task as a worker would: a missing file, a typo in the module or a broken import is one line
    # here, not a failure in every array task.
    task = load_task(loaded.config.task, loaded.root, has_space=loaded.config.space is not None)
    findings = lint(loaded.config) + lint_for_task(loaded.config, task.kind)
    try:
        # A study submitted before: is this config still the one its trials ran with?
        attrs = existing_study_attrs(
            resolve_storage(loaded.config.storage, loaded.study_dir), loaded.config.study
        )
    except HpcTuneError:
        attrs = None  # an unreachable database is the workers' problem; check warns about the config
    if attrs is not None:
        findings += lint_against_study(loaded.config, attrs)
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

    from hpc_tune.report.collect import collect_shared, format_table
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
    result = collect_shared(shared, loaded.study_dir, config=c)
    click.echo(format_table(result.summary))
    if report.recovered_trials:
        click.echo(f"recovered trials of killed workers: {report.recovered_trials} (retried)")
    _echo_paths(result)
    return 0


def _echo_paths(result: Any) -> None:
    click.echo(f"summary: {_shown(result.summary_path)}")
    click.echo(f"trials:  {_shown(result.csv_path)}")
    if result.report is not None:
        click.echo(f"digest:  {_shown(result.report.digest)}")
        click.echo(f"report:  {_shown(result.report.html)}")


study_argument = click.argument("study", required=False)
any_config_option = click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The study's YAML file (default: hpctune.yaml when it names STUDY).",
)
results_option = click.option(
    "--results",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs"),
    show_default=True,
    help="Results root when no config is given.",
)
importance_option = click.option(
    "--importance",
    type=click.Choice(["ped_anova", "fanova"]),
    default="ped_anova",
    show_default=True,
    help="Importance evaluator (fANOVA is much slower on large studies).",
)


@dataclass(frozen=True)
class _Target:
    """A study to report on: from its config, or from its name and the storage alone (any Optuna study)."""

    name: str
    study_dir: Path
    loaded: LoadedConfig | None
    opened: Any  # hpc_tune.study.shared.SharedStudy

    @property
    def budget(self) -> int | None:
        return self.loaded.config.trials if self.loaded is not None else None

    @property
    def config(self) -> Any:
        return self.loaded.config if self.loaded is not None else None


def _target(study: str | None, storage: str | None, results: Path, loaded: LoadedConfig | None) -> _Target:
    # From the study wing, not the collector: `status --watch` runs for hours on a login node, kept light.
    from hpc_tune.study.shared import load_existing_study as load_study

    if loaded is not None:
        name, study_dir = loaded.config.study, loaded.study_dir
        url = storage or loaded.config.storage
    else:
        assert study is not None
        from hpc_tune.study.config import STUDY_NAME_RE

        if not STUDY_NAME_RE.match(study):
            raise ConfigError(f"{study!r} is not a valid study name", "STUDY")
        name, study_dir = study, (results / study).resolve()
        url = storage or os.environ.get("HPCTUNE_STORAGE") or None
    spec = resolve_storage(url, study_dir)
    # With the study's config, trials of workers that died without a word are failed before counting.
    liveness = loaded.config.worker if loaded is not None else None
    return _Target(name, study_dir, loaded, load_study(spec, name, liveness, study_dir))


@cli.command(name="collect")
@study_argument
@any_config_option
@storage_option
@results_option
@importance_option
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
    importance: str,
    as_json: bool,
    slurm_guard: bool,
) -> None:
    """Aggregate STUDY: summary.json, trials.csv, report.html, summary.md; print best, top-5, importance,
    warnings and what to change. Any Optuna study works, from --storage or HPCTUNE_STORAGE alone."""
    from hpc_tune.errors import AllTrialsFailedError
    from hpc_tune.report.collect import collect_shared, every_trial_failed, format_table

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
    target = _target(study, storage, results, loaded)
    result = collect_shared(
        target.opened,
        target.study_dir,
        config=target.config,
        importance=importance,  # type: ignore[arg-type]
    )
    if as_json:
        click.echo(json.dumps(result.summary, indent=2))
    else:
        click.echo(format_table(result.summary))
        _echo_paths(result)
    if every_trial_failed(result.summary):
        reasons = ", ".join(f"{k} {v}" for k, v in result.summary["reasons"].items())
        raise AllTrialsFailedError(f"every trial failed ({reasons})", _shown(result.summary_path))


@cli.command(name="rerun-top")
@click.argument("study")
@any_config_option
@storage_option
@click.option(
    "--k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="How many of the best."
)
@click.option(
    "--seeds", type=click.IntRange(min=1), default=3, show_default=True, help="New seeds per configuration."
)
@click.option("--name", default=None, help="The linked study's name (default: STUDY-confirm).")
@click.option("--local", "local", is_flag=True, help="Run the workers here, then collect.")
@click.option("-w", "--workers", type=click.IntRange(1, 256), default=None, help="With --local (default 2).")
@click.option(
    "--array",
    "array",
    type=ArraySpecType(),
    default=None,
    help="Submit the workers as a SLURM array (as sbatch --array: 0-7%4).",
)
@click.pass_context
def rerun_top(
    ctx: click.Context,
    study: str,
    config_path: Path | None,
    storage: str | None,
    k: int,
    seeds: int,
    name: str | None,
    local: bool,
    workers: int | None,
    array: Any,
) -> None:
    """Re-run the top K configurations of STUDY at full fidelity with SEEDS new seeds each, as a linked
    study (STUDY-confirm) on the same storage: single-seed winners are often noise. Without --local or
    --array, only enqueue and say how to run it."""
    from hpc_tune.study.confirm import confirm_top

    _setup_logging(False)
    _refuse_password_in_argv(storage)
    if local and array is not None:
        raise click.UsageError("--local and --array exclude each other")
    if workers is not None and not local:
        raise click.UsageError("--workers needs --local")
    loaded = _loaded_for(study, config_path, storage)
    if loaded is None:
        raise StudyNotFoundError(f"no config for study '{study}' here; pass -c CONFIG", "hpctune rerun-top")
    # What the array's workers will see: the file's storage, or HPCTUNE_STORAGE exported by sbatch.
    if array is not None and storage and storage != load_config(loaded.path).config.storage:
        raise ConfigError(
            "SLURM workers read the storage from the config or HPCTUNE_STORAGE, not --storage: set "
            "HPCTUNE_STORAGE instead",
            "--storage",
        )
    plan = confirm_top(loaded, storage, k=k, seeds=seeds, name=name)
    if len(plan.sources) < k:
        click.echo(
            f"warning: {study} has {len(plan.sources)} complete trial(s): confirming {len(plan.sources)}, "
            f"not {k}",
            err=True,
        )
    config_file = _shown(plan.loaded.path)  # type: ignore[arg-type]
    click.echo(
        f"confirming trial(s) {', '.join(map(str, plan.sources))} of {study} with {seeds} new seed(s) each "
        f"at full fidelity: study {plan.study}, config {config_file}"
    )
    click.echo(f"enqueued {len(plan.enqueued)} trial(s); {plan.already_there} already there")
    quoted = shlex.quote(str(config_file))
    if local:
        ctx.invoke(run, config_path=plan.loaded.path, storage=storage, local=True, workers=workers or 2)
        _show_confirmation(loaded, storage)
    elif array is not None:
        ctx.invoke(submit, config_path=plan.loaded.path, array=array)
        original_file = shlex.quote(str(_shown(loaded.path)))  # type: ignore[arg-type]
        click.echo(f"when it is done: hpctune collect {study} -c {original_file}")
    else:
        flag = f" --storage {shlex.quote(storage)}" if storage else ""
        click.echo(f"run here:    hpctune run --local --workers 2 -c {quoted}{flag}")
        click.echo(f"or on SLURM: hpctune submit -c {quoted} --array 0-{min(plan.trials, 8) - 1}")


def _show_confirmation(loaded: LoadedConfig, storage: str | None) -> None:
    """Collect the original study again, now with its confirmation, and print mean ± sd per configuration."""
    from hpc_tune.report.collect import collect_shared, load_study
    from hpc_tune.report.confirmation import format_confirmation

    c = loaded.config
    opened = load_study(resolve_storage(storage or c.storage, loaded.study_dir), c.study)
    result = collect_shared(opened, loaded.study_dir, config=c)
    if result.summary["confirmation"] is not None:
        click.echo(format_confirmation(result.summary["confirmation"]))
    click.echo(f"{c.study} collected again, with its confirmation:")
    _echo_paths(result)


@cli.command(name="next")
@study_argument
@any_config_option
@storage_option
@results_option
@importance_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the next study's YAML here (default: print it).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def next_cmd(
    study: str | None,
    config_path: Path | None,
    storage: str | None,
    results: Path,
    importance: str,
    output: Path | None,
    force: bool,
) -> None:
    """Write the next study's hpctune.yaml: ranges widened at an edge and narrowed around the top-k,
    negligible parameters frozen, phases ordered by importance, the pruner's warm-up raised where curves
    become reliable. Each change is a comment at the top of the file."""
    import yaml

    from hpc_tune.report.advice import next_yaml
    from hpc_tune.report.collect import summarize
    from hpc_tune.study.records import atomic_write_text, read_trials

    _refuse_password_in_argv(storage)
    if output is not None and output.exists() and not force:
        raise ConfigError("file exists; pass --force to overwrite it", output)
    target = _target(study, storage, results, _loaded_for(study, config_path, storage, "next"))
    summary = summarize(
        target.opened.study,
        read_trials(target.study_dir),
        budget=target.budget,
        config=target.config,
        importance=importance,  # type: ignore[arg-type]
    )
    raw = None
    if target.loaded is not None and target.loaded.path is not None:
        raw = yaml.safe_load(target.loaded.path.read_text(encoding="utf-8"))
    source = str(_shown(target.loaded.path)) if target.loaded is not None and target.loaded.path else None
    text = next_yaml(summary, summary["recommendations"], raw, source=source)
    if output is None:
        click.echo(text, nl=False)
        return
    atomic_write_text(output, text)
    changes = summary["recommendations"]["changes"]
    click.echo(
        f"wrote {_shown(output)}: {len(changes)} change(s); review it, then: "
        f"hpctune check -c {_shown(output)}"
    )


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
    """Counts by state, running trials (epoch, host, task), throughput and ETA; with the study's config, its
    current SLURM array too. Works from --storage or HPCTUNE_STORAGE alone."""
    if (interval is not None or count is not None) and not watch:
        raise click.UsageError("--interval and --count go with --watch")
    _refuse_password_in_argv(storage)
    loaded = _loaded_for(study, config_path, storage, "status")
    opened = _target(study, storage, results, loaded).opened
    if not watch:
        click.echo(_status_text(opened, loaded)[1])
        return
    _watch_status(opened, loaded, 10.0 if interval is None else interval, count)


def _status_text(opened: Any, loaded: LoadedConfig | None) -> tuple[Any, str]:
    """One look at the study (and, with its config, at squeue): the Progress and its text."""
    import optuna

    from hpc_tune.report.progress import format_progress, progress_of

    if loaded is not None:
        # Each refresh, as on opening: a worker that died mid-watch does not leave its trial RUNNING forever.
        optuna.storages.fail_stale_trials(opened.study)
    progress = progress_of(opened.study, budget=loaded.config.trials if loaded is not None else None)
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
    from hpc_tune.slurm.submit import status as slurm_status

    if shutil.which("squeue") is None:
        return None, None
    try:
        return slurm_status(loaded).current(running_arrays), None
    except SlurmError as exc:
        return None, f"slurm: squeue did not answer: {exc.what}"


def _watch_status(opened: Any, loaded: LoadedConfig | None, interval: float, count: int | None) -> None:
    """Refresh in place on a terminal (rich Live), or print each refresh after the last one when piped (a
    log then holds the history). Ends when the study is done, after ``count`` refreshes, or on Ctrl-C."""
    import time
    from datetime import datetime

    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console(highlight=False)
    live = Live(console=console, auto_refresh=False, transient=False) if console.is_terminal else None
    shown = 0
    try:
        if live is not None:
            live.start()
        while True:
            progress, text = _status_text(opened, loaded)
            header = f"{datetime.now():%H:%M:%S}, every {interval:g} s (Ctrl-C stops)"
            if live is not None:
                live.update(Text(f"{header}\n{text}"), refresh=True)
            else:
                click.echo(("\n" if shown else "") + f"{header}\n{text}")
            shown += 1
            if progress.done or (count is not None and shown >= count):
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        if live is not None:
            live.stop()


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
@study_argument
@any_config_option
@storage_option
@results_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (keep it local; use an SSH tunnel from your laptop).",
)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard(
    study: str | None, config_path: Path | None, storage: str | None, results: Path, host: str, port: int
) -> None:
    """Serve optuna-dashboard on the study's storage (live while the array runs); from --storage or
    HPCTUNE_STORAGE alone too."""
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise HpcTuneError(
            "optuna-dashboard is not installed: pip install 'hpc-tune[dashboard]'", "hpctune dashboard"
        ) from None
    _refuse_password_in_argv(storage)
    target = _target(study, storage, results, _loaded_for(study, config_path, storage, "dashboard"))
    click.echo(
        f"dashboard for {target.name} ({target.opened.spec.display}) on http://{host}:{port}/ "
        "— Ctrl-C stops it",
        err=True,
    )
    run_server(target.opened.storage, host=host, port=port)


def _loaded_for(
    study: str | None, config_path: Path | None, storage: str | None, command: str = "collect"
) -> LoadedConfig | None:
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
        raise StudyNotFoundError("name a STUDY or pass -c CONFIG", f"hpctune {command}")
    return None


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="hpctune")
