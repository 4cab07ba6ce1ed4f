"""The sections of hpctune.yaml below the top level: sampler, pruner, fidelity, train, worker, slurm.

Each field's ``description`` is what the reference in docs/your-code.md says of it
(scripts/gen_config_docs.py renders the models); comments here say why a default or a limit is what it is.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    """Unknown keys are errors: a typo (``epocs: 100``) that passes silently costs a whole campaign."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SamplerConfig(Strict):
    type: Literal["tpe", "random", "grid", "cmaes", "qmc"] = Field(
        "tpe",
        description="`tpe`: Bayesian, learns from every worker's trials; `random`; `grid`: every point of a "
        "discrete space once across all workers (needs `space:` without `when:`; an objective's own "
        "`suggest_*` calls return the space's values, as with Optuna's GridSampler); `cmaes`; `qmc`: "
        "scrambled Sobol.",
    )
    # Every worker must use the same seed for grid; tpe/random add a per-worker offset (policy/strategy.py).
    seed: int | None = Field(
        None,
        description="Sampler seed; each worker adds its index (grid and qmc: the same in every worker). "
        "`null`: not seeded.",
    )
    multivariate: bool = Field(True, description="TPE models the parameters together rather than one by one.")
    constant_liar: bool = Field(
        True,
        description="TPE counts running trials as bad ones, so parallel workers do not all sample the same "
        "region.",
    )
    n_startup_trials: int = Field(10, ge=0, description="Random trials before TPE or CMA-ES starts to model.")


class PrunerConfig(Strict):
    type: Literal["median", "hyperband", "sh", "patience", "none"] = Field(
        "median",
        description="`median`: stop a trial whose best value so far is worse than the median of finished "
        "trials at the same epoch; `patience`: the same, only after `patience` epochs without improvement; "
        "`hyperband`, `sh` (successive halving); `none`.",
    )
    n_startup_trials: int = Field(
        5, ge=0, description="`median`, `patience`: no pruning until this many trials have finished."
    )
    # "auto", the default, was chosen by benchmarks/search_efficiency.py (docs/strategies.md): a fixed warm-up
    # of 3 epochs killed the late winners of the benchmark's trap task (policy/reliable_pruning.py).
    n_warmup_steps: Annotated[int, Field(ge=0)] | Literal["auto"] = Field(
        "auto",
        description="`median`, `patience`: no pruning before this epoch (early epochs are noisy). `auto`: "
        "from the epoch where the study's completed trials show early values ranking trials as their final "
        "values do (Spearman ≥ 0.8), measured while the study runs; nothing is pruned before "
        "`max(n_startup_trials, 5)` trials have finished. The default, chosen by "
        "[the search-efficiency benchmark](strategies.md).",
    )
    min_resource: int = Field(
        1, ge=1, description="`hyperband`, `sh`: epochs every trial runs before it can be pruned."
    )
    reduction_factor: int = Field(
        3, ge=2, description="`hyperband`, `sh`: 1 in this many trials goes on at each rung."
    )
    patience: int = Field(
        5, ge=1, description="`patience`: epochs without improvement before the median rule applies."
    )


class FidelityConfig(Strict):
    data_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Share of the training data a screening trial trains on (stratified; validation is "
        "never cut). Given to `build()`; a command or an objective does not get it.",
    )
    epochs: int | None = Field(
        None, ge=1, description="Epochs of a screening trial (a command's `{epochs}`). `null`: `epochs`."
    )
    promote_top: int | None = Field(
        None,
        ge=1,
        description="When every screening trial has finished, re-run the best N at full fidelity (all data, "
        "`epochs`), on top of `trials` and never pruned. `null`: no promotion.",
    )


class ScheduleConfig(Strict):
    type: Literal["cosine", "onecycle", "none"] = Field(
        "cosine",
        description="Per optimizer step: `cosine` to 0 over the epochs the trial runs, `onecycle`, or `none` "
        "(constant). T_max is always the epochs the trial runs, so there is no setting for it.",
    )
    warmup_epochs: int = Field(0, ge=0, description="Linear warm-up, in epochs (at most half the run).")


