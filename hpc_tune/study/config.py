"""hpctune.yaml → a frozen, validated ``Config``.

Every field is validated here, once, with the key path in the message: later code trusts the Config and never
re-checks. Unknown keys are errors because a typo (``epocs: 100``) that passes silently costs a
whole campaign.
"""

from __future__ import annotations

import difflib
import os
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from hpc_tune.errors import ConfigError
from hpc_tune.study.space import ParamSpec, check_space, grid_size

STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DEFAULT_CONFIG = "hpctune.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplerConfig(_Strict):
    type: Literal["tpe", "random", "grid", "cmaes", "qmc"] = "tpe"
    # Every worker must use the same seed for grid; tpe/random add a per-worker offset (see strategy).
    seed: int | None = None
    multivariate: bool = True
    constant_liar: bool = True
    n_startup_trials: int = Field(10, ge=0)


class PrunerConfig(_Strict):
    type: Literal["median", "hyperband", "sh", "patience", "none"] = "median"
    # Warm-up: no pruning before this many completed trials / reported epochs (short curves mislead).
    # "auto" (the default, chosen by benchmarks/search_efficiency.py: docs/strategies.md): from the epoch
    # where the study's completed trials show that early values rank trials as their final values do
    # (study/reliable_pruning.py). A fixed 3 killed the late winners of the benchmark's trap task.
    n_startup_trials: int = Field(5, ge=0)
    n_warmup_steps: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    min_resource: int = Field(1, ge=1)
    reduction_factor: int = Field(3, ge=2)
    patience: int = Field(5, ge=1)


class FidelityConfig(_Strict):
    data_fraction: float = Field(1.0, gt=0.0, le=1.0)
    epochs: int | None = Field(None, ge=1)
    promote_top: int | None = Field(None, ge=1)


