"""Render the worker-array and collector sbatch scripts from a validated config.

The scripts are meant to be read (and submitted by hand) by users and SLURM admins, so they are plain
``#SBATCH`` lines plus a few commented shell lines. Every value that reaches them is validated here and
``shlex.quote``d (sbatch's directive parser understands the same quoting as bash), and no secret is ever
written: the worker finds its storage URL in the config or ``HPCTUNE_STORAGE`` at run time.

Layout: ``jobs/<study>.sh`` is the array and the only script of the study that ``jobs/*.sh`` matches;
the collector lives in ``jobs/collect/<study>.sh``. ``sbatch A.sh B.sh`` submits A.sh alone (B.sh becomes
its argument), so the literal ``sbatch jobs/*.sh`` can only work if one script brings the rest: the array's
first task submits the collector (and the other parts of a split array) itself, unless ``hpctune submit``
did (it exports ``HPCTUNE_COLLECTOR=submitted``).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import tempfile
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import jinja2

from hpc_tune.config import LoadedConfig
from hpc_tune.errors import ConfigError
from hpc_tune.launchers.options import check_no_password, check_setup, refuse_embedded_array, sbatch_options
from hpc_tune.slurm import (
    DEFAULT_MAX_ARRAY_SIZE,
    OFFSET_ENV,
    ArrayChunk,
    ArraySpec,
    job_name_for,
    requeue_self,
)

__all__ = ["COLLECTOR_ENV", "RenderedScripts", "array_sbatch_args", "render_scripts"]

# Exported by ``hpctune submit`` (and by the first task to the parts it submits) so that no array task
# submits a second collector; any non-empty value counts, "submitted" says why it is there.
COLLECTOR_ENV = "HPCTUNE_COLLECTOR"
COLLECTOR_SUBMITTED = "submitted"

_TEMPLATES = Path(__file__).parent / "templates"
# Control characters would end a comment line or an #SBATCH directive early; backslash means "no %
# substitution" to SLURM's filename patterns. Neither belongs in a path we write into a script.
_BAD_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


@dataclass(frozen=True)
class RenderedScripts:
    """Both scripts of a study, as written, plus the array parts to submit (one unless split).

    ``neighbours`` are the other ``*.sh`` beside the array script (another study's, or a user's own): with
    them ``sbatch jobs/*.sh`` would submit only the first.
    """

    array_path: Path
    collect_path: Path
    array_text: str
    collect_text: str
    job_name: str
    chunks: tuple[ArrayChunk, ...]
    logs_dir: Path
    neighbours: tuple[Path, ...] = ()
    # storage: server: the server job's script, which is then jobs/<study>.sh (the array moves to jobs/array/)
    server_path: Path | None = None
    server_text: str | None = None

    @property
    def entry_path(self) -> Path:
        """The one script of the study that ``sbatch jobs/*.sh`` submits: it brings the others."""
        return self.server_path if self.server_path is not None else self.array_path


def _version() -> str:
    try:
        return metadata.version("hpc-tune")
    except metadata.PackageNotFoundError:
        return "unknown"


def _pack_comment(trials_per_gpu: int | str) -> list[str]:
    """What the worker line does with ``slurm.trials_per_gpu``, for a reader of the script; none for 1."""
    if trials_per_gpu == 1:
        return []
    how_many = (
        "as many workers as its first trials show the GPU(s) run best"
        if trials_per_gpu == "auto"
        else f"{trials_per_gpu} workers on the task's GPU(s)"
    )
    return textwrap.wrap(
        f"slurm.trials_per_gpu: {trials_per_gpu}: this `hpctune worker` runs {how_many} (through CUDA MPS "
        "when nvidia-cuda-mps-control is on PATH), passes USR2 on to them and requeues the task once they "
        "have all handed their trials on.",
        width=108,
    )


def _check_path(path: Path, what: str) -> str:
    text = os.fspath(path)
    if _BAD_PATH_CHARS.search(text):
        raise ConfigError(f"{what} {text!r} has a control character or backslash, not allowed in job scripts")
    return text


def _log_pattern(logs_dir: str, name: str) -> str:
    """Quote a log path for --output/--error, where SLURM expands %A, %a, %j: a % of the directory is %%."""
    return shlex.quote(logs_dir.replace("%", "%%") + "/" + name)


def _command(cmd: str, *args: str) -> str:
    parts = shlex.split(cmd)
    if not parts:
        raise ConfigError("the hpctune command to put in the scripts is empty")
    return shlex.join([*parts, *args])


def array_sbatch_args(chunk: ArrayChunk, n_chunks: int) -> list[str]:
    """Extra sbatch arguments with which ``hpctune submit`` submits one part of the array.

    Always ``HPCTUNE_COLLECTOR=submitted``: submit queues the collector itself, so the array's first task
    must not queue a second one. A split array adds the part's ``--array`` and offset.
    """
    export = f"--export=ALL,{COLLECTOR_ENV}={COLLECTOR_SUBMITTED}"
    if n_chunks == 1:
        return [export]
    return [f"--array={chunk.spec}", f"{export},{OFFSET_ENV}={chunk.offset}"]


def _write_both(files: Sequence[tuple[Path, str]]) -> None:
    """All scripts or none: write temporary files, rename them into place, and put the old files back if a
    rename fails (a new array script next to a stale collector would mislead)."""
    temps: list[tuple[str, Path]] = []
    placed: list[tuple[Path, str | None]] = []
    backups: list[str] = []
    try:
        for path, text in files:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            # 0755: readable by the SLURM admin who is asked why a job failed; nothing secret inside.
            os.chmod(tmp, 0o755)
        for tmp, path in temps:
            backup = None
            if path.is_file():
                fd, backup = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".bak")
                os.close(fd)
                backups.append(backup)
                shutil.copy2(path, backup)
            os.replace(tmp, path)
            placed.append((path, backup))
    except OSError as exc:
        for path, backup in reversed(placed):
            if backup is not None:
                os.replace(backup, path)
            else:
                path.unlink(missing_ok=True)
        where = files[0][0].parent
        raise ConfigError(f"cannot write the job scripts: {exc.strerror or exc}", where) from None
    finally:
        for leftover in [tmp for tmp, _ in temps] + backups:
            if os.path.lexists(leftover):
                os.unlink(leftover)


def render_scripts(
    loaded: LoadedConfig,
    array: ArraySpec,
    *,
    out_dir: Path | None = None,
    config_path_for_script: Path | None = None,
    hpctune_cmd: str = "hpctune",
    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE,
    now: datetime | None = None,
) -> RenderedScripts:
    """Write ``<out_dir>/<study>.sh`` (the array) and ``<out_dir>/collect/<study>.sh`` (default out_dir:
    jobs/ next to the config) and create the logs directory, without which SLURM would fail the tasks
    before any output.

    ``array``'s own ``%N`` wins over ``slurm.array_parallelism`` (it came from the command line). An array
    with an index at or above ``max_array_size`` is split; the script's ``--array`` then holds the first
    part and ``chunks`` lists all of them (submit passes each part's ``--array`` and offset; submitted by
    hand, the first part's first task submits the others).
    ``hpctune_cmd`` is shell words (``python -m hpc_tune`` works; quote a path that has spaces).
    """
    cfg = loaded.config
    slurm = cfg.slurm
    check_no_password(loaded)
    refuse_embedded_array(loaded, array)
    config_path = config_path_for_script or loaded.path
    if config_path is None:
        raise ConfigError("the scripts need the config file's path: load the config from a file")
    config_text = _check_path(Path(config_path), "config path")
    _check_path(loaded.root, "config directory")
    study_dir = loaded.study_dir
    logs_dir = study_dir / "logs"
    logs = _check_path(logs_dir, "results directory")
    inductor_cache = _check_path(study_dir / "inductor-cache", "results directory")
    out = Path(out_dir) if out_dir is not None else loaded.root / "jobs"
    # The collector sits in a subfolder so that `sbatch jobs/*.sh` expands to the array script alone; with the
    # study server, to the server's script, which submits the array (in its own subfolder) once it runs.
    server_path = out / f"{cfg.study}.sh" if cfg.on_server else None
    array_path = out / "array" / f"{cfg.study}.sh" if cfg.on_server else out / f"{cfg.study}.sh"
    collect_path = out / "collect" / f"{cfg.study}.sh"
    _check_path(array_path, "jobs directory")
    setup = check_setup(slurm.setup)

    if array.parallelism is None and slurm.array_parallelism is not None:
        array = array.with_parallelism(slurm.array_parallelism)
    chunks = tuple(array.split(max_array_size))
    job_name = job_name_for(cfg.study)

    worker = sbatch_options(loaded, "array")
    array_lines = [
        *worker.lines(worker.resources),
        f"--array={chunks[0].spec}",
        f"--output={_log_pattern(logs, 'array-%A_%a.out')}",
        f"--error={_log_pattern(logs, 'array-%A_%a.err')}",
        "--requeue",
        "--open-mode=append",
        f"--signal=B:USR2@{slurm.signal_grace_s}",
        *worker.lines(worker.extra),
    ]
    collector = sbatch_options(loaded, "collector")
    collect_lines = [
        *collector.lines(collector.resources),
        f"--output={_log_pattern(logs, 'collect-%j.out')}",
        f"--error={_log_pattern(logs, 'collect-%j.err')}",
        "--open-mode=append",
        "--dependency=singleton",
    ]

    # Submitted by hand, the first part's first task submits the other parts (chained by afterany under a
    # %N limit, as submit does) and then the collector after all of them.
    parts = [{"spec": shlex.quote(str(c.spec)), "offset": c.offset} for c in chunks[1:]]
    stamp = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    context = {
        "study": cfg.study,
        "version": _version(),
        "config_comment": config_text,
        "date": stamp,
        "setup": setup,
        "inductor_cache": shlex.quote(inductor_cache),
        "collect_path": shlex.quote(str(collect_path)),
        "array_path": shlex.quote(str(array_path)),
        "grace": slurm.signal_grace_s,
        "requeue_line": requeue_self(),
        "server_path": shlex.quote(str(server_path)) if server_path is not None else None,
        "pack_comment": _pack_comment(slurm.trials_per_gpu),
    }
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_TEMPLATES),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    array_text = env.get_template("worker_array.sh.j2").render(
        **context,
        sbatch_lines=array_lines,
        parts=parts,
        chained=array.parallelism is not None,
        max_array_size=max_array_size,
        worker_cmd=_command(hpctune_cmd, "worker", "-c", config_text),
    )
    collect_text = env.get_template("collect.sh.j2").render(
        **context,
        sbatch_lines=collect_lines,
        collect_cmd=_command(hpctune_cmd, "collect", "--config", config_text, "--slurm-guard"),
    )

    files = [(array_path, array_text), (collect_path, collect_text)]
    server_text = None
    if server_path is not None:
        server = sbatch_options(loaded, "server")
        grace = slurm.server.signal_grace_s
        server_lines = [
            *server.lines(server.resources),
            f"--output={_log_pattern(logs, 'server-%j.out')}",
            f"--error={_log_pattern(logs, 'server-%j.err')}",
            "--open-mode=append",
            "--requeue",
            f"--signal=B:USR1@{grace}",
            "--dependency=singleton",
        ]
        tasks = chunks[0].spec.parallelism or sum(c.spec.count for c in chunks)
        workers = tasks * slurm.workers_per_task()  # slurm.trials_per_gpu: each task's workers connect
        server_text = env.get_template("server.sh.j2").render(
            **{**context, "grace": grace},
            job_name=shlex.quote(job_name),
            sbatch_lines=server_lines,
            server_dir=shlex.quote(_check_path(loaded.server_dir, "server folder")),
            server_cmd=_command(hpctune_cmd, "server", "run", "-c", config_text, "--workers", str(workers)),
        )
        files.append((server_path, server_text))
    entry = server_path if server_path is not None else array_path
    try:
        for folder in {path.parent for path, _ in files} | {logs_dir}:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create directory: {exc.strerror or exc}", exc.filename) from None
    _write_both(files)
    # What the shell's `jobs/*.sh` would add (it skips dot files, as pathlib's glob does not).
    neighbours = tuple(sorted(p for p in out.glob("*.sh") if p != entry and not p.name.startswith(".")))
    return RenderedScripts(
        array_path=array_path,
        collect_path=collect_path,
        array_text=array_text,
        collect_text=collect_text,
        job_name=job_name,
        chunks=chunks,
        logs_dir=logs_dir,
        neighbours=neighbours,
        server_path=server_path,
        server_text=server_text,
    )
