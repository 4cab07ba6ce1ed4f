"""Every key hpc_tune reads or writes in an Optuna study's attributes, in one place.

The study is the contract between workers, the collector and later commands (``check``, ``rerun-top``,
``next``), possibly of another hpc_tune version: a key spelt twice drifts. This module imports nothing, so
that every layer, the storage's retrying layer included, can use it.

Who ran a trial (host, pid and the SLURM ids of its worker) is ONE user attribute, ``worker``: each user
attribute is its own row, written with a read and an insert, so seven separate attributes cost seven round
trips per trial (~2 ms each here, more across a network).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

# ---------------------------------------------------------------------------------------- study, user attrs
TRIALS = "trials"  # the budget (config ``trials``), set by every worker that opens the study
METRIC = "metric"  # the metric the trials' values are
# The epochs the study's (unpromoted) trials run, set once when the study is first opened: ``check`` compares
# it with the config, since trials of different lengths would be ranked together.
EPOCHS = "epochs"
BASELINE_ENQUEUED = "baseline_enqueued"
PROMOTED_STUDY = "promoted"  # the screening trials promoted to full fidelity
CONFIRMS = "confirms"  # on a ``rerun-top`` study: the study it confirms
CONFIRMATION_STUDY = "confirmation_study"  # on the original study: its ``rerun-top`` study
# On the original study, with the embedded store only: the linked study's journal (a file of its own).
CONFIRMATION_JOURNAL = "confirmation_journal"
# ``slurm.trials_per_gpu: auto``: the workers per array task the first task to measure chose, and why
# (policy/pack_size.py choice_attr); later tasks start with it, ``collect`` prints it.
TRIALS_PER_GPU = "trials_per_gpu"


ADMISSION_REFUSAL = "admission_refused:"  # + "<host>-<pid>": a worker that left its task's time unused


def admission_refusal(host: str, pid: int) -> str:
    """The study attribute in which a worker says it refused a trial that could not finish before its task's
    time limit (worker/admission.py): one per worker process, so that refusals never overwrite each other."""
    return f"{ADMISSION_REFUSAL}{host}-{pid}"


def phase_fixed(phase: int) -> str:
    """The study attribute holding the values pinned for ``phase`` (1-based), set when the phase starts."""
    return f"phase_{phase}_fixed"


# ---------------------------------------------------------------------------------------- trial, user attrs
WORKER = "worker"  # {host, pid, SLURM ids}: see worker_attr
BASELINE = "baseline"  # the config's baseline (kept through retries)
REASON = "reason"  # why a trial ended as it did: pruned, nonfinite_loss, oom, exception:<Type>, walltime, ...
# The reason of a trial that was still running when SLURM ended its task at the time limit (SIGTERM after
# the walltime signal): a kind that cannot hand on lost it whole.
WALLTIME_KILLED = "walltime_killed"
PHASE = "phase"  # 1-based phase of a phased search
PROMOTED_FROM = "promoted_from"  # the screening trial a full-fidelity trial was promoted from
CONFIRMS_TRIAL = "confirms_trial"  # on a ``rerun-top`` trial: the source trial's number
T_MAX = "t_max"  # a cosine schedule's T_max, when a foreign objective records it (the collector checks it)

# ---------------------------------------------------------------------------------------- trial, system attrs
# Optuna's RetryHeartbeatStaleTrialCallback writes these on a retry: the first trial of the chain, and every
# trial number of the chain before this one. hpc_tune's re-runs write them too, so that
# ``RetryHeartbeatStaleTrialCallback.retried_trial_number`` works on its studies.
FAILED_TRIAL = "failed_trial"
RETRY_HISTORY = "retry_history"
FAILURES = "hpctune:failures"  # real failures of a retry chain (a walltime hand-on is none)
RESUME_CHECKPOINT = "resume_checkpoint"
RESUMED_FROM = "resumed_from"  # the trial whose JSON holds the epochs up to the checkpoint
RESUME_EPOCH = "resume_epoch"  # the last epoch in the checkpoint
SEED = "hpctune:seed"  # a trial run with another seed than train.seed (a re-run of a top trial)
VOID = "hpctune:void"  # created beyond the budget while a database restart broke the study lock
CREATE_TOKEN = "hpctune:create_token"  # makes a retried create_new_trial idempotent (storage/retrying.py)
# Optuna's own key (what ``enqueue_trial`` writes): the values ``suggest_*`` returns, whatever range the call
# asks for. hpc_tune pins a grid point with it for an objective that asks for its parameters itself.
FIXED_PARAMS = "fixed_params"


class _HasUserAttrs(Protocol):
    @property
    def user_attrs(self) -> dict[str, Any]: ...


def worker_attr(host: str, pid: int, slurm: Mapping[str, Any]) -> dict[str, Any]:
    """The value of the ``worker`` attribute: host, pid, and the SLURM ids that are set."""
    return {"host": host, "pid": pid, **{k: v for k, v in slurm.items() if v is not None}}


def worker_of(trial: _HasUserAttrs) -> dict[str, Any]:
    """The ``worker`` attribute of a trial; empty for a trial no hpc_tune worker ran (a foreign study)."""
    found = trial.user_attrs.get(WORKER)
    return found if isinstance(found, dict) else {}
