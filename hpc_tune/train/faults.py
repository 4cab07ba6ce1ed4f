"""Test-only fault injection for the train engine.

The worker reads ``HPCTUNE_FAULT`` (tests and demos only, never production configs), filters the faults by
trial number and hands them to :func:`hpc_tune.train.engine.fit`. The engine then takes its REAL failure paths
(non-finite check, OOM clean-up, slow epochs) so that those paths are exercised end to end without a broken
model or a GPU.

Syntax: a comma-separated list of ``KIND@EPOCH[:SECONDS][#trial=N]``:

- ``nan@3``          the train loss of epoch 3 becomes NaN → ``NonFiniteLoss``
- ``oom@2``          epoch 2 raises ``torch.cuda.OutOfMemoryError`` inside the train step → ``OutOfMemory``
- ``sleep@1:0.5``    every epoch >= 1 sleeps 0.5 s (a slow trial, e.g. to hit a walltime signal)
- ``nan@2#trial=4``  only trial number 4 gets the fault
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from hpc_tune.errors import ConfigError

FAULT_ENV = "HPCTUNE_FAULT"

FaultKind = Literal["nan", "oom", "sleep"]

_FAULT_RE = re.compile(
    r"^(?P<kind>nan|oom|sleep)@(?P<epoch>\d+)(?::(?P<seconds>\d+(?:\.\d*)?|\.\d+))?(?:#trial=(?P<trial>\d+))?$"
)


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    epoch: int
    seconds: float = 0.0
    trial: int | None = None

    def fires_at(self, epoch: int) -> bool:
        """A sleep fault slows every epoch from ``epoch`` on (a slow trial); nan/oom fire once."""
        return epoch >= self.epoch if self.kind == "sleep" else epoch == self.epoch


def parse_faults(value: str | None) -> list[Fault]:
    """Parse ``HPCTUNE_FAULT``; a typo must fail loudly: an ignored fault makes a test pass wrongly."""
    if value is None or not value.strip():
        return []
    faults = []
    for raw in value.split(","):
        item = raw.strip()
        match = _FAULT_RE.match(item)
        if match is None:
            raise ConfigError(
                f"bad fault {item!r}: expected nan@E, oom@E or sleep@E:SECONDS, optionally with #trial=N",
                FAULT_ENV,
            )
        kind = match["kind"]
        epoch = int(match["epoch"])
        if epoch < 1:
            raise ConfigError(f"bad fault {item!r}: epochs count from 1", FAULT_ENV)
        seconds = match["seconds"]
        if kind == "sleep" and seconds is None:
            raise ConfigError(f"bad fault {item!r}: sleep needs seconds, e.g. sleep@{epoch}:0.5", FAULT_ENV)
        if kind != "sleep" and seconds is not None:
            raise ConfigError(f"bad fault {item!r}: only sleep takes seconds", FAULT_ENV)
        trial = match["trial"]
        faults.append(
            Fault(kind, epoch, float(seconds) if seconds else 0.0, int(trial) if trial is not None else None)
        )
    return faults


def faults_for_trial(faults: Sequence[Fault], trial: int) -> list[Fault]:
    """The faults that apply to one trial number (untargeted faults apply to every trial)."""
    return [f for f in faults if f.trial is None or f.trial == trial]
