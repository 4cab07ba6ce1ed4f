"""The ``hpctune`` group, the options its commands share, and how output is shown.

Every HpcTuneError becomes exactly one ``Error: <what> (<where>)`` line on stderr with the error's exit code;
click's own usage errors are shortened to one line too, so scripts and humans see the same thing.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from hpc_tune import __version__
from hpc_tune.config import DEFAULT_CONFIG, LoadedConfig, load_config, redact_url, url_password
from hpc_tune.errors import ConfigError, HpcTuneError


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


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpctune")
def cli() -> None:
    """Tune PyTorch models with Optuna on SLURM job arrays: one shared study, many workers."""


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


def load(config_path: Path, storage: str | None = None) -> LoadedConfig:
    refuse_password_in_argv(storage)
    return load_config(config_path, overrides={"storage": storage})


def refuse_password_in_argv(storage: str | None) -> None:
    """Command-line arguments are visible to every user in ``ps``: a password must not travel there."""
    if storage and url_password(storage):
        raise ConfigError(
            "--storage holds a password, which every user can read in `ps`; put it in PGPASSFILE "
            "(or HPCTUNE_STORAGE)",
            redact_url(storage),
        )


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)


def shown(path: Path) -> Path:
    """``path`` as the user would type it here: relative to the current directory when it is below it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def echo_paths(result: Any) -> None:
    """Where a collect wrote its files (a ``Collected``)."""
    click.echo(f"summary: {shown(result.summary_path)}")
    click.echo(f"trials:  {shown(result.csv_path)}")
    if result.report is not None:
        click.echo(f"digest:  {shown(result.report.digest)}")
        click.echo(f"report:  {shown(result.report.html)}")
