"""``hpctune check``: everything that can be known about a study before an array spends GPU-hours on it.

The config is valid (loading it proved that); the task is imported as a worker would import it, so a
missing file, a typo in a module or a broken import is one line here and not a failure in every array task;
the config's lint (config/lint.py) warns about settings that waste trials; a PostgreSQL storage is asked
whether it answers and how many connections it allows, against what the array's workers will need
(storage/probe.py); and a study submitted before is compared with this config, which must still be the one
its trials ran with. When the study has a learning-rate range test (``hpctune lr-range``), the space's
``lr`` is compared with the range it suggested.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_tune import attrs
from hpc_tune.config import TRIALS_PER_GPU_AUTO_MAX, Config, LoadedConfig
from hpc_tune.config.lint import LintFinding, lint, lint_for_task
from hpc_tune.config.space import FloatParam
from hpc_tune.errors import HpcTuneError, StorageError
from hpc_tune.lr_range.result import LR_RANGE_JSON, LrRangeResult, read_result
from hpc_tune.lr_range.suggest import yaml_number
from hpc_tune.policy.shared_study import existing_study_attrs
from hpc_tune.slurm import ArraySpec
from hpc_tune.storage.connections import peak_connections
from hpc_tune.storage.probe import DatabaseProbe, probe_database
from hpc_tune.storage.server.binaries import find_binaries
from hpc_tune.storage.server.service import SPARE_CONNECTIONS, running_address
from hpc_tune.storage.url import StorageSpec, spec_of
from hpc_tune.tasks.base import load_task


@dataclass(frozen=True)
class Preflight:
    """What ``check`` found: the warnings, the task's kind, where the study lives (redacted) and, for a
    PostgreSQL storage, what the database said."""

    loaded: LoadedConfig
    task_kind: str
    findings: list[LintFinding]
    storage: str
    database: DatabaseProbe | None = None
    workers: int | None = None
    server: str | None = None  # storage: server: the binaries it will run and whether it runs now
    pack: str | None = None  # slurm.trials_per_gpu other than 1: what each array task will run

    def database_line(self) -> str | None:
        """What the database said, for a reader deciding whether to submit."""
        if self.server is not None:
            return self.server
        db = self.database
        if db is None or not db.reachable:
            return None
        limit = "no limit of its own" if db.role_limit is None or db.role_limit < 0 else f"{db.role_limit}"
        return (
            f"storage: PostgreSQL {db.version} answers; role {db.role}: connection limit {limit}, server "
            f"max_connections {db.server_limit} ({db.reserved} reserved for superusers)"
        )

    def summary_line(self) -> str:
        c = self.loaded.config
        parameters = (
            f"{len(c.space)} parameter{'s' if len(c.space) != 1 else ''}"
            if c.space
            else "parameters defined by the objective"
        )
        n = len(self.findings)
        return (
            f"ok: study {c.study}, {parameters}, {c.trials} trials x {c.effective_epochs()} epochs, "
            f"sampler {c.sampler.type}, pruner {c.pruner.type}, storage {self.storage}"
            + (f" ({n} warning{'s' if n != 1 else ''})" if n else "")
        )


def preflight(loaded: LoadedConfig, array: ArraySpec | None = None) -> Preflight:
    """``array``: the ``--array`` the study will be submitted with (its ``%N`` or task count is the number
    of workers at once); else ``slurm.array_parallelism`` when set."""
    config = loaded.config
    task = load_task(config.task, loaded.root, has_space=config.space is not None)
    findings = lint(config) + lint_for_task(config, task.kind)
    spec = spec_of(loaded)
    workers = _workers(config, array)
    database = None
    server = None
    if spec.is_server:
        server, found = _study_server(loaded, workers)
        findings += found
    elif spec.is_postgres:
        database = probe_database(spec)
        findings += lint_database(config, spec, database, workers)
    recorded = None
    if not spec.is_server and (database is None or database.reachable):  # do not wait twice
        try:
            # A study submitted before: is this config still the one its trials ran with?
            recorded = existing_study_attrs(spec, config.study)
        except HpcTuneError:
            recorded = None  # the workers' problem; check warns about the config
    if recorded is not None:
        findings += lint_against_study(config, recorded)
    findings += _lr_range_findings(loaded)
    storage = "embedded" if config.embedded else spec.display
    pack = pack_line(config, recorded)
    return Preflight(loaded, task.kind, findings, storage, database, workers, server, pack)


def pack_line(config: Config, study_attrs: Mapping[str, Any] | None = None) -> str | None:
    """What ``slurm.trials_per_gpu`` will make each array task run, for a reader deciding on it."""
    s = config.slurm
    setting = s.trials_per_gpu
    if setting == 1:
        return None
    gpu = bool(s.gres and "gpu" in s.gres)
    on = f"its GPU(s) ({s.gres})" if gpu else f"its {s.cpus_per_task} cores (slurm.gres asks for no GPU)"
    if setting == "auto":
        cap = min(TRIALS_PER_GPU_AUTO_MAX, s.cpus_per_task)
        line = (
            f"trials_per_gpu: auto: each array task measures 1, 2, 4, ... workers (at most {cap}) on {on} "
            "with its first trials, keeps the best and records it in the study"
        )
        recorded = (study_attrs or {}).get(attrs.TRIALS_PER_GPU)
        if isinstance(recorded, dict) and "n" in recorded:
            line += f"; the study recorded {recorded['n']} ({recorded.get('why')}), which tasks start with"
        return line
    threads = max(1, s.cpus_per_task // setting)
    line = f"trials_per_gpu: {setting} workers per array task on {on}, {threads} thread(s) each"
    if gpu:
        share = config.train.memory_fraction / setting
        line += (
            f" and train.memory_fraction {share:.3g}; CUDA MPS when nvidia-cuda-mps-control is on the "
            "node's PATH"
        )
    return line


def _study_server(loaded: LoadedConfig, workers: int | None) -> tuple[str, list[LintFinding]]:
    """Which PostgreSQL the study server will run (or how to get one), whether it runs, and a
    ``server.max_connections`` too small for the array."""
    try:
        bins = find_binaries(loaded.config.server.bin_dir)
    except StorageError as exc:
        return f"storage: the study server has no PostgreSQL here: {exc.what}", [
            LintFinding("server.bin_dir", exc.what)
        ]
    address = running_address(loaded)
    state = f"runs at {address.where()}" if address is not None else "is not running (submit starts it)"
    line = f"storage: the study server will run {bins.describe()}; it {state}"
    setting = loaded.config.server.max_connections
    if setting == "auto" or workers is None:
        return line, []
    needed = peak_connections(workers, loaded.config.worker.pool)
    if needed + SPARE_CONNECTIONS <= setting:
        return line, []
    return line, [
        LintFinding(
            "server.max_connections",
            f"is {setting} but {workers} workers at once need up to {needed} connections, plus "
            f"{SPARE_CONNECTIONS} for collect, status and a dashboard: set it to "
            f"{needed + SPARE_CONNECTIONS} or auto",
        )
    ]


def _workers(config: Config, array: ArraySpec | None) -> int | None:
    """Processes holding the study open at once: the array's tasks at once, times each task's workers."""
    tasks = (array.parallelism or array.count) if array is not None else config.slurm.array_parallelism
    return None if tasks is None else tasks * config.slurm.workers_per_task()


def lint_database(
    config: Config, spec: StorageSpec, db: DatabaseProbe, workers: int | None
) -> list[LintFinding]:
    """Warnings about the database as it answered (or did not) from here."""
    if not db.reachable:
        return [
            LintFinding(
                "storage",
                f"{spec.display} does not answer from here ({db.error}); the compute nodes may reach it, "
                "but make sure before submitting an array",
            )
        ]
    usable = db.usable_by_role
    if workers is None or usable is None:
        return []
    needed = peak_connections(workers, config.worker.pool)
    if needed <= usable:
        return []
    which = (
        f"role {db.role} may hold {db.role_limit}"
        if db.role_limit is not None and 0 <= db.role_limit <= usable
        else f"the server allows {usable} for roles like {db.role}"
    )
    fits = max(1, (usable - 2) if config.worker.pool != "persistent" else usable // 3)
    return [
        LintFinding(
            "storage",
            f"{workers} workers at once need up to {needed} connections (worker.pool "
            f"{config.worker.pool}) but {which}: they will wait for each other's connections. Lower the "
            f"array's parallelism to {fits}, set worker.pool: none, or connect through PgBouncer in "
            'transaction mode (docs/concepts.md, "Connections")',
        )
    ]


def lint_against_study(config: Config, study_attrs: Mapping[str, Any]) -> list[LintFinding]:
    """Warnings that need the study as it is on the storage (its user attributes): a config changed between
    two submits of the same study."""
    recorded = study_attrs.get(attrs.EPOCHS)
    epochs = config.effective_epochs()
    if not isinstance(recorded, int) or recorded == epochs:
        return []
    key = (
        "fidelity.epochs" if config.fidelity is not None and config.fidelity.epochs is not None else "epochs"
    )
    return [
        LintFinding(
            key,
            f"is {epochs} but study '{config.study}' was created with trials of {recorded} epochs; trials of "
            f"different lengths would be ranked together: set it back to {recorded}, or use a new study name",
        )
    ]


# A space's lr range this many times wider (as a ratio high / low) than the range test's suggestion spends
# most of its trials where the loss does not fall or diverges.
LR_RANGE_TOO_WIDE = 100.0


def _lr_range_findings(loaded: LoadedConfig) -> list[LintFinding]:
    try:
        result = read_result(loaded.study_dir)
    except HpcTuneError as exc:
        return [LintFinding("lr-range", exc.line())]
    return [] if result is None else lint_lr_range(loaded.config, result)


def lint_lr_range(config: Config, result: LrRangeResult) -> list[LintFinding]:
    """Warnings about the space's learning rate against the study's range test: a range that misses the
    suggestion, or one far wider than it."""
    suggestion = result.suggestion
    spec = (config.space or {}).get(result.param)
    if suggestion is None or not isinstance(spec, FloatParam) or spec.low <= 0:
        return []  # no suggestion, or the space no longer has the parameter the test swept
    key = f"space.{result.param}"
    where = Path(config.results) / config.study / LR_RANGE_JSON  # as the config names it
    found = f"the range test's {suggestion.low:.1e} to {suggestion.high:.1e} ({where})"
    fix = f"low: {yaml_number(suggestion.low)}, high: {yaml_number(suggestion.high)}"
    if spec.high < suggestion.low or spec.low > suggestion.high:
        side = "below" if spec.high < suggestion.low else "above"
        return [
            LintFinding(
                key,
                f"is {spec.low:.1e} to {spec.high:.1e}, all {side} {found}: no trial would train at a rate "
                f"where the loss falls well; set {fix}, or run hpctune lr-range again",
            )
        ]
    wider = (spec.high / spec.low) / (suggestion.high / suggestion.low)
    if wider > LR_RANGE_TOO_WIDE:
        return [
            LintFinding(
                key,
                f"is {spec.low:.1e} to {spec.high:.1e}, {wider:.0f} times as wide (as a ratio) as {found}: "
                f"most trials would go where the loss does not fall or diverges; narrow it to {fix}",
            )
        ]
    return []
