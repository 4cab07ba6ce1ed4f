"""The two storage writes Optuna does not make idempotent, made so for the retrying layer (retrying.py).

A commit can succeed and its reply be lost (a connection that breaks after the server committed); the retry
must then find what the lost attempt did instead of doing it twice:
- ``create_new_trial``: a retry first looks for the trial the lost attempt made: a worker's new trial by the
  worker's (host, pid), which has one RUNNING trial at a time; any other creation (an enqueued trial) by a
  token in its system attributes.
- ``set_trial_state_values``: a retried "finish" finds the trial already finished (by us) and reports
  success when the stored state is the one asked for; a retried "take this WAITING trial" that finds it
  RUNNING is ours, because hpc_tune only takes waiting trials under the study lock.

Each function returns the callable the retrying layer calls once per attempt.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs
from hpc_tune.storage import optuna_adapter as adapter


def creation(inner: BaseStorage, study_id: int, template_trial: FrozenTrial | None) -> Callable[[], int]:
    template = template_trial or optuna.trial.create_trial(state=TrialState.RUNNING)
    identity = _worker_identity(template)
    if identity is None:
        template = _with_system_attr(template, attrs.CREATE_TOKEN, uuid.uuid4().hex)
    attempts = 0

    def create() -> int:
        nonlocal attempts
        attempts += 1
        if attempts > 1:  # the earlier attempt may have committed before its reply was lost
            found = _find_created(inner, study_id, template, identity)
            if found is not None:
                return found
        return inner.create_new_trial(study_id, template_trial=template)

    return create


def state_change(
    inner: BaseStorage, trial_id: int, state: TrialState, values: Sequence[float] | None
) -> Callable[[], bool]:
    attempts = 0

    def apply() -> bool:
        nonlocal attempts
        attempts += 1
        try:
            done = inner.set_trial_state_values(trial_id, state, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            if attempts > 1 and inner.get_trial(trial_id).state == state:
                return True  # our earlier attempt committed; its reply was lost
            raise
        if not done and attempts > 1 and state == TrialState.RUNNING:
            return inner.get_trial(trial_id).state == TrialState.RUNNING
        return done

    return apply


def _find_created(
    inner: BaseStorage, study_id: int, template: FrozenTrial, identity: tuple[Any, Any] | None
) -> int | None:
    """The trial an earlier attempt created: the RUNNING trial of this worker (a worker runs one trial at a
    time, and creates it under the study lock), else the one carrying the template's token."""
    token = template.system_attrs.get(attrs.CREATE_TOKEN)
    for trial in inner.get_all_trials(study_id, deepcopy=False):
        if identity is not None:
            if trial.state == TrialState.RUNNING and _worker_identity(trial) == identity:
                return adapter.trial_id(trial)
        elif trial.system_attrs.get(attrs.CREATE_TOKEN) == token:
            return adapter.trial_id(trial)
    return None


def _worker_identity(trial: FrozenTrial) -> tuple[Any, Any] | None:
    """(host, pid) of the worker a RUNNING trial was created for; each worker runs one trial at a time, so
    this identifies a new trial without the extra row a token costs (one insert per trial)."""
    if trial.state != TrialState.RUNNING:
        return None
    worker = attrs.worker_of(trial)
    host, pid = worker.get("host"), worker.get("pid")
    return None if host is None or pid is None else (host, pid)


def _with_system_attr(template: FrozenTrial, key: str, value: Any) -> FrozenTrial:
    """A copy of a template trial with one more system attribute (templates are shared: never mutate)."""
    return optuna.trial.FrozenTrial(
        number=template.number,
        state=template.state,
        value=None,
        values=template.values,
        datetime_start=template.datetime_start,
        datetime_complete=template.datetime_complete,
        params=template.params,
        distributions=template.distributions,
        user_attrs=template.user_attrs,
        system_attrs={**template.system_attrs, key: value},
        intermediate_values=template.intermediate_values,
        trial_id=adapter.trial_id(template),
    )
