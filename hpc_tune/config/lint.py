"""``hpctune check``: warnings about a VALID config that is still likely to waste GPU-hours.

Hard errors live in the schema (a study cannot run with them); these are judgement calls from the field notes,
so they are warnings with the key path and a suggested fix. ``lint`` sees the config only, ``lint_for_task``
the kind of task too; what needs the study as it already is on the storage is ``check``'s own
(hpc_tune/preflight.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import yaml

from hpc_tune.config.schema import Config
from hpc_tune.config.sections import slurm_time_seconds
from hpc_tune.config.space import CategoricalParam, FloatParam, grid_size
from hpc_tune.config.task import CommandTask

# Parameters whose good values span orders of magnitude: a linear scale spends most trials on the top decade.
LOG_SCALE_NAMES = ("lr", "learning_rate", "weight_decay", "wd", "eps", "l2", "alpha")
# What an array task spends before its first epoch: python and torch imports, the database, the data.
WORKER_START_S = 120
# TPE's first model needs about this many random trials per parameter it models (Ax starts with 2 per
# parameter too); fewer, and the "good" group it samples around is one lucky point.
TPE_STARTUP_PER_PARAM = 2


@dataclass(frozen=True)
class LintFinding:
    key: str
    message: str

    def line(self) -> str:
        return f"warning: {self.key}: {self.message}"


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def lint(config: Config) -> list[LintFinding]:
    found: list[LintFinding] = []
    space = config.space or {}  # an objective that defines its own parameters: nothing to lint before it runs
    for name, spec in space.items():
        if (
            isinstance(spec, FloatParam)
            and not spec.log
            # the leaf of a dotted (Hydra-style) name: optimizer.lr is a learning rate too
            and any(_leaf(name) == n or _leaf(name).endswith("_" + n) for n in LOG_SCALE_NAMES)
        ):
            found.append(
                LintFinding(
                    f"space.{name}",
                    "spans orders of magnitude; add 'log: true'"
                    + ("" if spec.low > 0 else " (with low > 0)"),
                )
            )
    size = grid_size(space)
    if config.sampler.type == "grid" and size is not None and size > config.trials:
        found.append(
            LintFinding(
                "sampler",
                f"the grid has {size} points but trials is {config.trials}; most of the grid will never run",
            )
        )
    if config.fidelity is not None and config.pruner.type == "none":
        found.append(
            LintFinding(
                "fidelity",
                "low-fidelity screening without a pruner spends full budgets on "
                "bad trials; set pruner.type (median, hyperband, sh)",
            )
        )
    wants_gpu = config.train.device == "cuda" or config.train.amp in ("bf16", "fp16")
    if wants_gpu and not (config.slurm.gres and "gpu" in config.slurm.gres):
        found.append(
            LintFinding(
                "slurm.gres", 'train options need a GPU but slurm.gres asks for none (e.g. gres: "gpu:1")'
            )
        )
    found += _pruning_warmup(config)
    if config.embedded and "slurm" in config.model_fields_set:
        found.append(
            LintFinding(
                "storage",
                "is the embedded journal, which has no heartbeat for killed tasks: SLURM arrays of more "
                "than one task need PostgreSQL, storage: server or a site's (render and submit refuse them)",
            )
        )
    found += _hyperband_brackets(config)
    found += _tpe_startup(config)
    found += _fidelity_without_promotion(config)
    found += _walltime(config)
    found += _trials_per_gpu(config)
    found += _numbers_read_as_strings(config)
    return found


def _trials_per_gpu(config: Config) -> list[LintFinding]:
    """More workers per task than its cores: each gets one thread, and they take turns on the cores."""
    s = config.slurm
    n = s.trials_per_gpu
    if n == "auto" or n <= s.cpus_per_task:
        return []
    gpu = bool(s.gres and "gpu" in s.gres)
    why = (
        "each worker's Python side (its data loading, its launches of GPU kernels) needs a core of its own"
        if gpu
        else "they take turns on the task's cores, which finishes trials no sooner than fewer workers"
    )
    return [
        LintFinding(
            "slurm.trials_per_gpu",
            f"is {n} but slurm.cpus_per_task is {s.cpus_per_task}: {why}; set cpus_per_task to at least {n} "
            f"or trials_per_gpu to at most {s.cpus_per_task}",
        )
    ]


def _auto_cannot_measure(config: Config, kind: str) -> list[LintFinding]:
    """A script's GPU memory is not the worker's to read: ``auto`` then never grows past one worker."""
    s = config.slurm
    if kind != "command" or s.trials_per_gpu != "auto" or not (s.gres and "gpu" in s.gres):
        return []
    return [
        LintFinding(
            "slurm.trials_per_gpu",
            "is auto, but a command's GPU memory cannot be measured (the script holds it, not the worker), "
            "so each task keeps 1 worker; set the number of trials that fit on the GPU instead",
        )
    ]


def lint_for_task(config: Config, kind: str) -> list[LintFinding]:
    """Warnings that need to know what the task is (``LoadedTask.kind``): train options that only hpctune's
    engine reads, set for an objective or a command, which train in their own code (``train.seed`` reaches
    them too: the trial's seed, so it is not one of those); ``trials_per_gpu: auto`` for a script on a GPU."""
    if kind == "build":
        return []
    found = _auto_cannot_measure(config, kind)
    ignored = sorted(f"train.{name}" for name in config.train.model_fields_set if name != "seed")
    if not ignored:
        return found
    one = len(ignored) == 1
    trains = (
        "a command runs its own training loop" if kind == "command" else "an objective trains in its own code"
    )
    return found + [
        LintFinding(
            ignored[0] if one else "train",
            f"{'is' if one else ', '.join(ignored) + ' are'} read by hpctune's engine only, and {trains}: "
            f"{'it has' if one else 'they have'} no effect; remove {'it' if one else 'them'}, and reduce "
            "validation or change precision in the task's own code",
        )
    ]


def _pruning_warmup(config: Config) -> list[LintFinding]:
    """Pruning that starts while the learning rate still warms up judges curves that say nothing yet;
    pruning that starts at the last epoch never happens (the last epoch is a result, never pruned)."""
    p = config.pruner
    epochs = config.effective_epochs()
    warmup = config.train.schedule.warmup_epochs
    since_warmup = (
        f"the learning rate still warms up for {warmup} epoch{'s' if warmup != 1 else ''} "
        "(train.schedule.warmup_epochs) and curves say little before that"
    )
    if p.type in ("median", "patience") and p.n_warmup_steps != "auto":  # auto: measured while it runs
        if p.n_warmup_steps >= epochs:
            return [
                LintFinding(
                    "pruner.n_warmup_steps",
                    f"is {p.n_warmup_steps} but trials run {epochs} epochs: the earliest prune is at epoch "
                    f"{p.n_warmup_steps} and the last epoch is never pruned, so no trial ever is; set it "
                    f"below {epochs}, or pruner.type: none",
                )
            ]
        if p.n_warmup_steps < warmup < epochs:  # a warm-up as long as the run is another problem
            return [
                LintFinding(
                    "pruner.n_warmup_steps",
                    f"is {p.n_warmup_steps} but {since_warmup}; set n_warmup_steps to {warmup} or more",
                )
            ]
        if p.n_warmup_steps == 0:
            return [
                LintFinding(
                    "pruner.n_warmup_steps",
                    "is 0: early epochs are noisy, curves that start slow get pruned; use a few epochs of "
                    "warm-up",
                )
            ]
    if p.type in ("hyperband", "sh"):
        if p.min_resource >= epochs:
            return [
                LintFinding("pruner.min_resource", f"is not below the epochs run, so {p.type} never prunes")
            ]
        if p.min_resource < warmup < epochs:
            return [
                LintFinding(
                    "pruner.min_resource",
                    f"is {p.min_resource} but {since_warmup}; set min_resource to {warmup} or more",
                )
            ]
    return []


def hyperband_brackets(min_resource: int, max_resource: int, reduction_factor: int) -> list[int]:
    """The trials Optuna's HyperbandPruner allots to each bracket per round (its ratio of trials), as it
    computes them: ``floor(log_eta(R / r)) + 1`` brackets, bracket s gets ``ceil(n * eta^s / (s + 1))``."""
    n = math.floor(math.log(max_resource / min_resource, reduction_factor)) + 1
    return [math.ceil(n * reduction_factor**s / (s + 1)) for s in range(n - 1, -1, -1)]


def _hyperband_brackets(config: Config) -> list[LintFinding]:
    """Optuna's HyperbandPruner lets the sampler see only the trials of the same bracket: TPE then runs its
    random startup once per bracket (the pruner's documentation: 4 brackets x 10 startup trials)."""
    p = config.pruner
    epochs = config.effective_epochs()
    if p.type != "hyperband" or p.min_resource >= epochs:
        return []
    brackets = hyperband_brackets(p.min_resource, epochs, p.reduction_factor)
    setting = (
        f"hyperband (min_resource {p.min_resource}, reduction_factor {p.reduction_factor}, {epochs} epochs) "
        f"runs {len(brackets)} brackets"
    )
    fewer = "or use fewer brackets (a larger min_resource or reduction_factor)"
    startup = config.sampler.n_startup_trials
    if config.sampler.type == "tpe" and config.trials < len(brackets) * startup:
        needed = len(brackets) * startup
        return [
            LintFinding(
                "pruner",
                f"{setting} and TPE learns from each bracket's trials only: {len(brackets)} x {startup} "
                f"startup trials = {needed} random trials, but trials is {config.trials}; raise trials to "
                f"{needed}, {fewer}",
            )
        ]
    if config.trials < sum(brackets):
        return [
            LintFinding(
                "pruner",
                f"{setting}, which take {sum(brackets)} trials for one round "
                f"({' + '.join(map(str, brackets))}), but trials is {config.trials}; raise trials to "
                f"{sum(brackets)}, {fewer}",
            )
        ]
    return []


def _tpe_startup(config: Config) -> list[LintFinding]:
    """A conditional parameter is not counted: it lies outside Optuna's intersection search space, so TPE
    samples it on its own, not in the joint model the startup trials are for."""
    if config.sampler.type != "tpe" or not config.space:
        return []
    modelled = [name for name, spec in config.space.items() if not spec.when]
    needed = TPE_STARTUP_PER_PARAM * len(modelled)
    startup = config.sampler.n_startup_trials
    if startup >= needed:
        return []
    conditional = len(config.space) - len(modelled)
    return [
        LintFinding(
            "sampler.n_startup_trials",
            f"is {startup} but the space has {len(modelled)} parameter{'s' if len(modelled) != 1 else ''}"
            + (f" (not counting {conditional} conditional)" if conditional else "")
            + f": TPE's first model needs about {TPE_STARTUP_PER_PARAM} random trials per parameter; set "
            f"n_startup_trials to {needed} or more",
        )
    ]


def _fidelity_without_promotion(config: Config) -> list[LintFinding]:
    """The field notes' trap: short, cheap trials mislead, so a winner picked on them alone is a guess."""
    f = config.fidelity
    if f is None or f.promote_top is not None:
        return []
    reduced: list[str] = []
    if f.data_fraction < 1.0:
        reduced.append(f"{f.data_fraction:.0%} of the data")
    if f.epochs is not None and f.epochs < config.epochs:
        reduced.append(f"{f.epochs} of {config.epochs} epochs")
    if not reduced:
        return []
    fix = (
        "re-run the best at full fidelity in a second study (phases cannot promote)"
        if config.phases
        else "set promote_top (e.g. 3) to re-run the best at full fidelity"
    )
    return [
        LintFinding(
            "fidelity.promote_top",
            f"is not set: every trial runs at low fidelity ({', '.join(reduced)}) and the winner is picked "
            f"from those runs alone; {fix}",
        )
    ]


def _walltime(config: Config) -> list[LintFinding]:
    """SLURM sends USR2 ``signal_grace_s`` before the time limit and the worker hands its trial on: a task
    whose limit leaves less than a worker's start-up before that signal never trains."""
    s = config.slurm
    walltime = slurm_time_seconds(s.time)
    left = walltime - s.signal_grace_s
    if left >= WORKER_START_S:
        return []
    return [
        LintFinding(
            "slurm.time",
            f"is {s.time} ({walltime} s) and signal_grace_s is {s.signal_grace_s}: USR2 asks a worker to "
            f"hand on {max(left, 0)} s after it starts, less than the ~{WORKER_START_S} s it needs to start "
            "(imports, database, data); raise slurm.time or lower signal_grace_s",
        )
    ]


def _numbers_read_as_strings(config: Config) -> list[LintFinding]:
    """PyYAML follows YAML 1.1, where a float needs a dot: ``1e-05`` is the string '1e-05'. A choice that
    YAML would read as a number unquoted (``"64"``) was quoted on purpose and is left alone. A command's
    values become text anyway, so only tasks given Python values are concerned."""
    if isinstance(config.task, CommandTask):
        return []
    found: list[LintFinding] = []
    for name, spec in (config.space or {}).items():
        if not isinstance(spec, CategoricalParam):
            continue
        strings = [c for c in spec.choices if isinstance(c, str) and _reads_as_string_but_is_a_number(c)]
        if not strings:
            continue
        plural = len(strings) > 1
        found.append(
            LintFinding(
                f"space.{name}.choices",
                f"YAML reads {', '.join(strings)} as {'strings' if plural else 'a string'}, not "
                f"{'numbers' if plural else 'a number'}, and the task gets {'them' if plural else 'it'} as "
                f"text; write {', '.join(_yaml_number(c) for c in strings)} to get "
                f"{'numbers' if plural else 'a number'}",
            )
        )
    return found


def _reads_as_string_but_is_a_number(text: str) -> bool:
    try:
        number = float(text)
    except ValueError:
        return False
    return math.isfinite(number) and isinstance(yaml.safe_load(text), str)


def _yaml_number(text: str) -> str:
    """The number as YAML writes it, so that YAML reads it back as a number (``1.0e-05``)."""
    dumped: str = yaml.safe_dump(float(text))
    return dumped.split("\n", 1)[0]
