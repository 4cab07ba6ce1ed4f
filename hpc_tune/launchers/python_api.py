"""``hpc_tune.launch``: the worker array from Python, through submitit, for notebooks, Hydra apps and
programmatic sweeps that want job handles instead of scripts. ``hpctune submit`` stays the readable-script
path; docs/python-api.md says when to use which, docs/design-notes.md why it is built this way.

Each array task runs the same worker as ``hpctune worker`` (one shared study, the same budget, liveness and
walltime protocol), as a :class:`WorkerTask` that submitit pickles and runs on a node (``slurm``), in a
process here (``local``) or in this process (``debug``). This module is the one place of the SLURM wing that
composes the worker and report wings, like the CLI does; it imports them only inside the jobs' code so that
``launch()`` itself never loads torch.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import submitit
from submitit.core.job_environment import SignalHandler
from submitit.core.utils import FailedJobError
from submitit.helpers import Checkpointable, clean_env, environment_variables

from hpc_tune.config import STORAGE_ENV, Config, LoadedConfig, load_config, parse_config, slurm_time_seconds
from hpc_tune.errors import ConfigError, HpcTuneError, LaunchError, SlurmError, StorageError
from hpc_tune.launchers.environment import local_worker_environment
from hpc_tune.launchers.options import check_no_password, check_setup, refuse_embedded_array, sbatch_options
from hpc_tune.policy.dead_workers import dead_local_workers
from hpc_tune.policy.shared_study import fail_running
from hpc_tune.slurm import ArraySpec, max_array_size
from hpc_tune.storage.timelines import process_start_time
from hpc_tune.storage.url import spec_of

if TYPE_CHECKING:
    from hpc_tune.collector.collect import Collected

__all__ = ["EXECUTORS", "CollectTask", "Launched", "TaskReport", "WorkerTask", "launch"]

ExecutorKind = Literal["slurm", "local", "debug"]
EXECUTORS: tuple[str, ...] = get_args(ExecutorKind)
# The local executor has no scheduler limit to mirror: like `hpctune run --local`, its workers run until the
# budget is used (a week, submitit needs a number); parameters={"timeout_min": N} sets one.
LOCAL_TIMEOUT_MIN = 7 * 24 * 60
# submitit stops requeueing a Checkpointable after max_num_timeout time-outs (default 3). A walltime hand-on
# always moves the study on (a continuation resumes at the last epoch), so the rendered scripts requeue
# without limit; this only stops a task that is requeued forever for another reason.
DEFAULT_MAX_REQUEUES = 100


@dataclass(frozen=True)
class TaskReport:
    """What one worker job did: the result of its submitit job (``job.result()``)."""

    index: int
    trials_run: int
    by_state: dict[str, int]
    stopped_by: str


@dataclass(frozen=True)
class JobStorage:
    """How a job finds the study's storage while no password travels in what submitit pickles to disk.

    A URL without a password is kept here; one with a password stays out of the pickle and reaches the job
    in its environment (``HPCTUNE_STORAGE``, as ``run --local`` passes it to its children), which only the
    local and debug executors allow: sbatch would copy it into SLURM's spool.
    """

    url: str | None = None  # None and not from_env: the embedded journal store
    from_env: bool = False

    def resolve(self) -> str | None:
        url = os.environ.get(STORAGE_ENV) if self.from_env else self.url
        if self.from_env and not url:
            raise StorageError(
                "the study's storage URL was to come from the job's environment, which has none", STORAGE_ENV
            )
        return url


def _start_own_process() -> float:
    """In a job's own process (not debug's), log as ``hpctune worker`` on hpc_tune's logger (submitit's has
    its own handler: the root's would print twice); return when it started: the task held its start-up too."""
    logger = logging.getLogger("hpc_tune")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return process_start_time()


