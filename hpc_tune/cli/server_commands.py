"""``hpctune server``: the study server of ``storage: server`` on a login node or a workstation (``start``,
``stop``, ``status``), and ``run``, what the SLURM server job runs in the foreground."""

from __future__ import annotations

from pathlib import Path

import click

from hpc_tune.cli.app import cli, config_option, load
from hpc_tune.config import LoadedConfig
from hpc_tune.errors import ConfigError

workers_option = click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Workers of the study at once: sizes max_connections (server.max_connections: auto).",
)


def _server_config(config_path: Path) -> LoadedConfig:
    loaded = load(config_path)
    if not loaded.config.on_server:
        raise ConfigError("the study does not use the study server: set storage: server", loaded.path)
    return loaded


@cli.group()
def server() -> None:
    """The study server of storage: server: a PostgreSQL server hpctune runs itself for the study."""


@server.command()
@config_option
@workers_option
def start(config_path: Path, workers: int | None) -> None:
    """Start the study's server here, in the background; it runs until `hpctune server stop`."""
    from hpc_tune.storage.server.service import start_detached

    loaded = _server_config(config_path)
    address = start_detached(loaded, workers=workers)
    click.echo(
        f"study server of {loaded.config.study} running on {address.where()}; data {loaded.server_dir}"
    )


@server.command()
@config_option
def stop(config_path: Path) -> None:
    """Stop the study's server (fast shutdown: clients are disconnected, nothing is lost)."""
    from hpc_tune.storage.server.service import stop_server

    loaded = _server_config(config_path)
    address = stop_server(loaded)
    if address is None:
        click.echo(f"no study server of {loaded.config.study} was running")
        return
    click.echo(f"stopped the study server of {loaded.config.study} at {address.where()}")


@server.command(name="status")
@config_option
def server_status(config_path: Path) -> None:
    """Whether the study's server runs, where, and which PostgreSQL it is."""
    from hpc_tune.storage.server.files import ServerFiles
    from hpc_tune.storage.server.service import running_address

    loaded = _server_config(config_path)
    address = running_address(loaded)
    if address is None:
        files = ServerFiles(loaded.server_dir)
        state = "its data is there" if files.initialized else "it was never started"
        click.echo(f"study server of {loaded.config.study}: not running ({state}: {loaded.server_dir})")
        return
    click.echo(
        f"study server of {loaded.config.study}: running on {address.where()}, PostgreSQL {address.version}, "
        f"since {address.started_at}; data {loaded.server_dir}"
    )


@server.command(name="run")
@config_option
@workers_option
@click.option(
    "--listen",
    default="*",
    show_default=True,
    help="Addresses to listen on: every interface, since workers run on other nodes.",
)
@click.option(
    "--owner-pid",
    type=click.IntRange(min=1),
    default=None,
    help="Stop once this process of this host has ended (how a command's own server is tied to it).",
)
def run_server(config_path: Path, workers: int | None, listen: str, owner_pid: int | None) -> None:
    """Run the study's server in the foreground until the study is done: what the SLURM server job runs."""
    from hpc_tune.storage.server.service import serve

    serve(_server_config(config_path), workers=workers, listen=listen, owner=owner_pid)
