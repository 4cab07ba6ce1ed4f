"""Typed errors of hpc_tune.

Library code raises these; only the CLI turns them into one ``Error: <what> (<where>)`` line and an exit code,
so tests and users of the Python API get exceptions they can catch precisely.
"""

from __future__ import annotations

import os


class HpcTuneError(Exception):
    """Base of every error a user can cause or fix; never a bug in hpc_tune itself."""

    exit_code = 1

    def __init__(self, what: str, where: str | os.PathLike[str] | None = None) -> None:
        self.what = what
        self.where = None if where is None else str(where)
        super().__init__(self.line())

    def line(self) -> str:
        """The single line the CLI prints after ``Error: ``."""
        return f"{self.what} ({self.where})" if self.where else self.what


class ConfigError(HpcTuneError):
    """The YAML file or a CLI override does not describe a valid study."""

    exit_code = 2


class SpaceError(ConfigError):
    """The search space is inconsistent (bounds, conditionals, phases)."""


class StorageError(HpcTuneError):
    """The study storage is misconfigured or refused an operation."""

    exit_code = 3


class StorageUnavailableError(StorageError):
    """The database cannot be reached now; a later retry may succeed (EX_TEMPFAIL)."""

    exit_code = 75


class StudyNotFoundError(StorageError):
    """No study of that name exists in the storage."""


class TaskError(HpcTuneError):
    """The task module or objective cannot be loaded or does not follow the protocol."""

    exit_code = 4


class SlurmError(HpcTuneError):
    """SLURM is missing, refused a request, or the array spec is invalid."""

    exit_code = 5


class MetricsError(HpcTuneError):
    """A results directory or metrics file cannot be read or written."""

    exit_code = 6


class LaunchError(HpcTuneError):
    """A job started by ``hpc_tune.launch`` ended without doing its part (interrupted, failed, no result);
    raised by the job itself or by ``Launched.result()``, after the study was collected."""

    exit_code = 7


class WorkerFailedError(HpcTuneError):
    """A worker process that hpctune started (an array task's pack of workers, ``slurm.trials_per_gpu``)
    ended on an error: the task exits with that worker's own code (75 for a database gone, ...) and says its
    ``Error:`` line, so that the task fails as a lone worker would have."""

    def __init__(self, what: str, where: str | os.PathLike[str] | None = None, *, exit_code: int = 1) -> None:
        super().__init__(what, where)
        self.exit_code = exit_code


class AllTrialsFailedError(HpcTuneError):
    """Every finished trial of a study failed: the collector still wrote its summary and report (they say
    why), and exits non-zero so that a pipeline or a dependent job does not go on as if there were a
    result."""

    exit_code = 8


class LrRangeError(HpcTuneError):
    """The learning-rate range test ran but its curves give no range (the loss never fell, or every run
    diverged at once), or the script of a command task did not answer its protocol: the figure, when one was
    drawn, shows why."""

    exit_code = 9


class TrialAbort(Exception):
    """Control flow from the train engine: stop this trial with ``reason`` and go on with the next one.

    Not an HpcTuneError: it never reaches the user as an error line, the worker records it on the trial.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class NonFiniteLoss(TrialAbort):
    def __init__(self, detail: str = "") -> None:
        super().__init__("nonfinite_loss", detail)


class OutOfMemory(TrialAbort):
    def __init__(self, detail: str = "") -> None:
        super().__init__("oom", detail)