class WorkerTask(Checkpointable):
    """One array task: a worker on the shared study, as a callable that submitit runs.

    Walltime under submitit. submitit installs its own handlers before it calls this task: USR2 checkpoints
    and requeues the job at once (it calls :meth:`checkpoint`, dumps the returned submission over the
    pickle, runs ``scontrol requeue`` — exit 144 on the local executor — and exits), SIGTERM is ignored. The
    worker's signal guard replaces them while the worker loop runs, so a USR2 that lands during a trial only
    sets the walltime flag: the trial is checkpointed at the next epoch boundary and handed on as a
    continuation trial, and the loop ends. Exactly one mechanism requeues: the worker is told not to
    (``requeue=False``) and this task then hands the signal to submitit's handler, which is back in place,
    so submitit requeues as for any Checkpointable and the handle waits for the rerun (the first run leaves
    no result). A USR2 outside the loop (start-up, the end) goes straight to submitit, when no trial is held.
    The requeued task starts a fresh worker, which takes the continuation (or any faster worker does).

    :meth:`checkpoint` is submitit's default (resubmit this same task): the study, not the callable, holds
    the progress, and this object holds no password (see :class:`JobStorage`).
    """

    def __init__(self, loaded: LoadedConfig, storage: JobStorage, index: int, own_process: bool) -> None:
        self.loaded = loaded
        self.storage = storage
        self.index = index
        self.own_process = own_process

    def __call__(self) -> TaskReport:
        from hpc_tune.worker.loop import run_worker

        started = _start_own_process() if self.own_process else None
        storage = self.storage.resolve()
        report = run_worker(self.loaded, storage, worker_index=self.index, requeue=False, started_at=started)
        if report.wants_requeue:
            _requeue_through_submitit()
        if report.stopped_by == "signal":
            raise LaunchError(
                f"worker {self.index} was interrupted by a signal (scancel, Ctrl-C): its running trial was "
                "failed and re-enqueued; launch again to finish the study",
                self.loaded.config.study,
            )
        return TaskReport(self.index, report.trials_run, dict(report.by_state), report.stopped_by)


def _requeue_through_submitit() -> None:
    """Give the walltime signal to submitit's handler, which checkpoints, requeues and exits (SystemExit).

    Without it (the debug executor, or the task called directly) nothing can requeue this process: the
    continuation trial waits in the study for the next worker, and the task returns."""
    handler = signal.getsignal(signal.SIGUSR2)
    if callable(handler) and isinstance(getattr(handler, "__self__", None), SignalHandler):
        handler(signal.SIGUSR2, None)


class CollectTask:
    """``hpctune collect`` for a launched study: the SLURM collector job (afterany on the array), or what
    ``Launched.result()`` runs here once the local or debug workers have ended."""

    def __init__(
        self, loaded: LoadedConfig, storage: JobStorage, *, recover_local: bool = False, echo: bool = False
    ) -> None:
        self.loaded = loaded
        self.storage = storage
        self.recover_local = recover_local
        self.echo = echo  # the table for the collector job's log, as `hpctune collect` prints it

    def __call__(self) -> Collected:
        from hpc_tune.collector.collect import collect_shared, format_table, load_study

        loaded, config = self.loaded, self.loaded.config
        spec = spec_of(loaded, self.storage.resolve())
        # With the worker settings, trials of workers that died without a word are failed first (heartbeat).
        opened = load_study(spec, config.study, config.worker)
        if self.recover_local and spec.journal_path is not None:
            # The journal store has no heartbeat, and local submitit workers no `run --local` parent: a
            # trial still RUNNING under a pid of this host that no longer exists is failed and re-enqueued.
            fail_running(opened, loaded, dead_local_workers(), "worker_killed")
        result = collect_shared(opened, loaded.study_dir, config=config)
        if self.echo:
            print(format_table(result.summary), flush=True)
        return result