class ScheduleConfig(_Strict):
    type: Literal["cosine", "onecycle", "none"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    # Only here so that `check` can flag it: T_max is always derived from the epochs a trial really runs.
    t_max: int | None = Field(None, ge=1)


class TrainConfig(_Strict):
    batch_size: int = Field(64, ge=1)
    eval_batch_multiplier: int = Field(2, ge=1)
    max_val_batches: int | None = Field(None, ge=1)
    # Validate each epoch on this stratified share of the validation set (the same samples every epoch and
    # trial); the last epoch and the best epoch's weights are then validated on all of it (train/engine.py).
    val_fraction: float = Field(1.0, gt=0.0, le=1.0)
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"
    grad_accum: Literal["auto"] | int = "auto"
    memory_fraction: float = Field(0.9, gt=0.0, le=1.0)
    num_workers: Literal["auto"] | int = "auto"
    schedule: ScheduleConfig = ScheduleConfig()
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("grad_accum", "num_workers")
    @classmethod
    def _non_negative(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be 'auto' or an integer >= 0")
        return v


class WorkerConfig(_Strict):
    # Heartbeat (PostgreSQL storage): a killed worker's trial becomes FAIL after `grace_period` seconds.
    heartbeat_interval: int = Field(10, ge=1)
    grace_period: int = Field(60, ge=2)
    max_retry: int = Field(1, ge=0)
    # PostgreSQL connections: "persistent" keeps two per worker; "none" (NullPool) keeps none but connects
    # for every call, ~4x slower per trial of a trivial objective; "auto" picks "none" above 16 workers.
    pool: Literal["auto", "persistent", "none"] = "auto"
    # How long one storage call is retried through a database outage before the worker exits 75; its
    # running trial is then failed and retried by the other workers' liveness check.
    db_retry_deadline_s: float = Field(300.0, ge=1.0)
    # When the first N finished trials all failed for the same reason (a typo in the metric, a broken import,
    # an argument the script does not take), the workers stop instead of burning the budget. 0: never.
    fail_fast_trials: int = Field(3, ge=0)

    @model_validator(mode="after")
    def _grace_longer_than_interval(self) -> WorkerConfig:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError("grace_period must be longer than heartbeat_interval")
        return self


_SLURM_TIME_RE = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")
_SLURM_MEM_RE = re.compile(r"^\d+[KMGT]?$")
_SAFE_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.,:=/+@%-]+$")


def slurm_time_seconds(time: str) -> int:
    """A SLURM time limit (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, as ``slurm.time`` validates it)
    in seconds: the one parser behind `check`'s walltime warning and the minutes submitit is given."""
    days, _, rest = time.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:
        hours, minutes, seconds = (parts + [0, 0])[:3]
        return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    if len(parts) == 3:
        return parts[0] * 3600 + parts[1] * 60 + parts[2]
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return parts[0] * 60


class SlurmConfig(_Strict):
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "01:00:00"
    gres: str | None = None
    cpus_per_task: int = Field(4, ge=1)
    mem: str | None = "8G"
    array_parallelism: int | None = Field(None, ge=1)
    # Seconds before the time limit at which SLURM sends USR2: must cover the longest epoch plus a checkpoint.
    signal_grace_s: int = Field(300, ge=10)
    setup: list[str] = []
    extra_sbatch: list[str] = []

    @field_validator("partition", "account", "qos", "gres")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        if v is not None and not _SAFE_TOKEN_RE.match(v):
            raise ValueError(f"{v!r} has characters SLURM does not accept here")
        return v

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        if not _SLURM_TIME_RE.match(v):
            raise ValueError(f"{v!r} is not a SLURM time (MM, HH:MM:SS or D-HH:MM:SS)")
        return v

    @field_validator("mem")
    @classmethod
    def _mem(cls, v: str | None) -> str | None:
        if v is not None and not _SLURM_MEM_RE.match(v):
            raise ValueError(f"{v!r} is not a SLURM memory size (e.g. 32G)")
        return v

    @field_validator("setup")
    @classmethod
    def _lines(cls, v: list[str]) -> list[str]:
        for line in v:
            if "\n" in line or "\r" in line:
                raise ValueError("each setup entry must be a single line")
        return v

    @field_validator("extra_sbatch")
    @classmethod
    def _sbatch_lines(cls, v: list[str]) -> list[str]:
        for line in v:
            if "\n" in line or "\r" in line or not line.startswith("--"):
                raise ValueError(f"{line!r} must be one line starting with --")
        return v


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


class CommandTask(_Strict):
    """An existing script, run as it is: parameters go in through placeholders and HPCTUNE_* variables,
    metrics come back on its stdout."""

    # A string runs through bash (values are shell-quoted); a list is run as is, without a shell.
    command: str | list[str] = Field(min_length=1)
    # For a script that prints plain text: named groups, one of them the study's metric, ``epoch`` optional.
    metrics_regex: str | None = None
    # The trial's value: the best epoch's metric, or the last epoch's.
    value: Literal["best", "last"] = "best"
    # One trial's wall-clock limit (the trial fails with reason ``timeout``); None: no limit.
    trial_timeout_s: float | None = Field(None, gt=0)
    # A stopped trial's process group gets SIGTERM, then SIGKILL after this many seconds.
    kill_grace_s: float = Field(10.0, gt=0)
    # The script's working directory; relative to the config's folder. Default: the config's folder.
    cwd: str | None = None
    env: dict[str, str] = {}

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


def _task_kind(value: Any) -> str:
    return "command" if isinstance(value, dict | CommandTask) else "module"


# Tagged so that a mistake in a command mapping is reported as that, not as "task: not a string".
TaskSpec = Annotated[
    Annotated[str, Tag("module")] | Annotated[CommandTask, Tag("command")], Discriminator(_task_kind)
]


class Config(_Strict):
    study: str
    storage: str | None = None
    direction: Literal["maximize", "minimize"] = "maximize"
    metric: str = "val_acc"
    # A module with build() (the engine), file.py:objective (plain Optuna code) or {command: ...} (a script).
    task: TaskSpec = "hpc_tune.tasks.digits"
    trials: int = Field(20, ge=1)
    epochs: int = Field(10, ge=1)
    # Optional only for objective(trial) tasks, which define their parameters as they run.
    space: dict[str, ParamSpec] | None = Field(None, min_length=1)
    baseline: dict[str, Any] | None = None
    sampler: SamplerConfig = SamplerConfig()
    pruner: PrunerConfig = PrunerConfig()
    fidelity: FidelityConfig | None = None
    phases: list[list[str]] | None = None
    train: TrainConfig = TrainConfig()
    worker: WorkerConfig = WorkerConfig()
    slurm: SlurmConfig = SlurmConfig()
    results: str = "runs"

    @field_validator("study")
    @classmethod
    def _study_name(cls, v: str) -> str:
        if not STUDY_NAME_RE.match(v):
            raise ValueError(
                f"{v!r} is not a valid study name (letters, digits, '_', '.', '-'; starts with a letter "
                "or digit; at most 128 characters)"
            )
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if isinstance(self.task, CommandTask):
            self._check_command(self.task)
        if self.space is None:
            needs = "phases" if self.phases else "sampler grid" if self.sampler.type == "grid" else None
            if needs:
                raise ValueError(
                    f"{needs} needs space: (the parameters must be known before the first trial)"
                )
            return self
        if self.baseline:
            unknown = sorted(set(self.baseline) - set(self.space))
            if unknown:
                raise ValueError(f"baseline has '{unknown[0]}', which is not in space")
        if self.phases:
            listed = [p for phase in self.phases for p in phase]
            unknown = sorted(set(listed) - set(self.space))
            if unknown:
                raise ValueError(f"phases name '{unknown[0]}', which is not in space")
            if len(listed) != len(set(listed)):
                raise ValueError("phases list a parameter twice")
            if len(self.phases) > self.trials:
                raise ValueError(f"{len(self.phases)} phases need at least as many trials")
            later = [p for phase in self.phases[1:] for p in phase]
            missing = [p for p in later if p not in (self.baseline or {}) and not self.space[p].when]
            if missing:
                raise ValueError(
                    f"phases: '{missing[0]}' is tuned in a later phase, so baseline needs its value "
                    "for the phases before"
                )
            if self.fidelity is not None and self.fidelity.promote_top:
                raise ValueError(
                    "phases and fidelity.promote_top cannot be combined (yet): run them as two studies"
                )
        if self.sampler.type == "grid":
            if grid_size(self.space) is None:
                raise ValueError(
                    "sampler grid needs every parameter discrete (categorical, int without log, "
                    "or float with step)"
                )
            if any(spec.when for spec in self.space.values()):
                raise ValueError("sampler grid cannot run conditional parameters (when:)")
        return self

    def _check_command(self, task: CommandTask) -> None:
        if self.space is None:
            raise ValueError("a command task needs space: (the script cannot ask for its parameters)")
        clash = sorted(set(self.space) & set(COMMAND_PLACEHOLDERS))
        if clash:
            raise ValueError(
                f"space.{clash[0]}: a parameter cannot have the name of the placeholder {{{clash[0]}}}, "
                "which hpctune fills itself; rename it"
            )
        known = set(self.space) | set(COMMAND_PLACEHOLDERS)
        for name in command_placeholders(task.command):
            if name in self.space and self.space[name].when:
                env = "HPCTUNE_PARAM_" + "".join(c if c.isalnum() else "_" for c in name.upper())
                raise ValueError(
                    f"task.command: {{{name}}} is conditional (when:), so some trials have no value for it; "
                    f"read it from the environment instead ({env}, set only when active, or HPCTUNE_PARAMS)"
                )
            if name not in known:
                hint = difflib.get_close_matches(name, sorted(known), n=1)
                raise ValueError(
                    f"task.command: unknown placeholder {{{name}}}"
                    + (f" (did you mean {{{hint[0]}}}?)" if hint else "")
                    + f"; known: the space's parameters and {', '.join(COMMAND_PLACEHOLDERS)}"
                )
        if task.metrics_regex is not None and self.metric not in re.compile(task.metrics_regex).groupindex:
            raise ValueError(
                f"task.metrics_regex has no group for the metric: add (?P<{self.metric}>...) to it"
            )

    @property
    def task_spec(self) -> str:
        """The task as one line, for messages."""
        if isinstance(self.task, CommandTask):
            command = self.task.command
            return command if isinstance(command, str) else " ".join(command)
        return self.task

    def study_dir(self, root: str | os.PathLike[str] | None = None) -> Path:
        """runs/<study>/, relative to ``root`` (the config file's directory) when results is relative."""
        base = Path(self.results)
        if not base.is_absolute() and root is not None:
            base = Path(root) / base
        return base / self.study

    def effective_epochs(self) -> int:
        if self.fidelity is not None and self.fidelity.epochs is not None:
            return self.fidelity.epochs
        return self.epochs


class LoadedConfig(BaseModel):
    """A Config plus where it came from, so relative paths and error messages name the file."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    config: Config
    path: Path | None

    @property
    def root(self) -> Path:
        return self.path.parent if self.path is not None else Path.cwd()

    @property
    def study_dir(self) -> Path:
        return self.config.study_dir(self.root).resolve()


def _where(path: Path | None) -> str:
    return path.name if path is not None else "config"


def _describe(err: dict[str, Any], raw: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
    # Discriminated unions put the tag in the path (space.lr.float.low): drop it, users never wrote it.
    loc = [
        p
        for i, p in enumerate(loc)
        if not (i >= 2 and loc[0] == "space" and p in ("float", "int", "categorical"))
        and not (i == 1 and loc[0] == "task" and p in ("module", "command"))
    ]
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        parent_fields = _fields_at(loc[:-1])
        hint = difflib.get_close_matches(loc[-1], parent_fields, n=1)
        where = f" in {'.'.join(loc[:-1])}" if len(loc) > 1 else ""
        return f"unknown key '{loc[-1]}'{where}" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    if err["type"] == "missing":
        return f"{key} is required"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
        return f"{key}.type must be one of float, int, categorical"
    if msg.startswith(("low must", "low and high", "log and", "step must", "choices must")):
        return f"{key}.{msg}"
    return f"{key}: {msg}" if key else msg


def _fields_at(loc: list[str]) -> list[str]:
    model: Any = Config
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            if part in ("float", "int", "categorical") or model is None:
                continue
            return []
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None:
            model = _model_in(annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside an Optional/Union/Annotated annotation, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    origin = getattr(annotation, "__origin__", None)
    return _model_in(origin) if origin is not None and origin is not annotation else None


def parse_config(raw: Any, path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Validate an already-parsed mapping; ``overrides`` are top-level keys from the CLI or environment."""
    where = _where(path)
    if not isinstance(raw, dict):
        raise ConfigError("the file must hold a mapping of keys (study:, space:, …)", where)
    data = dict(raw)
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        # A misspelt key also makes the right one "missing": name the typo, it is the mistake.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        raise ConfigError(_describe(errors[0], data), where) from None
    if config.space is not None:
        check_space(config.space, where)
    return config


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> LoadedConfig:
    """Read and validate hpctune.yaml. ``HPCTUNE_STORAGE`` overrides ``storage`` (CLI flags override both)."""
    file = Path(path if path is not None else DEFAULT_CONFIG)
    if not file.is_file():
        raise ConfigError("config file not found", file)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"YAML syntax error{line}: {problem}", file.name) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config: {exc}", file) from None
    merged = {}
    if os.environ.get("HPCTUNE_STORAGE"):
        merged["storage"] = os.environ["HPCTUNE_STORAGE"]
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return LoadedConfig(config=parse_config(raw, file, merged), path=file.resolve())
