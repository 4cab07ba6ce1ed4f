"""The schema of hpctune.yaml: ``Config``, validated once, with the key path in every message.

Later code trusts a Config and never re-checks it. Each field's ``description`` is its entry in the config
reference (docs/your-code.md, rendered by scripts/gen_config_docs.py): the schema is the one source.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from hpc_tune.config.sections import (
    FidelityConfig,
    PrunerConfig,
    SamplerConfig,
    ServerConfig,
    SlurmConfig,
    Strict,
    TrainConfig,
    WorkerConfig,
)
from hpc_tune.config.space import ParamSpec, grid_size
from hpc_tune.config.storage_value import check_storage, is_embedded, is_server
from hpc_tune.config.task import COMMAND_PLACEHOLDERS, CommandTask, command_placeholders

STUDY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _task_kind(value: Any) -> str:
    return "command" if isinstance(value, dict | CommandTask) else "module"


# Tagged so that a mistake in a command mapping is reported as that, not as "task: not a string".
TaskSpec = Annotated[
    Annotated[str, Tag("module")] | Annotated[CommandTask, Tag("command")], Discriminator(_task_kind)
]


class Config(Strict):
    study: str = Field(
        description="The study's name: every worker (array task) joins this one Optuna study. Letters, "
        "digits, `_ . -`, starting with a letter or digit, at most 128 characters."
    )
    storage: str | None = Field(
        None,
        description="Where the study lives. `null` (or `embedded`): the journal file "
        "`<results>/<study>/journal.log`, for one machine (`run --local`). On a cluster `server`: a "
        "PostgreSQL server hpctune runs itself for the study (see `server`), or a site's "
        "`postgresql+psycopg2://user@host/db`, without a password (PGPASSFILE). `HPCTUNE_STORAGE` and "
        "`--storage` override it.",
    )
    direction: Literal["maximize", "minimize"] = Field(
        "maximize", description="Whether a higher or a lower `metric` is better."
    )
    metric: str = Field(
        "val_acc",
        description="The reported value that is the trial's value and that the pruner watches: a key of the "
        "engine's `metrics`, of the script's JSON lines or a group of `metrics_regex`; an objective's "
        "return value and reports carry this name.",
    )
    task: TaskSpec = Field(
        "hpc_tune.tasks.digits",
        description="What a trial runs: `pkg.module` or `file.py` with `build()` (the engine), "
        "`file.py:objective` (an Optuna objective), or a mapping with `command:` (a script, see `task`). "
        "Files are looked up beside this file, then in the current directory.",
    )
    trials: int = Field(
        20,
        ge=1,
        description="Finished trials (COMPLETE, PRUNED, FAIL) in the whole study, over all workers. "
        "Failures that are re-run, and walltime hand-ons, do not count.",
    )
    epochs: int = Field(
        10,
        ge=1,
        description="Epochs per trial: the engine's loop, `{epochs}` of a command. An objective runs its own "
        "loop and never reads it.",
    )
    space: dict[str, ParamSpec] | None = Field(
        None,
        min_length=1,
        description="The parameters, suggested in this order (see `space.<name>`); a name may contain dots "
        "(`optimizer.lr`). Optional only for an `objective(trial)` task, which may ask for its parameters "
        "itself.",
    )
    baseline: dict[str, Any] | None = Field(
        None,
        description="Parameter values run once as the first trial, so that the report says whether tuning "
        "beat them; with `phases`, the values of the parameters of later phases.",
    )
    sampler: SamplerConfig = Field(SamplerConfig(), description="How parameters are chosen (see `sampler`).")
    pruner: PrunerConfig = Field(
        PrunerConfig(), description="When a trial is stopped early by its learning curve (see `pruner`)."
    )
    fidelity: FidelityConfig | None = Field(
        None, description="Cheap screening first (see `fidelity`). `null`: every trial at full fidelity."
    )
    phases: list[list[str]] | None = Field(
        None,
        description="Tune the parameters in groups, e.g. `[[lr, weight_decay], [hidden]]`: the budget is "
        "split evenly; each phase pins earlier phases' parameters to the best trial so far and later "
        "phases' to `baseline`. Needs `space:`.",
    )
    train: TrainConfig = Field(
        TrainConfig(),
        description="Settings of hpctune's train engine (see `train`); other kinds use only `train.seed`.",
    )
    worker: WorkerConfig = Field(
        WorkerConfig(),
        description="Liveness, retries and database behaviour of the workers (see `worker`).",
    )
    slurm: SlurmConfig = Field(
        SlurmConfig(), description="What `render` and `submit` ask SLURM for (see `slurm`)."
    )
    server: ServerConfig = Field(
        ServerConfig(), description="The study server of `storage: server` (see `server`)."
    )
    results: str = Field(
        "runs",
        description="The results folder, relative to this file: `<results>/<study>/` holds `trials/` (one "
        "JSON per trial, a command's logs), `checkpoints/`, `logs/`, `summary.json`.",
    )

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str | None) -> str | None:
        return check_storage(v)

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
        _check_across_keys(self)
        return self

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

    @property
    def embedded(self) -> bool:
        """The study lives in the embedded journal store."""
        return is_embedded(self.storage)

    @property
    def on_server(self) -> bool:
        """The study lives on the study server hpctune runs itself."""
        return is_server(self.storage)

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

    @property
    def server_dir(self) -> Path:
        """The study server's folder (``server.data_dir``, relative to the config's folder)."""
        given = self.config.server.data_dir
        if given is None:
            return self.study_dir / "server"
        path = Path(given)
        return (path if path.is_absolute() else self.root / path).resolve()


def _check_across_keys(config: Config) -> None:
    """What no single key can check: the space against the baseline, phases, grid and a command's
    placeholders. Raises ValueError, which pydantic reports with the config's name."""
    if isinstance(config.task, CommandTask):
        _check_command(config, config.task)
    if config.space is None:
        needs = "phases" if config.phases else "sampler grid" if config.sampler.type == "grid" else None
        if needs:
            raise ValueError(f"{needs} needs space: (the parameters must be known before the first trial)")
        return
    if config.baseline:
        unknown = sorted(set(config.baseline) - set(config.space))
        if unknown:
            raise ValueError(f"baseline has '{unknown[0]}', which is not in space")
    if config.phases:
        listed = [p for phase in config.phases for p in phase]
        unknown = sorted(set(listed) - set(config.space))
        if unknown:
            raise ValueError(f"phases name '{unknown[0]}', which is not in space")
        if len(listed) != len(set(listed)):
            raise ValueError("phases list a parameter twice")
        if len(config.phases) > config.trials:
            raise ValueError(f"{len(config.phases)} phases need at least as many trials")
        later = [p for phase in config.phases[1:] for p in phase]
        missing = [p for p in later if p not in (config.baseline or {}) and not config.space[p].when]
        if missing:
            raise ValueError(
                f"phases: '{missing[0]}' is tuned in a later phase, so baseline needs its value "
                "for the phases before"
            )
        if config.fidelity is not None and config.fidelity.promote_top:
            raise ValueError(
                "phases and fidelity.promote_top cannot be combined (yet): run them as two studies"
            )
    if config.sampler.type == "grid":
        if grid_size(config.space) is None:
            raise ValueError(
                "sampler grid needs every parameter discrete (categorical, int without log, "
                "or float with step)"
            )
        if any(spec.when for spec in config.space.values()):
            raise ValueError("sampler grid cannot run conditional parameters (when:)")


def _check_command(config: Config, task: CommandTask) -> None:
    if config.space is None:
        raise ValueError("a command task needs space: (the script cannot ask for its parameters)")
    clash = sorted(set(config.space) & set(COMMAND_PLACEHOLDERS))
    if clash:
        raise ValueError(
            f"space.{clash[0]}: a parameter cannot have the name of the placeholder {{{clash[0]}}}, "
            "which hpctune fills itself; rename it"
        )
    known = set(config.space) | set(COMMAND_PLACEHOLDERS)
    for name in command_placeholders(task.command):
        if name in config.space and config.space[name].when:
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
    if task.metrics_regex is not None and config.metric not in re.compile(task.metrics_regex).groupindex:
        raise ValueError(
            f"task.metrics_regex has no group for the metric: add (?P<{config.metric}>...) to it"
        )