@dataclass
class Launched:
    """The handles of a launch: one submitit job per worker (``jobs``), and on SLURM the collector job.

    ``result()`` is the one call most users need: it waits for the workers, collects the study (the
    collector job on SLURM, here otherwise) and returns the summary; it raises :class:`LaunchError` when a
    worker failed, after the summary was written."""

    study: str
    executor: ExecutorKind
    indices: tuple[int, ...]
    jobs: list[submitit.Job[TaskReport]]
    collector: submitit.Job[Collected] | None
    folder: Path
    _collect_here: CollectTask | None = field(default=None, repr=False)

    def done(self) -> bool:
        """True once every job has ended (the debug executor runs its jobs to answer)."""
        return all(job.done() for job in self.jobs) and (self.collector is None or self.collector.done())

    def cancel(self) -> None:
        """Cancel the workers (they fail and re-enqueue their running trials) and the collector."""
        for job in [*self.jobs, *([self.collector] if self.collector is not None else [])]:
            job.cancel(check=False)

    def reports(self) -> list[TaskReport]:
        """Wait for the workers; what each did. Raises LaunchError naming the first that failed."""
        reports, failures = self._wait_for_workers()
        if failures:
            raise LaunchError(self._failure_line(failures), self.folder)
        return reports

    def result(self) -> Collected:
        """Wait for every worker, collect the study, and return what ``hpctune collect`` writes."""
        if self.collector is not None:
            try:
                collected = self.collector.result()  # afterany: every worker has ended when it ran
            except Exception as exc:  # submitit's job errors, with the job's own error line
                raise LaunchError(
                    f"the collector job failed: {_why(exc)}", self.collector.paths.stderr
                ) from None
            _, failures = self._wait_for_workers(ended=True)
        elif self._collect_here is not None:
            _, failures = self._wait_for_workers()
            collected = self._collect_here()
        else:
            raise LaunchError("launched with collect=False: nothing collects; use reports()", self.folder)
        if failures:
            raise LaunchError(
                f"{self._failure_line(failures)} (summary written anyway: {collected.summary_path})",
                self.folder,
            )
        return collected

    def _wait_for_workers(self, *, ended: bool = False) -> tuple[list[TaskReport], list[tuple[int, str]]]:
        """A job that ended without a result (killed) counts as failed. ``ended``: the jobs are known to
        have ended (the collector ran after them), so none is waited for: submitit learns that a SLURM job
        without a result is gone only from sacct, and a cluster without accounting would keep it waiting."""
        reports: list[TaskReport] = []
        failures: list[tuple[int, str]] = []
        for index, job in zip(self.indices, self.jobs, strict=True):
            if self.executor != "debug":  # a debug job runs when its result is asked for
                if not ended:
                    job.wait()  # local: until its process ends; slurm: until a result (or sacct: gone)
                if not job.done() or not job.paths.result_pickle.exists():
                    failures.append((index, f"ended without a result (killed?); see {job.paths.stderr}"))
                    continue
            try:
                reports.append(job.result())
            except Exception as exc:  # submitit's FailedJobError/UncompletedJobError carry the job's trace
                failures.append((index, _why(exc)))
        return reports, failures

    def _failure_line(self, failures: list[tuple[int, str]]) -> str:
        index, why = failures[0]
        return f"{len(failures)} of {len(self.jobs)} worker job(s) failed; worker {index}: {why}"


def _why(exc: BaseException) -> str:
    """The error line of a failed job: submitit wraps the job's traceback between two dashed lines."""
    text = str(exc)
    parts = text.split("-" * 22)
    if len(parts) >= 3:
        lines = [line.strip() for line in parts[1].splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)


def _load(config: Any, storage: str | None) -> LoadedConfig:
    """A path is read like ``-c`` (HPCTUNE_STORAGE overrides the file); a mapping (a dict, Hydra's
    DictConfig) likewise; a LoadedConfig or Config is used as given. ``storage`` overrides every one."""
    overrides = {"storage": storage}
    if isinstance(config, LoadedConfig):
        return config if storage is None else _with_storage(config, storage)
    if isinstance(config, Config):
        loaded = LoadedConfig(config=config, path=None)
        return loaded if storage is None else _with_storage(loaded, storage)
    if isinstance(config, str | os.PathLike):
        return load_config(config, overrides=overrides)
    if isinstance(config, Mapping):
        env = {"storage": os.environ.get(STORAGE_ENV) or None}
        merged = {**env, **{k: v for k, v in overrides.items() if v is not None}}
        return LoadedConfig(config=parse_config(_plain(config), None, merged), path=None)
    raise ConfigError(
        f"config must be a path, a mapping, a Config or a LoadedConfig, not {type(config).__name__}", "launch"
    )


def _with_storage(loaded: LoadedConfig, storage: str) -> LoadedConfig:
    return LoadedConfig(config=loaded.config.model_copy(update={"storage": storage}), path=loaded.path)


def _plain(value: Any) -> Any:
    """Plain dicts and lists from any mapping/sequence (OmegaConf's DictConfig/ListConfig from Hydra)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


def url_or_none(loaded: LoadedConfig) -> str | None:
    """The study's database URL; None for the embedded store."""
    return None if loaded.config.embedded else loaded.config.storage


def _job_storage(loaded: LoadedConfig, kind: ExecutorKind) -> tuple[JobStorage, dict[str, str]]:
    """The storage as the jobs will find it, and the environment the submission must carry for that."""
    url = url_or_none(loaded)
    if url is None:
        return JobStorage(), {}
    if kind == "slurm":
        check_no_password(loaded)  # sbatch copies the environment and the script into SLURM's spool
        return JobStorage(url=url), {}
    try:
        check_no_password(loaded)
    except ConfigError:
        return JobStorage(from_env=True), {STORAGE_ENV: url}
    return JobStorage(url=url), {}


