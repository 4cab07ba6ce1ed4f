"""The ``hpctune`` command: parse, call the library, print. Nothing here that a test of the library needs.

One module per group of commands; importing this package registers all of them on the ``cli`` group.
"""

from __future__ import annotations

from hpc_tune.cli import (  # noqa: F401 (importing registers the commands)
    local_commands,
    server_commands,
    slurm_commands,
    status,
    study_commands,
)
from hpc_tune.cli.app import cli

__all__ = ["cli", "main"]


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="hpctune")
