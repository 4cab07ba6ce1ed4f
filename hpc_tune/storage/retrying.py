"""One retrying layer between every part of hpc_tune (and the user's own objective) and the study storage.

A tuning campaign runs for days against one database; a restart, a fail-over or a full connection table
must not turn a healthy trial into a FAIL. Every storage call made while a trial runs goes through
:class:`RetryingStorage`: the worker's, the engine's, and those a plain Optuna objective makes itself
(``suggest_*``, ``report``, ``should_prune``, ``set_user_attr`` all reach the storage through the study).
Transient errors are retried with jittered exponential back-off (tenacity) until a deadline; past it
:class:`StorageUnavailableError` (exit 75, EX_TEMPFAIL) ends the worker, whose running trial is then failed
and retried by the liveness check of the other workers, never counted as budget.

Retried writes must be idempotent. Most of Optuna's are (upserts of attributes, intermediate values and
params); the two that are not, creating a trial and changing its state, are guarded in idempotent.py.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import optuna
import tenacity
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpc_tune.errors import StorageUnavailableError
from hpc_tune.storage import idempotent
from hpc_tune.storage import optuna_adapter as adapter
from hpc_tune.storage.failures import first_line, is_server_full, is_server_starting, is_transient

if TYPE_CHECKING:
    from optuna.study import FrozenStudy

T = TypeVar("T")
log = logging.getLogger(__name__)

# How long a worker keeps retrying one storage call through an outage (a restart, a fail-over, a full
# connection table) before it gives up with exit 75: long enough for a database restart or a fail-over,
# short enough that a dead server ends the array task instead of holding a GPU.
DEFAULT_DEADLINE_S = 300.0


@dataclass(frozen=True)
class RetryPolicy:
    deadline_s: float = DEFAULT_DEADLINE_S
    first_wait_s: float = 0.5
    max_wait_s: float = 8.0
    attempts: int | None = None  # None: until the deadline
    # While the study server has not published its address: a look at one file, at most this often from
    # each worker (1000 workers: ~1300 stats a second on the shared file system's metadata server).
    starting_wait_s: tuple[float, float] = (0.5, 1.0)


def retry_wait(policy: RetryPolicy) -> Callable[[tenacity.RetryCallState], float]:
    """Tenacity's wait: jittered exponential back-off for a database that failed, a short one while the
    study server is still on its way (nothing is asked of any server until it has an address)."""
    backoff = tenacity.wait_random_exponential(multiplier=policy.first_wait_s, max=policy.max_wait_s)
    starting = tenacity.wait_random(*policy.starting_wait_s)

    def wait(state: tenacity.RetryCallState) -> float:
        failed = state.outcome.exception() if state.outcome is not None else None
        if failed is not None and is_server_starting(failed):
            return float(starting(state))
        return float(backoff(state))

    return wait


def retry_transient(
    fn: Callable[[], T],
    policy: RetryPolicy = RetryPolicy(),
    *,
    on_transient: Callable[[BaseException], None] | None = None,
) -> T:
    """Call ``fn``; after a transient error call it again with jittered exponential back-off until the
    policy's deadline or attempts run out, then re-raise the last error. Other errors propagate at once.

    The first call is made outside tenacity: the common case (no error) costs one function call.
    """
    try:
        return fn()
    except Exception as exc:
        if not is_transient(exc) or (policy.attempts == 1 and not is_server_full(exc)):
            raise
        if on_transient is not None:
            on_transient(exc)
        log.warning("storage call failed (%s); retrying for up to %.0f s", first_line(exc), policy.deadline_s)

    def note(state: tenacity.RetryCallState) -> None:
        if on_transient is not None and state.outcome is not None and state.outcome.exception() is not None:
            on_transient(state.outcome.exception())  # type: ignore[arg-type]

    stop: Any = tenacity.stop_after_delay(policy.deadline_s)
    if policy.attempts is not None:
        limit = policy.attempts - 1

        def out_of_attempts(state: tenacity.RetryCallState) -> bool:
            # A full connection table is waited out until the deadline; only other failures use attempts.
            failed = state.outcome.exception() if state.outcome is not None else None
            return failed is not None and not is_server_full(failed) and state.attempt_number >= limit

        stop = stop | out_of_attempts
    retrying = tenacity.Retrying(
        stop=stop,
        wait=retry_wait(policy),
        retry=tenacity.retry_if_exception(is_transient),
        before_sleep=note,
        reraise=True,
    )
    return retrying(fn)


class RetryingStorage(BaseStorage, adapter.BaseHeartbeat):
    """An Optuna storage that retries transient errors of the storage it wraps, until a deadline.

    It also remembers when this process last saw the database fail (:attr:`last_outage`), so that liveness
    checks can wait until other workers had the chance to beat again: after a 90 s outage every heartbeat
    is 90 s old, and failing those trials would fail every healthy worker at once.
    """

    def __init__(
        self,
        inner: BaseStorage,
        *,
        policy: RetryPolicy = RetryPolicy(),
        where: str = "",
        engine: Any = None,
    ) -> None:
        self.inner = inner
        self.engine = engine  # the SQLAlchemy engine of a database storage (connection counts, tests)
        self.policy = policy
        self.where = where
        self.last_outage: float | None = None  # time.monotonic() of the last transient error seen
        self.unavailable = False  # a call ran past the deadline: the worker must end (exit 75)
        # Set by a worker: a context every call runs in, so that SIGTERM/SIGINT never land in the middle of a
        # storage call (the journal store's file lock, half a transaction) but right after it.
        self.guard: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ machinery
    def _saw_outage(self, exc: BaseException) -> None:
        with self._lock:
            self.last_outage = time.monotonic()

    def settled(self, quiet_s: float) -> bool:
        """True when no call of this process failed during the last ``quiet_s`` seconds."""
        last = self.last_outage
        return last is None or time.monotonic() - last >= quiet_s

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (storage work of the caller's own, e.g. under a lock) with this storage's retries."""
        try:
            with self.guard():
                return retry_transient(fn, self.policy, on_transient=self._saw_outage)
        except Exception as exc:
            if not is_transient(exc):
                raise
            self.unavailable = True
            raise StorageUnavailableError(
                f"the study database did not answer for {self.policy.deadline_s:.0f} s: {first_line(exc)}",
                self.where or None,
            ) from None

    # ------------------------------------------------------------------------------------------ studies
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        # A retry after a lost reply raises DuplicatedStudyError, which create_study(load_if_exists=True)
        # turns into loading the study: idempotent as used.
        return self.call(lambda: self.inner.create_new_study(directions, study_name))

    def delete_study(self, study_id: int) -> None:
        self.call(lambda: self.inner.delete_study(study_id))

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self.call(lambda: self.inner.set_study_user_attr(study_id, key, value))

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self.call(lambda: self.inner.set_study_system_attr(study_id, key, value))

    def get_study_id_from_name(self, study_name: str) -> int:
        return self.call(lambda: self.inner.get_study_id_from_name(study_name))

    def get_study_name_from_id(self, study_id: int) -> str:
        return self.call(lambda: self.inner.get_study_name_from_id(study_id))

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self.call(lambda: self.inner.get_study_directions(study_id))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self.call(lambda: self.inner.get_study_user_attrs(study_id))

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self.call(lambda: self.inner.get_study_system_attrs(study_id))

    def get_all_studies(self) -> list[FrozenStudy]:
        return self.call(self.inner.get_all_studies)

    # ------------------------------------------------------------------------------------------ trials
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self.call(idempotent.creation(self.inner, study_id, template_trial))

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: BaseDistribution
    ) -> None:
        # A duplicate insert is an IntegrityError that Optuna ignores: idempotent.
        self.call(
            lambda: self.inner.set_trial_param(trial_id, param_name, param_value_internal, distribution)
        )

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self.call(lambda: self.inner.get_trial_id_from_study_id_trial_number(study_id, trial_number))

    def get_trial_number_from_id(self, trial_id: int) -> int:
        return self.call(lambda: self.inner.get_trial_number_from_id(trial_id))

    def get_trial_param(self, trial_id: int, param_name: str) -> float:
        return self.call(lambda: self.inner.get_trial_param(trial_id, param_name))

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        return self.call(idempotent.state_change(self.inner, trial_id, state, values))

    def set_trial_intermediate_value(self, trial_id: int, step: int, intermediate_value: float) -> None:
        self.call(lambda: self.inner.set_trial_intermediate_value(trial_id, step, intermediate_value))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.call(lambda: self.inner.set_trial_user_attr(trial_id, key, value))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self.call(lambda: self.inner.set_trial_system_attr(trial_id, key, value))

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self.call(lambda: self.inner.get_trial(trial_id))

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        return self.call(lambda: self.inner.get_all_trials(study_id, deepcopy=deepcopy, states=states))

    def get_n_trials(self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None) -> int:
        return self.call(lambda: self.inner.get_n_trials(study_id, state))

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self.call(lambda: self.inner.get_best_trial(study_id))

    def get_trial_params(self, trial_id: int) -> dict[str, Any]:
        return self.call(lambda: self.inner.get_trial_params(trial_id))

    def get_trial_user_attrs(self, trial_id: int) -> dict[str, Any]:
        return self.call(lambda: self.inner.get_trial_user_attrs(trial_id))

    def get_trial_system_attrs(self, trial_id: int) -> dict[str, Any]:
        return self.call(lambda: self.inner.get_trial_system_attrs(trial_id))

    def remove_session(self) -> None:
        self.inner.remove_session()

    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None:
        self.inner.check_trial_is_updatable(trial_id, trial_state)

    # ------------------------------------------------------------------------------------------ heartbeat
    def record_heartbeat(self, trial_id: int) -> None:
        """Not retried here: the heartbeat thread beats again on its own schedule. A failure is noted as an
        outage, so this process does not fail other workers' trials right after the database returns."""
        assert isinstance(self.inner, adapter.BaseHeartbeat)
        try:
            self.inner.record_heartbeat(trial_id)
        except Exception as exc:
            if is_transient(exc):
                self._saw_outage(exc)
            raise

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.call(lambda: adapter.stale_trial_ids(self.inner, study_id))

    def get_heartbeat_interval(self) -> int | None:
        if not isinstance(self.inner, adapter.BaseHeartbeat):
            return None
        return self.inner.get_heartbeat_interval()

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        if not isinstance(self.inner, adapter.BaseHeartbeat):
            return None
        return self.inner.get_heartbeat_stale_trial_callback()