class TrainConfig(Strict):
    batch_size: int = Field(
        64,
        ge=1,
        description="Training batch of a `build()` task that does not tune one. On a GPU the batch probe may "
        "split it into micro-batches (gradient accumulation); it never changes it.",
    )
    eval_batch_multiplier: int = Field(
        2, ge=1, description="Validation batch = training batch times this (no gradients, so it fits)."
    )
    max_val_batches: int | None = Field(
        None,
        ge=1,
        description="Validate each epoch on at most this many batches: a fixed subset, stratified by class, "
        "the same in every epoch and trial. The last epoch and the best epoch's weights are then validated "
        "on the whole set, and the trial's value is taken from those. `null`: no limit.",
    )
    val_fraction: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Validate each epoch on this share of the validation set (0.5 halves validation time): "
        "the same stratified samples in every epoch and trial, so that curves stay comparable and the "
        "pruner can use them. At the end, the last epoch's weights and the weights of the epoch the subset "
        "rated best are validated on the whole set. The trial's value is the better of the two, never a "
        "subset's (`full_validation` in the trial's JSON).",
    )
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto",
        description="Mixed precision. `auto`: bf16 on GPUs that have it, else fp16 with a gradient scaler; "
        "fp32 on CPU. `off`, `bf16`, `fp16` force it.",
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto",
        description="`torch.compile` of the evaluation step. `auto`: on CUDA, off on CPU (slower there).",
    )
    grad_accum: Literal["auto"] | int = Field(
        "auto",
        description="`auto`: as many micro-batches as the batch probe (CUDA) finds necessary, else one. "
        "N >= 2: at least N.",
    )
    memory_fraction: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="CUDA: the share of the GPU's memory the trial may use; the batch probe plans within it.",
    )
    num_workers: Literal["auto"] | int = Field(
        "auto",
        description="DataLoader processes for a dataset read sample by sample. `auto`: min(8, cores / 2) on "
        "CUDA, 0 on CPU. Tensor datasets in memory never use a DataLoader.",
    )
    schedule: ScheduleConfig = Field(
        ScheduleConfig(), description="Learning-rate schedule (see `train.schedule`)."
    )
    seed: int = Field(
        0,
        description="The trials' seed, the same for every trial so that trials differ by their parameters: "
        "the engine seeds from it, a command gets `{seed}`, an objective runs with Python's, NumPy's and "
        "torch's generators seeded with it.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="`auto`: CUDA when there is a GPU, else CPU. `cpu`, `cuda` force it."
    )

    @field_validator("grad_accum", "num_workers")
    @classmethod
    def _non_negative(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be 'auto' or an integer >= 0")
        return v


class WorkerConfig(Strict):
    heartbeat_interval: int = Field(
        10, ge=1, description="PostgreSQL: seconds between a running trial's heartbeats."
    )
    grace_period: int = Field(
        60,
        ge=2,
        description="PostgreSQL: a trial without a heartbeat for this many seconds (its worker was killed) "
        "is failed and re-run. Longer than `heartbeat_interval`.",
    )
    max_retry: int = Field(
        1,
        ge=0,
        description="How often a trial whose worker died, was interrupted or lost the database is re-run "
        "with the same parameters. Walltime hand-ons do not count.",
    )
    # "none" (NullPool) connects for every call, ~4x slower per trial of a trivial objective: nothing next to
    # an epoch, and it lets more workers than the server's connection limit share a study.
    pool: Literal["auto", "persistent", "none"] = Field(
        "auto",
        description="PostgreSQL connections: `persistent` keeps two per worker, `none` connects for every "
        "call; `auto`: persistent up to 16 workers, else none.",
    )
    db_retry_deadline_s: float = Field(
        300.0,
        ge=1.0,
        description="How long one storage call is retried through a database outage before the worker exits "
        "75 (its trial is re-run later).",
    )
    # A typo in the metric, a broken import, an argument the script does not take: the same failure in every
    # trial is a mistake, not a result, and the rest of the budget would only repeat it.
    fail_fast_trials: int = Field(
        3,
        ge=0,
        description="When the first N finished trials all failed for the same reason, the workers stop "
        "instead of spending the budget. 0: never.",
    )

    # A trial of a kind that cannot hand on (an objective, a script without a checkpoint) still running at
    # the time limit is killed whole; the time left is better given back to the queue (worker/admission.py).
    walltime_admission: bool = Field(
        True,
        description="On SLURM, a worker whose task cannot hand on at the walltime (an objective, a command "
        "that saves no checkpoint) does not start a trial that the study's finished trials say cannot finish "
        "before the time limit: it ends and requeues its task instead. `false`: always start.",
    )

    @model_validator(mode="after")
    def _grace_longer_than_interval(self) -> WorkerConfig:
        if self.grace_period <= self.heartbeat_interval:
            raise ValueError("grace_period must be longer than heartbeat_interval")
        return self


_SLURM_TIME_RE = re.compile(r"^(\d+-)?\d{1,3}(:\d{2}){0,2}$")
_SLURM_MEM_RE = re.compile(r"^\d+[KMGT]?$")
_SAFE_TOKEN_RE = re.compile(r"^[A-Za-z0-9_.,:=/+@%-]+$")


def _slurm_time(v: str) -> str:
    if not _SLURM_TIME_RE.match(v):
        raise ValueError(f"{v!r} is not a SLURM time (MM, HH:MM:SS or D-HH:MM:SS)")
    return v


def _slurm_mem(v: str) -> str:
    if not _SLURM_MEM_RE.match(v):
        raise ValueError(f"{v!r} is not a SLURM memory size (e.g. 32G)")
    return v


def _sbatch_token(v: str) -> str:
    if not _SAFE_TOKEN_RE.match(v):
        raise ValueError(f"{v!r} has characters SLURM does not accept here")
    return v


# The values that go into an #SBATCH line as they are: checked once here for every job's section.
SlurmTime = Annotated[str, AfterValidator(_slurm_time)]
SlurmMem = Annotated[str, AfterValidator(_slurm_mem)]
SbatchToken = Annotated[str, AfterValidator(_sbatch_token)]


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


class ServerConfig(Strict):
    """The study server of ``storage: server``: a PostgreSQL server hpctune runs itself (storage/server/)."""

    bin_dir: str | None = Field(
        None,
        description="The folder of PostgreSQL's `initdb`, `pg_ctl` and `postgres`. `null`: those on PATH, "
        "else the ones the `hpc-tune[server]` extra installs. `hpctune check` says which it will use.",
    )
    data_dir: str | None = Field(
        None,
        description="The server's folder: its data, its password (a 0600 file) and `address.json`, which the "
        "workers read to find it. On the shared filesystem, relative to this file. `null`: "
        "`<results>/<study>/server`.",
    )
    max_connections: Literal["auto"] | Annotated[int, Field(ge=20)] = Field(
        "auto",
        description="The server's `max_connections`. `auto`: what the array's workers at once need "
        '(docs/concepts.md, "Connections") plus room for `collect`, `status` and a dashboard.',
    )


class ServerJobConfig(Strict):
    """The SLURM job that runs the study server: small, and requeued at its own time limit."""

    time: SlurmTime | None = Field(
        None,
        description="The server job's time limit; at it the server stops cleanly, requeues itself and "
        "comes back on the same data (workers wait). `null`: `slurm.time`. Prefer the longest the partition "
        "allows.",
    )
    partition: SbatchToken | None = Field(
        None, description="`--partition` of the server job. `null`: `slurm.partition`."
    )
    cpus_per_task: int = Field(1, ge=1, description="`--cpus-per-task` of the server job.")
    mem: SlurmMem | None = Field("2G", description="`--mem` of the server job.")
    signal_grace_s: int = Field(
        60, ge=10, description="SLURM signals the server this many seconds before its time limit."
    )


# Where `slurm.trials_per_gpu: auto` stops growing: past it the Python side of each worker (one core each)
# and the GPU's context switches cost more than a small model leaves idle.
TRIALS_PER_GPU_AUTO_MAX = 16


class SlurmConfig(Strict):
    partition: SbatchToken | None = Field(None, description="`--partition`. `null`: the cluster's default.")
    account: SbatchToken | None = Field(None, description="`--account`. `null`: your default.")
    qos: SbatchToken | None = Field(None, description="`--qos`. `null`: the default.")
    time: SlurmTime = Field(
        "01:00:00",
        description="Time limit of each array task (`MM`, `HH:MM:SS`, `D-HH:MM:SS`); a trial still running "
        "then continues in the requeued task.",
    )
    gres: SbatchToken | None = Field(None, description="`--gres`, e.g. `gpu:1`. `null`: none.")
    cpus_per_task: int = Field(
        4, ge=1, description="`--cpus-per-task`; the worker limits torch's threads to it."
    )
    mem: SlurmMem | None = Field(
        "8G", description="`--mem` per task, e.g. `32G`. `null`: the cluster's default."
    )
    array_parallelism: int | None = Field(
        None,
        ge=1,
        description="At most this many array tasks at once (the `%N` of `--array`), unless `--array` has its "
        "own.",
    )
    signal_grace_s: int = Field(
        300,
        ge=10,
        description="SLURM sends USR2 this many seconds before the time limit: more than the slowest epoch "
        "plus saving a checkpoint.",
    )
    # `auto` measures instead of guessing: how many trials fit and whether more finish sooner depends on the
    # model, its data path and the GPU (policy/pack_size.py has the rule).
    trials_per_gpu: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        1,
        description="Trials each array task runs at once: that many worker processes sharing its GPU(s), "
        "through CUDA MPS when `nvidia-cuda-mps-control` is on the node's PATH, or its CPU cores without a "
        "GPU; each gets `cpus_per_task / N` threads and `train.memory_fraction / N` of the GPU. `auto`: the "
        "task measures its first trials (their peak memory, then finished trials per device-hour with 1, 2, "
        "4, ... workers, at most 16 and its cores) and keeps the largest N that still raised it by 10 % or "
        "more; the choice and why are recorded in the study (later tasks start with it) and printed by "
        "`hpctune collect`.",
    )
    setup: list[str] = Field(
        [],
        description="Bash lines run before the worker in every task: `module load ...`, "
        "`source .venv/bin/activate`.",
    )
    extra_sbatch: list[str] = Field(
        [], description="More sbatch options, each starting with `--` (not those hpctune sets)."
    )
    server: ServerJobConfig = Field(
        ServerJobConfig(),
        description="The job of the study server, with `storage: server` (see `slurm.server`).",
    )

    def workers_per_task(self) -> int:
        """The processes of one array task that hold the study open: the workers, plus their supervisor when
        there are several (connections are sized from it); ``auto`` counts its cap."""
        n = TRIALS_PER_GPU_AUTO_MAX if self.trials_per_gpu == "auto" else self.trials_per_gpu
        return 1 if n == 1 else n + 1

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
