"""Commands that talk to SLURM: ``render`` the scripts, ``submit`` them, ``cancel`` the study's jobs."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click

from hpc_tune.cli.app import array_option, cli, config_option, load, shown


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
    from hpc_tune.launchers.scripts import render_scripts

    scripts = render_scripts(load(config_path), array, out_dir=out_dir)
    n = len(scripts.chunks)
    what = f"the other {n - 1} part(s) of the split array and the collector" if n > 1 else "the collector"
    if scripts.server_path is not None:
        click.echo(f"wrote {shown(scripts.server_path)} (study server; once it runs it submits the array)")
    click.echo(f"wrote {shown(scripts.array_path)} (worker array; its first task submits {what})")
    click.echo(f"wrote {shown(scripts.collect_path)} (collector)")
    jobs = shown(scripts.entry_path.parent)
    pattern = "*.sh" if jobs == Path(".") else f"{shlex.quote(str(jobs))}/*.sh"
    if not scripts.neighbours:
        click.echo(f"submit by hand: sbatch {pattern}")
        return
    click.echo(f"submit by hand: sbatch {shlex.quote(str(shown(scripts.entry_path)))}")
    names = [p.name for p in scripts.neighbours]
    others = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    click.echo(
        f"warning: {jobs}/ also holds {others}: `sbatch {pattern}` submits only the first file it is given; "
        f'to submit every study there: for f in {pattern}; do sbatch "$f"; done',
        err=True,
    )


@cli.command()
@config_option
@array_option
@click.option("--dry-run", is_flag=True, help="Print the scripts and sbatch commands; submit nothing.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def submit(config_path: Path, array: Any, dry_run: bool, out_dir: Path | None) -> None:
    """Render and submit the worker array and, after it (afterany), the collector."""
    from hpc_tune.launchers.submit import submit as submit_study

    loaded = load(config_path)
    result = submit_study(loaded, array, dry_run=dry_run, out_dir=out_dir)
    if dry_run:
        scripts = result.scripts
        if scripts.server_path is not None:
            click.echo(f"# {scripts.server_path}")
            click.echo(scripts.server_text)
        click.echo(f"# {scripts.array_path}")
        click.echo(scripts.array_text)
        click.echo(f"# {scripts.collect_path}")
        click.echo(scripts.collect_text)
        click.echo("# commands (not run):")
        for line in result.commands:
            click.echo(line)
        return
    if result.server_job_id is not None:
        click.echo(f"study server job: {result.server_job_id}")
    click.echo(f"array job(s): {', '.join(result.array_job_ids)}")
    click.echo(f"collector job: {result.collect_job_id} (afterany)")
    click.echo(f"follow: hpctune status -c {loaded.path}   logs: {result.scripts.logs_dir}")


@cli.command()
@config_option
def cancel(config_path: Path) -> None:
    """Cancel the study's SLURM jobs; workers fail and re-enqueue their running trials on the way out."""
    from hpc_tune.launchers.submit import cancel as cancel_jobs
    from hpc_tune.launchers.submit import fail_trials_of_jobs
    from hpc_tune.policy.shared_study import open_study

    loaded = load(config_path)
    ids = cancel_jobs(loaded)
    if not ids:
        click.echo("no active job of this study")
        return
    click.echo(f"cancelled job(s): {', '.join(ids)}")
    # Workers fail their trials on SIGTERM; one that was SIGKILLed first would leave its trial RUNNING.
    failed = fail_trials_of_jobs(open_study(loaded, None, with_heartbeat=False), loaded, ids)
    if failed:
        click.echo(f"failed and re-enqueued trial(s) left running by cancelled tasks: {failed}")
    if loaded.config.on_server:
        from hpc_tune.storage.server.service import collector_done

        collector_done(loaded)  # nothing left to serve: the server job stops on its own
        click.echo("the study server's job stops once the cancelled tasks have ended")
