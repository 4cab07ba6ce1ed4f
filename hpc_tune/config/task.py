"""``task: {command: ...}``: an existing training script run as it is, and the placeholders of its command.

Parameters go in through ``{name}`` placeholders and HPCTUNE_* variables, metrics come back on its stdout
(worker/kinds/command.py runs it).
"""

from __future__ import annotations

import re
import string
from typing import Literal

from pydantic import Field, field_validator

from hpc_tune.config.sections import Strict

# What a command task can use besides the space's parameters; each is also an HPCTUNE_<NAME> variable.
COMMAND_PLACEHOLDERS = ("epochs", "seed", "trial", "trial_dir", "checkpoint", "resume", "study")


def command_placeholders(command: str | list[str]) -> list[str]:
    """The ``{name}`` fields of a command, in order; ``{{`` and ``}}`` are literal braces (``${{HOME}}``).

    Raises ValueError for a field Python's format syntax cannot parse or a positional ``{}``."""
    parts = [command] if isinstance(command, str) else list(command)
    names: list[str] = []
    for part in parts:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(part) if f is not None]
        except ValueError as exc:
            raise ValueError(f"{exc} in {part!r} (write {{{{ and }}}} for literal braces)") from None
        for name in fields:
            if not name or name.isdigit():
                raise ValueError(f"{{{name}}} in {part!r} needs a name, e.g. {{lr}}")
            names.append(name)
    return names


class CommandTask(Strict):
    """An existing script, run as it is: parameters go in through placeholders and HPCTUNE_* variables,
    metrics come back on its stdout."""

    command: str | list[str] = Field(
        min_length=1,
        description="What to run for each trial. A string runs under `bash -c` from `cwd`, every "
        "placeholder's value shell-quoted; a list runs the program directly, one argument per element, "
        "values as they are. Placeholders: every `space` parameter, `epochs`, `seed`, `trial`, `trial_dir`, "
        "`checkpoint`, `resume`, `study`; `{{` and `}}` are literal braces.",
    )
    metrics_regex: str | None = Field(
        None,
        description="For a script that prints text: searched in every stdout line; its named groups are the "
        "line's metrics, one of them the study's `metric`, `epoch` optional. `null`: JSON lines.",
    )
    value: Literal["best", "last"] = Field(
        "best",
        description="The trial's value: the `best` epoch's metric (by `direction`) or the `last` epoch's.",
    )
    trial_timeout_s: float | None = Field(
        None,
        gt=0,
        description="Seconds one run of the script may take; then its process group is stopped and the "
        "trial fails with reason `timeout`. `null`: no limit.",
    )
    kill_grace_s: float = Field(
        10.0,
        gt=0,
        description="Seconds between SIGTERM and SIGKILL when the script's process group is stopped (pruned, "
        "timed out, worker interrupted).",
    )
    cwd: str | None = Field(
        None,
        description="The script's working directory, relative to this file's folder. `null`: this file's "
        "folder.",
    )
    env: dict[str, str] = Field(
        {}, description="More environment variables for the script, taken literally (no placeholders)."
    )

    resumes: bool | None = Field(
        None,
        description="Whether the script saves `{checkpoint}` on USR2 and continues from it when `{resume}` "
        "is 1. `null`: when the command names `{checkpoint}` or `{resume}`. A script that does not resume is "
        "not started with too little walltime left (`worker.walltime_admission`).",
    )

    @field_validator("command")
    @classmethod
    def _command(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, str) and not v.strip():
            raise ValueError("must not be empty")
        if isinstance(v, list) and not v[0].strip():
            raise ValueError("the first element must name the program")
        command_placeholders(v)
        return v

    @field_validator("metrics_regex")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"is not a regular expression: {exc}") from None
        return v
