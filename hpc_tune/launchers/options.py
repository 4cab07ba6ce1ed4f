"""What every way of starting workers on SLURM asks for, from the config's ``slurm:`` section, built once.

The rendered scripts (scripts.py) write these options as ``#SBATCH`` lines, ``hpc_tune.launch``
(python_api.py) hands them to submitit: the two paths ask SLURM for the same resources because they read the
same mapping. What differs is each path's own mechanics (log paths, ``--array``, how USR2 reaches the
worker), which stay with the path. The checks that must hold before anything is submitted live here too.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from hpc_tune.config import LoadedConfig
from hpc_tune.errors import ConfigError
from hpc_tune.slurm import ArraySpec, job_name_for

# Options whose value hpc_tune owns: a second copy in extra_sbatch would silently win (sbatch keeps the last)
# and break the job name that squeue/singleton key on, the log paths, or the requeue-on-USR2 protocol.
OWNED_OPTIONS = {
    "--job-name": "it is always hpctune-<study>",
    "--array": "use `--array` of hpctune submit/render (or slurm.array_parallelism)",
    "--dependency": "hpctune submit sets it",
    "--output": "logs go to <results>/<study>/logs/",
    "--error": "logs go to <results>/<study>/logs/",
    "--open-mode": "append keeps a requeued task's runs in one log",
    "--signal": "use slurm.signal_grace_s",
    "--no-requeue": "the worker requeues its own task at walltime",
    "--chdir": "scripts run in the config file's directory",
    "--export": "hpctune submit and the array's first task use it (collector, split arrays)",
}
# Control characters would end a comment line or an #SBATCH directive early.
_BAD_LINE_CHARS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

Role = Literal["array", "collector", "server"]


@dataclass(frozen=True)
class SbatchOptions:
    """sbatch's long options without ``--``, each with its value (None: a flag without one), in the order
    the scripts write them. ``resources`` are what hpc_tune sets (with extra_sbatch's value where it names
    one of them), ``extra`` the rest of extra_sbatch, for the array only: it often holds GPU or exclusive
    options that the one-core collector must not ask for."""

    resources: dict[str, str]
    extra: dict[str, str | None]

    def lines(self, options: Mapping[str, str | None]) -> list[str]:
        """``--name=value`` (the value shell-quoted: sbatch's directive parser quotes as bash does), or
        ``--name``."""
        return [f"--{k}" if v is None else f"--{k}={shlex.quote(v)}" for k, v in options.items()]


def sbatch_options(loaded: LoadedConfig, role: Role) -> SbatchOptions:
    s = loaded.config.slurm
    if role == "server":
        return _server_options(loaded)
    resources: dict[str, str] = {"job-name": job_name_for(loaded.config.study), "chdir": str(loaded.root)}
    for option, value in (("partition", s.partition), ("account", s.account), ("qos", s.qos)):
        if value is not None:
            resources[option] = value
    resources["time"] = s.time
    if role == "array" and s.gres is not None:
        resources["gres"] = s.gres
    # The collector needs one core and no GPU.
    resources["cpus-per-task"] = str(s.cpus_per_task) if role == "array" else "1"
    if s.mem is not None:
        resources["mem"] = s.mem
    extra: dict[str, str | None] = {}
    if role == "array":
        for name, value in parse_extra_sbatch(s.extra_sbatch).items():
            if name in resources and value is not None:
                resources[name] = value
            else:
                extra[name] = value
    return SbatchOptions(resources, extra)


def _server_options(loaded: LoadedConfig) -> SbatchOptions:
    """The study server's job: small (``slurm.server``), on the study's account and partition unless it has
    its own, under a name of its own (``--dependency=singleton`` keeps one running)."""
    s, job = loaded.config.slurm, loaded.config.slurm.server
    resources: dict[str, str] = {
        "job-name": f"{job_name_for(loaded.config.study)}-server",
        "chdir": str(loaded.root),
    }
    partition = job.partition or s.partition
    for option, value in (("partition", partition), ("account", s.account), ("qos", s.qos)):
        if value is not None:
            resources[option] = value
    resources["time"] = job.time or s.time
    resources["cpus-per-task"] = str(job.cpus_per_task)
    if job.mem is not None:
        resources["mem"] = job.mem
    return SbatchOptions(resources, {})


def parse_extra_sbatch(lines: Sequence[str]) -> dict[str, str | None]:
    """``slurm.extra_sbatch``: each ``--key=value``, ``--key value`` or ``--flag`` (several on one line
    too). Long options only, so that both paths can name them; none that hpc_tune owns."""
    options: dict[str, str | None] = {}
    for line in lines:
        if _BAD_LINE_CHARS.search(line):
            raise ConfigError(f"slurm.extra_sbatch {line!r} has a control character")
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            raise ConfigError(f"slurm.extra_sbatch {line!r} is not valid: {exc}") from None
        key: str | None = None
        for token in tokens:
            if token.startswith("--"):
                name, sep, value = token[2:].partition("=")
                if f"--{name}" in OWNED_OPTIONS:
                    raise ConfigError(
                        f"slurm.extra_sbatch must not set --{name}: {OWNED_OPTIONS[f'--{name}']}"
                    )
                options[name] = value if sep else None
                key = None if sep else name
            elif key is not None and options[key] is None:
                options[key] = token
                key = None
            else:
                raise ConfigError(f"slurm.extra_sbatch {line!r}: write long options (--name=value)")
    return options


def check_setup(lines: Sequence[str]) -> list[str]:
    """Each setup line must be a complete bash command on its own, so a typo fails here, not on the node."""
    checked = []
    for number, line in enumerate(lines, 1):
        if _BAD_LINE_CHARS.search(line):
            raise ConfigError(f"slurm.setup line {number} has a control character: {line!r}")
        try:
            proc = subprocess.run(
                ["bash", "-n", "-c", line], capture_output=True, text=True, timeout=10, check=False
            )
        except FileNotFoundError:
            proc = None  # no bash here (rendering on another OS): the node's bash will judge
        if proc is not None and proc.returncode != 0:
            detail = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "syntax error"
            detail = re.sub(r"^bash: -c: (line \d+: )?", "", detail)
            raise ConfigError(f"slurm.setup line {number} is not valid bash ({detail}): {line!r}")
        checked.append(line)
    return checked


def check_no_password(loaded: LoadedConfig) -> None:
    """Refuse a storage URL with a password: sbatch and slurmctld keep scripts and env in plain text."""
    url = loaded.config.storage
    if not url:
        return
    try:
        parts = urlsplit(url)
        password = parts.password
        in_query = any(key.lower() == "password" for key in parse_qs(parts.query))
    except ValueError:
        password, in_query = None, False
    if password or in_query:
        raise ConfigError(
            "the storage URL holds a password, which would end up in SLURM's spool and logs: remove it "
            "from the URL and put it in a PGPASSFILE (a 0600 file; export PGPASSFILE in slurm.setup)",
            loaded.path if loaded.path is not None else "storage",
        )


EMBEDDED_ARRAY_REFUSED = (
    "an array of {n} tasks needs a PostgreSQL study: the embedded journal store has no heartbeat, so a "
    "killed task's trial would stay RUNNING forever (and a journal file on a network filesystem is a known "
    "source of corruption); set storage: server (hpctune runs PostgreSQL for the study) or a site's "
    "postgresql+psycopg2://USER@HOST/DB"
)


def refuse_embedded_array(loaded: LoadedConfig, array: ArraySpec) -> None:
    """Liveness across SLURM tasks needs a shared heartbeat, which only the database store has. One task
    is fine: nothing else shares the journal and a requeued task resumes what it left."""
    if loaded.config.embedded and array.count > 1:
        raise ConfigError(EMBEDDED_ARRAY_REFUSED.format(n=array.count), "storage")