def slurm_minutes(time: str) -> int:
    """A SLURM time limit (the config's ``slurm.time``) in whole minutes, rounded up as SLURM does.

    submitit needs minutes: its USR2 handler computes with them (a string breaks it)."""
    return max(1, math.ceil(slurm_time_seconds(time) / 60))


# sbatch options that submitit takes by name; every other option goes in its additional_parameters.
_SUBMITIT_NAMED = ("partition", "account", "qos", "mem", "gres", "cpus-per-task")


def _slurm_parameters(loaded: LoadedConfig, *, collector: bool) -> dict[str, Any]:
    """The rendered scripts' options (launch/options.py) in submitit's names (``_make_sbatch_string``'s
    arguments): the same resources by the same mapping."""
    options = sbatch_options(loaded, "collector" if collector else "array")
    resources = dict(options.resources)
    params: dict[str, Any] = {
        "job_name": resources.pop("job-name"),  # status and cancel find launched jobs too
        "time": slurm_minutes(resources.pop("time")),
        "setup": check_setup(loaded.config.slurm.setup),
    }
    for name in _SUBMITIT_NAMED:
        if name in resources:
            value = resources.pop(name)
            params[name.replace("-", "_")] = int(value) if name == "cpus-per-task" else value
    additional: dict[str, Any] = {}
    if not collector:
        # Without B: (the rendered scripts' form): submitit runs the worker in an srun step, which gets it.
        params["signal_delay_s"] = loaded.config.slurm.signal_grace_s
        additional["requeue"] = True
    additional.update({k.replace("-", "_"): v for k, v in resources.items()})  # chdir, extra_sbatch's own
    additional.update({k.replace("-", "_"): True if v is None else v for k, v in options.extra.items()})
    params["additional_parameters"] = additional
    return params


def _executor(kind: ExecutorKind, folder: Path, loaded: LoadedConfig, max_requeues: int) -> submitit.Executor:
    if kind == "debug":
        return submitit.DebugExecutor(folder)
    if kind == "local":
        local = submitit.LocalExecutor(folder, max_num_timeout=max_requeues)
        local.update_parameters(
            timeout_min=LOCAL_TIMEOUT_MIN, signal_delay_s=loaded.config.slurm.signal_grace_s
        )
        return local
    try:
        slurm = submitit.SlurmExecutor(folder, max_num_timeout=max_requeues)
    except RuntimeError:
        raise SlurmError(
            "SLURM is not available here (no srun on PATH): use executor='local' on this machine", "launch"
        ) from None
    slurm.update_parameters(**_slurm_parameters(loaded, collector=False))
    return slurm


def _update(executor: submitit.Executor, parameters: Mapping[str, Any]) -> None:
    try:
        executor.update_parameters(**parameters)
    except ValueError as exc:  # submitit lists the valid names
        raise ConfigError(f"submitit refused parameters: {str(exc).splitlines()[0]}", "parameters") from None


def _submit(submit: Any) -> Any:
    try:
        return submit()
    except FailedJobError as exc:
        detail = next((line for line in str(exc).splitlines() if line.strip()), "sbatch failed")
        raise SlurmError(detail.strip(), "sbatch") from None


