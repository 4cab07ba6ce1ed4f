"""``hpctune check``: warnings about a VALID config that is still likely to waste GPU-hours.

Hard errors live in config.py (a study cannot run with them); these are judgement calls from the field notes,
so they are warnings with the key path and a suggested fix.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpc_tune.study.config import Config
from hpc_tune.study.space import FloatParam, grid_size

# Parameters whose good values span orders of magnitude: a linear scale spends most trials on the top decade.
LOG_SCALE_NAMES = ("lr", "learning_rate", "weight_decay", "wd", "eps", "l2", "alpha")


@dataclass(frozen=True)
class Finding:
    key: str
    message: str

    def line(self) -> str:
        return f"warning: {self.key}: {self.message}"


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def lint(config: Config) -> list[Finding]:
    found: list[Finding] = []
    space = config.space or {}  # an objective that defines its own parameters: nothing to lint before it runs
    for name, spec in space.items():
        if (
            isinstance(spec, FloatParam)
            and not spec.log
            # the leaf of a dotted (Hydra-style) name: optimizer.lr is a learning rate too
            and any(_leaf(name) == n or _leaf(name).endswith("_" + n) for n in LOG_SCALE_NAMES)
        ):
            found.append(
                Finding(
                    f"space.{name}",
                    "spans orders of magnitude; add 'log: true'"
                    + ("" if spec.low > 0 else " (with low > 0)"),
                )
            )
    size = grid_size(space)
    if config.sampler.type == "grid" and size is not None and size > config.trials:
        found.append(
            Finding(
                "sampler",
                f"the grid has {size} points but trials is {config.trials}; most of the grid will never run",
            )
        )
    t_max = config.train.schedule.t_max
    if t_max is not None and t_max != config.effective_epochs():
        found.append(
            Finding(
                "train.schedule.t_max",
                f"is {t_max} but trials run {config.effective_epochs()} "
                "epochs; hpctune derives T_max from the epochs run, remove it",
            )
        )
    if config.fidelity is not None and config.pruner.type == "none":
        found.append(
            Finding(
                "fidelity",
                "low-fidelity screening without a pruner spends full budgets on "
                "bad trials; set pruner.type (median, hyperband, sh)",
            )
        )
    wants_gpu = config.train.device == "cuda" or config.train.amp in ("bf16", "fp16")
    if wants_gpu and not (config.slurm.gres and "gpu" in config.slurm.gres):
        found.append(
            Finding(
                "slurm.gres", 'train options need a GPU but slurm.gres asks for none (e.g. gres: "gpu:1")'
            )
        )
    if config.pruner.type in ("median", "patience") and config.pruner.n_warmup_steps == 0:
        found.append(
            Finding(
                "pruner.n_warmup_steps",
                "is 0: early epochs are noisy, curves that start slow "
                "get pruned; use a few epochs of warm-up",
            )
        )
    if config.pruner.type == "hyperband" and config.pruner.min_resource >= config.effective_epochs():
        found.append(Finding("pruner.min_resource", "is not below the epochs run, so hyperband never prunes"))
    embedded = config.storage is None or config.storage in ("", "embedded")
    if embedded and "slurm" in config.model_fields_set:
        found.append(
            Finding(
                "storage",
                "is the embedded journal, which has no heartbeat for killed tasks: SLURM arrays of more "
                "than one task need PostgreSQL (render and submit refuse them)",
            )
        )
    return found
