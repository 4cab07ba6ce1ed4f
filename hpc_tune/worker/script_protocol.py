"""How a training script run as a command task hands its metrics back: one line per epoch on stdout.

Both sides live here so that they cannot drift apart: :func:`report`, the one line a script may add, and
:class:`MetricsReader`, what the worker makes of the script's output. This module imports nothing beyond the
standard library: the script's environment may have neither Optuna nor torch.

Accepted lines, one per epoch:
- JSON objects: ``{"epoch": 3, "val_acc": 0.91}`` (what :func:`report` prints);
- with ``metrics_regex``, any line the regex matches: its named groups are the metrics, e.g.
  ``epoch (?P<epoch>\\d+) val_acc (?P<val_acc>[\\d.]+)`` for ``epoch 3 val_acc 0.91``.
Without an ``epoch`` field the epochs are counted: the first report is epoch 1. Every other line is the
script's own output and is only kept in the trial's log.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any


def report(epoch: int, **metrics: float) -> None:
    """Report one epoch's metrics to hpctune (``hpc_tune.report(3, val_acc=0.91)``).

    Prints one JSON line and flushes at once: the pruner sees every epoch as it ends, and a pruned trial
    is stopped before its next epoch. Outside hpctune it is just a readable line in the script's output.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise TypeError(f"epoch must be an int, got {type(epoch).__name__}")
    values: dict[str, Any] = {"epoch": epoch}
    for name, value in metrics.items():
        if hasattr(value, "item") and callable(value.item):  # a torch or numpy scalar
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"metric {name!r} must be a number, got {type(value).__name__}")
        values[name] = float(value)
    sys.stdout.write(json.dumps(values) + "\n")
    sys.stdout.flush()


def json_object(line: str) -> dict[str, Any] | None:
    """The JSON object a line of the script's output is, or None for any other line (a log line, a list)."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


class MetricsReader:
    """Turns a script's stdout lines into epoch records ``{"epoch": n, name: value, ...}``.

    An epoch is complete when a line carries the study's metric; lines of the same epoch before it (train
    metrics printed apart from validation ones) are merged into it. Lines without an ``epoch`` count up.
    """

    def __init__(self, metric: str, regex: str | None = None) -> None:
        self.metric = metric
        self.regex = re.compile(regex) if regex is not None else None
        self._last_epoch = 0
        self._pending: dict[str, Any] | None = None

    def feed(self, line: str) -> list[dict[str, Any]]:
        """The epochs that ``line`` completes (usually none or one)."""
        values = self._regex_values(line) if self.regex is not None else self._json_values(line)
        if not values:
            return []
        done: list[dict[str, Any]] = []
        epoch = values.pop("epoch", None)
        if epoch is not None and float(epoch).is_integer():
            epoch = int(epoch)
            if self._pending is not None and self._pending["epoch"] != epoch:
                done.extend(self.close())
        else:
            epoch = self._pending["epoch"] if self._pending is not None else self._last_epoch + 1
        self._pending = {**(self._pending or {"epoch": epoch}), **values}
        if self.metric in values:
            done.extend(self.close())
        return done

    def close(self) -> list[dict[str, Any]]:
        """The epoch still open at the end of the output (one that never printed the metric)."""
        if self._pending is None:
            return []
        record, self._pending = self._pending, None
        self._last_epoch = int(record["epoch"])
        return [record]

    def _json_values(self, line: str) -> dict[str, Any] | None:
        data = json_object(line)
        if data is None or ("epoch" not in data and self.metric not in data):
            return None  # some other JSON the script logs
        return {k: _number(v) for k, v in data.items() if _number(v) is not None}

    def _regex_values(self, line: str) -> dict[str, Any] | None:
        assert self.regex is not None
        match = self.regex.search(line)
        if match is None:
            return None
        values = {k: _number(v) for k, v in match.groupdict().items() if v is not None}
        return {k: v for k, v in values.items() if v is not None}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
