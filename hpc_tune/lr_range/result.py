"""``runs/<study>/lr-range.json``: what a range test found, for the user, ``hpctune check`` and the report.

Written atomically (hpc_tune/atomic.py), so that a ``check`` running beside a range test reads the previous
result or the new one, never half of one. The curves are kept whole: the figure can be drawn again from the
file alone, and a reader can apply another rule to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hpc_tune.atomic import atomic_write_json
from hpc_tune.errors import MetricsError
from hpc_tune.lr_range.curve import LrRun
from hpc_tune.lr_range.suggest import LrSuggestion, RunRange, yaml_number

LR_RANGE_JSON = "lr-range.json"
LR_RANGE_PNG = "lr-range.png"
SCHEMA_VERSION = 1


class LrRangeResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: int = SCHEMA_VERSION
    study: str
    task: str = Field(description="The task, as one line.")
    param: str = Field(description="The space's learning-rate parameter the test swept.")
    space_low: float = Field(description="`space.<param>.low` when the test ran.")
    space_high: float = Field(description="`space.<param>.high` when the test ran.")
    start_lr: float
    end_lr: float
    steps: int
    device: str | None = Field(
        None, description="Where an engine task ran (`cpu`, `cuda:0`); null: a command."
    )
    precision: str | None = Field(None, description="The engine's precision (`fp32`, `bf16`, `fp16`).")
    runs: list[LrRun]
    readings: list[RunRange] = Field(description="What each run's curve says, in the order of `runs`.")
    suggestion: LrSuggestion | None = Field(description="null: no run's loss fell before it diverged.")

    def space_line(self, when: Mapping[str, Any] | None = None) -> str | None:
        """The ``space:`` entry of the suggestion, as one YAML line in the config's flow style."""
        if self.suggestion is None:
            return None
        fields = (
            f"type: float, low: {yaml_number(self.suggestion.low)}, high: "
            f"{yaml_number(self.suggestion.high)}, log: true"
        )
        if when:
            fields += ", when: {" + ", ".join(f"{k}: {_flow(v)}" for k, v in when.items()) + "}"
        return f"{self.param}: {{{fields}}}"


def _flow(value: Any) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else str(value)


def result_path(study_dir: Path) -> Path:
    return study_dir / LR_RANGE_JSON


def write_result(study_dir: Path, result: LrRangeResult) -> Path:
    path = result_path(study_dir)
    atomic_write_json(path, result.model_dump(mode="json"))
    return path


def read_result(study_dir: Path) -> LrRangeResult | None:
    """The study's last range test; None when it has none."""
    path = result_path(study_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MetricsError(f"cannot read the range test's result: {exc.strerror or exc}", path) from None
    try:
        return LrRangeResult.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise MetricsError(
            f"the range test's result is not one hpctune wrote ({where}: {first['msg']}); run hpctune "
            "lr-range again",
            path,
        ) from None
