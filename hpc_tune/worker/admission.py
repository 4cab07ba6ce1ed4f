"""The worker's side of walltime-aware admission (policy/admission.py decides): which tasks it applies to,
the task's deadline, and what a refusal leaves behind.

It applies only to kinds that cannot hand on: the engine checkpoints at every epoch boundary and a script
that names ``{checkpoint}`` or ``{resume}`` (or says ``resumes: true``) continues from its checkpoint, so a
trial of theirs cut by the walltime loses one epoch at most and admission would only waste the time left.
A refusal is written to the study (a study attribute per worker, which ``collect`` counts with the hours it
saved) and to the worker's log; the task then ends and requeues itself like a walltime hand-on, so the
budget is finished by tasks that have the time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hpc_tune import attrs
from hpc_tune.config import Config
from hpc_tune.config.task import command_placeholders
from hpc_tune.policy.admission import Admission, decide_admission, estimate_trial
from hpc_tune.slurm.environment import SlurmEnv
from hpc_tune.slurm.walltime import TimeLimit, time_limit
from hpc_tune.storage.records import now_iso

log = logging.getLogger(__name__)


def can_hand_on(kind: str, config: Config) -> bool:
    """Whether a trial of this task cut at the walltime continues from where it stopped."""
    if kind == "build":
        return True
    if kind == "command" and not isinstance(config.task, str):
        if config.task.resumes is not None:
            return config.task.resumes
        return bool({"checkpoint", "resume"} & set(command_placeholders(config.task.command)))
    return False


class WalltimeAdmission:
    """Asks SLURM for the task's deadline once, then checks each trial against it."""

    def __init__(self, config: Config, env: SlurmEnv, limit: TimeLimit | None) -> None:
        self.config = config
        self.env = env
        self.limit = limit
        self.refusal: Admission | None = None

    @classmethod
    def for_task(
        cls, config: Config, kind: str, env: SlurmEnv, *, limit: TimeLimit | None = None
    ) -> WalltimeAdmission | None:
        """None where admission does not apply: switched off, a kind that hands on, no known time limit
        (outside SLURM, or squeue said nothing usable). ``limit``: the deadline when the caller knows it."""
        if not config.worker.walltime_admission or can_hand_on(kind, config):
            return None
        limit = limit if limit is not None else time_limit(env)
        if limit is None:
            return None
        log.info("walltime admission on: %.0f s left of a %d s limit", limit.left(), limit.limit_s)
        return cls(config, env, limit)

    def check(self, trials: Sequence[FrozenTrial], *, promoted: bool) -> Admission:
        """``promoted``: the next trial is a full-fidelity one promoted from screening."""
        assert self.limit is not None
        full = self.config.fidelity is None or promoted
        epochs = self.config.epochs if full else self.config.effective_epochs()
        estimate = estimate_trial(trials, promoted=promoted, epochs=epochs)
        return decide_admission(estimate, self.limit.left(), self.limit.limit_s)

    def still_refused(self, admission: Admission) -> bool:
        """Before leaving: ask SLURM again, since an administrator may have extended the limit."""
        fresh = time_limit(self.env)
        if fresh is not None:
            self.limit = fresh
        if fresh is None or admission.estimate is None or admission.estimate.needed_s > fresh.left():
            self.refusal = admission
            return True
        return False

    def record(self, study: optuna.Study, worker: Mapping[str, Any], devices: Mapping[str, Any]) -> None:
        """Say in the study and the log that this task left time unused, and why: ``collect`` counts it."""
        refusal = self.refusal
        if refusal is None or refusal.estimate is None:
            return
        left = max(0.0, refusal.left_s or 0.0)
        count = devices.get("count") if isinstance(devices.get("count"), int) else 1
        log.warning("walltime admission: %s; ending this task so that it frees its devices", refusal.why)
        study.set_user_attr(
            attrs.admission_refusal(str(worker.get("host")), int(worker.get("pid", 0))),
            {
                "at": now_iso(),
                "worker": dict(worker),
                "devices": dict(devices),
                "estimate_s": round(refusal.estimate.seconds, 3),
                "needed_s": round(refusal.estimate.needed_s, 3),
                "from_trials": refusal.estimate.from_trials,
                "left_s": round(left, 3),
                # What a trial started now would have burnt before the kill at the limit.
                "saved_device_s": round(left * count, 3),
                "why": refusal.why,
            },
        )
