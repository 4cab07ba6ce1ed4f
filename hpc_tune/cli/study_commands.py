"""Commands on a study that exists: ``collect`` it, ``rerun-top`` its best trials with new seeds, write its
``next`` study, serve its ``dashboard``. Each works on any Optuna study, from its name and the storage alone
(policy/locate.py says which study a command means).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import click

from hpc_tune.atomic import jsonable
from hpc_tune.cli.app import (
    ArraySpecType,
    any_config_option,
    cli,
    echo_paths,
    importance_option,
    refuse_password_in_argv,
    results_option,
    setup_logging,
    shown,
    storage_option,
    study_argument,
)
from hpc_tune.cli.local_commands import run
from hpc_tune.cli.slurm_commands import submit
from hpc_tune.config import LoadedConfig
from hpc_tune.errors import AllTrialsFailedError, ConfigError, HpcTuneError, StudyNotFoundError
from hpc_tune.policy.locate import config_for, locate, served


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
    from hpc_tune.collector.collect import collect_shared, every_trial_failed, format_table

    refuse_password_in_argv(storage)
    loaded = config_for(study, config_path, storage)
    if slurm_guard:
        if loaded is None:
            raise ConfigError("--slurm-guard needs the study's config", "--config")
        from hpc_tune.launchers.submit import guard_collector

        waited = guard_collector(loaded)
        if waited:
            click.echo(
                f"tasks of {loaded.config.study} still queued in job(s) {', '.join(waited)}: "
                "collector resubmitted after them"
            )
            return
    with served(loaded, storage):
        target = locate(study, storage, results, loaded)
        result = collect_shared(
            target.opened,
            target.study_dir,
            config=target.config,
            importance=importance,  # type: ignore[arg-type]
        )
    if slurm_guard and loaded is not None and loaded.config.on_server:
        from hpc_tune.storage.server.service import collector_done

        collector_done(loaded)  # the server job stops once no array task is left
    if as_json:
        # Exactly summary.json's text (atomic_write_json writes it so).
        click.echo(json.dumps(jsonable(result.summary.model_dump(mode="json")), indent=2, allow_nan=False))
    else:
        click.echo(format_table(result.summary))
        echo_paths(result)
    if every_trial_failed(result.summary):
        reasons = ", ".join(f"{k} {v}" for k, v in result.summary.reasons.items())
        raise AllTrialsFailedError(f"every trial failed ({reasons})", shown(result.summary_path))


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
    from hpc_tune.policy.rerun_top import confirm_top

    setup_logging(False)
    refuse_password_in_argv(storage)
    if local and array is not None:
        raise click.UsageError("--local and --array exclude each other")
    if workers is not None and not local:
        raise click.UsageError("--workers needs --local")
    loaded = config_for(study, config_path, storage)
    if loaded is None:
        raise StudyNotFoundError(f"no config for study '{study}' here; pass -c CONFIG", "hpctune rerun-top")
    with served(loaded, storage):
        plan = confirm_top(loaded, storage, k=k, seeds=seeds, name=name, for_array=array is not None)
    if len(plan.sources) < k:
        click.echo(
            f"warning: {study} has {len(plan.sources)} complete trial(s): confirming {len(plan.sources)}, "
            f"not {k}",
            err=True,
        )
    config_file = shown(plan.loaded.path)  # type: ignore[arg-type]
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
        original_file = shlex.quote(str(shown(loaded.path)))  # type: ignore[arg-type]
        click.echo(f"when it is done: hpctune collect {study} -c {original_file}")
    else:
        flag = f" --storage {shlex.quote(storage)}" if storage else ""
        click.echo(f"run here:    hpctune run --local --workers 2 -c {quoted}{flag}")
        click.echo(f"or on SLURM: hpctune submit -c {quoted} --array 0-{min(plan.trials, 8) - 1}")


def _show_confirmation(loaded: LoadedConfig, storage: str | None) -> None:
    """Collect the original study again, now with its confirmation, and print mean ± sd per configuration."""
    from hpc_tune.collector.collect import collect_shared
    from hpc_tune.collector.rerun_results import format_confirmation

    c = loaded.config
    with served(loaded, storage):
        opened = locate(None, storage, Path(), loaded, repair=False).opened
        result = collect_shared(opened, loaded.study_dir, config=c)
    if result.summary.confirmation is not None:
        click.echo(format_confirmation(result.summary.confirmation))
    click.echo(f"{c.study} collected again, with its confirmation:")
    echo_paths(result)


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
    from hpc_tune.atomic import atomic_write_text
    from hpc_tune.collector.next_study import next_study

    refuse_password_in_argv(storage)
    if output is not None and output.exists() and not force:
        raise ConfigError("file exists; pass --force to overwrite it", output)
    loaded = config_for(study, config_path, storage, "next")
    with served(loaded, storage):
        target = locate(study, storage, results, loaded)
        path = target.loaded.path if target.loaded is not None else None
        source = str(shown(path)) if path else None
        made = next_study(target, importance=importance, source=source)  # type: ignore[arg-type]
    if output is None:
        click.echo(made.text, nl=False)
        return
    atomic_write_text(output, made.text)
    click.echo(
        f"wrote {shown(output)}: {len(made.changes)} change(s); review it, then: "
        f"hpctune check -c {shown(output)}"
    )


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
    refuse_password_in_argv(storage)
    loaded = config_for(study, config_path, storage, "dashboard")
    with served(loaded, storage):
        target = locate(study, storage, results, loaded)
        click.echo(
            f"dashboard for {target.name} ({target.opened.spec.display}) on http://{host}:{port}/ "
            "— Ctrl-C stops it",
            err=True,
        )
        run_server(target.opened.storage, host=host, port=port)


@cli.command()
@study_argument
@any_config_option
@storage_option
@results_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The file to write: .db or .sqlite for SQLite, anything else an Optuna journal file.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def export(
    study: str | None, config_path: Path | None, storage: str | None, results: Path, output: Path, force: bool
) -> None:
    """Copy STUDY (every trial, its attributes and the study's) into one SQLite or journal file, to archive or
    share it; a study on the study server is copied while or after its server job runs."""
    from hpc_tune.policy.export import export_study

    setup_logging(False)
    refuse_password_in_argv(storage)
    loaded = config_for(study, config_path, storage, "export")
    with served(loaded, storage):
        target = locate(study, storage, results, loaded, repair=False)
        done = export_study(target.opened, output, force=force)
    click.echo(f"exported study {target.name} ({done.trials} trials) to {shown(done.path)} ({done.kind})")