def launch(
    config: str | os.PathLike[str] | Mapping[str, Any] | Config | LoadedConfig,
    array: str | ArraySpec = "0",
    executor: str = "slurm",
    *,
    storage: str | None = None,
    folder: str | os.PathLike[str] | None = None,
    collect: bool = True,
    max_requeues: int = DEFAULT_MAX_REQUEUES,
    parameters: Mapping[str, Any] | None = None,
) -> Launched:
    """Run the study's workers as submitit jobs, one per index of ``array``; return their handles.

    ``array`` is an sbatch ``--array`` spec (``0-7%4``, ``1,3,5``); each index is a worker index, as
    SLURM_ARRAY_TASK_ID is for ``hpctune worker``. ``executor``: ``slurm`` (an sbatch array from the config's
    ``slurm:`` section, plus the collector job after it), ``local`` (one process per worker on this machine;
    ``%N`` starts only N, the rest could only start once the budget is used) or ``debug`` (in this process,
    one worker after the other, when their results are asked for; submitit opens pdb on an error).

    ``storage`` overrides the config's and HPCTUNE_STORAGE; ``folder`` holds submitit's pickles and logs
    (default ``runs/<study>/submitit``); ``collect=False`` submits no collector; ``parameters`` go to
    submitit's ``update_parameters`` of the worker jobs last (any setting it knows, e.g.
    ``{"constraint": "a100"}``), the escape hatch for what the config's ``slurm:`` section does not say.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}: use one of {', '.join(EXECUTORS)}", "launch")
    kind: ExecutorKind = executor  # type: ignore[assignment]
    spec = array if isinstance(array, ArraySpec) else ArraySpec.parse(array)
    if max_requeues < 0:
        raise ConfigError(f"max_requeues must be >= 0, got {max_requeues}", "launch")
    loaded = _load(config, storage)
    if spec.parallelism is None and loaded.config.slurm.array_parallelism is not None:
        spec = spec.with_parallelism(loaded.config.slurm.array_parallelism)
    if kind == "slurm":
        refuse_embedded_array(loaded, spec)  # the journal is safe on one machine, not across nodes
    if kind != "debug" and submitit.JobEnvironment.USR_SIG != "USR2":
        raise ConfigError(
            "the workers checkpoint on USR2, but SUBMITIT_PREEMPT_SIGNAL makes submitit use "
            f"{submitit.JobEnvironment.USR_SIG}: unset it",
            "SUBMITIT_PREEMPT_SIGNAL",
        )
    job_storage, job_env = _job_storage(loaded, kind)
    # The pickles carry the config without its storage URL: the jobs take it from job_storage.
    pickled = LoadedConfig(config=loaded.config.model_copy(update={"storage": None}), path=loaded.path)
    indices = spec.indices
    if kind == "local" and spec.parallelism is not None:
        indices = indices[: spec.parallelism]
    out = Path(folder) if folder is not None else loaded.study_dir / "submitit"
    out.mkdir(parents=True, exist_ok=True)

    ex = _executor(kind, out, loaded, max_requeues)
    if kind == "slurm":
        limit = max_array_size()
        if len(indices) > limit:  # submitit numbers the tasks 0..n-1
            raise SlurmError(
                f"{len(indices)} tasks exceed MaxArraySize={limit}: hpctune submit splits such arrays",
                "launch",
            )
        _update(ex, {"array_parallelism": spec.parallelism or len(indices)})
    elif kind == "local":
        job_env.update(local_worker_environment(len(indices)))
    if parameters:
        _update(ex, parameters)

    tasks = [WorkerTask(pickled, job_storage, i, own_process=kind != "debug") for i in indices]
    # clean_env: a launch from inside a SLURM allocation must not hand its SLURM_* ids to the workers (a
    # local worker would take them for its own and record them on its trials).
    with clean_env(), environment_variables(**job_env):
        jobs = _submit(lambda: ex.submit_array(tasks))
        collector = None
        here = None
        if collect and kind == "slurm":
            collector = _submit_collector(out, pickled, job_storage, jobs, max_requeues)
        elif collect:
            # Runs in this process, never pickled: it may hold the URL as given.
            here = CollectTask(pickled, JobStorage(url=url_or_none(loaded)), recover_local=kind == "local")
    return Launched(
        study=loaded.config.study,
        executor=kind,
        indices=tuple(indices),
        jobs=jobs,
        collector=collector,
        folder=out,
        _collect_here=here,
    )


def _submit_collector(
    folder: Path,
    loaded: LoadedConfig,
    storage: JobStorage,
    jobs: list[submitit.Job[TaskReport]],
    max_requeues: int,
) -> submitit.Job[Collected]:
    """The collector after the array (afterany waits for requeued tasks too), or nothing at all: a failed
    collector submission cancels the array, as ``hpctune submit`` does."""
    array_ids = sorted({job.job_id.split("_")[0] for job in jobs}, key=int)
    ex = submitit.SlurmExecutor(folder, max_num_timeout=max_requeues)
    ex.update_parameters(**_slurm_parameters(loaded, collector=True))
    ex.update_parameters(dependency="afterany:" + ":".join(array_ids))
    try:
        return _submit(lambda: ex.submit(CollectTask(loaded, storage, echo=True)))
    except HpcTuneError as exc:
        for job in jobs:
            job.cancel(check=False)
        raise SlurmError(
            f"{exc.what}; cancelled the worker job(s) {', '.join(array_ids)}", exc.where
        ) from None
