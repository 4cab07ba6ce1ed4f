"""Reading hpctune.yaml: YAML errors with their line, validation errors with the key path, overrides.

``HPCTUNE_STORAGE`` overrides ``storage`` and CLI flags override both; every way in (the CLI, ``launch``,
a worker) loads through here, so they all agree on what a file means.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hpc_tune.config.schema import Config, LoadedConfig
from hpc_tune.config.space import check_space
from hpc_tune.errors import ConfigError

DEFAULT_CONFIG = "hpctune.yaml"
# The storage URL of every command and worker, when neither --storage nor the file says otherwise. The
# password stays out of it (PGPASSFILE): sbatch copies the environment into SLURM's spool.
STORAGE_ENV = "HPCTUNE_STORAGE"
# Keys hpc_tune does not take, with what to do instead: a generic "unknown key" would leave the user guessing.
NOT_SETTINGS = {
    "train.schedule.t_max": "T_max is always the epochs a trial runs (fewer when screening); remove it",
}


def _where(path: Path | None) -> str:
    return path.name if path is not None else "config"


def _describe(err: dict[str, Any], raw: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
    # Discriminated unions put the tag in the path (space.lr.float.low): drop it, users never wrote it.
    loc = [
        p
        for i, p in enumerate(loc)
        if not (i >= 2 and loc[0] == "space" and p in ("float", "int", "categorical"))
        and not (i == 1 and loc[0] == "task" and p in ("module", "command"))
    ]
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        if key in NOT_SETTINGS:
            return f"{key} is not a setting: {NOT_SETTINGS[key]}"
        parent_fields = _fields_at(loc[:-1])
        hint = difflib.get_close_matches(loc[-1], parent_fields, n=1)
        where = f" in {'.'.join(loc[:-1])}" if len(loc) > 1 else ""
        return f"unknown key '{loc[-1]}'{where}" + (f" (did you mean '{hint[0]}'?)" if hint else "")
    if err["type"] == "missing":
        return f"{key} is required"
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "union_tag_invalid" or err["type"] == "union_tag_not_found":
        return f"{key}.type must be one of float, int, categorical"
    if msg.startswith(("low must", "low and high", "log and", "step must", "choices must")):
        return f"{key}.{msg}"
    return f"{key}: {msg}" if key else msg


def _fields_at(loc: list[str]) -> list[str]:
    model: Any = Config
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            if part in ("float", "int", "categorical") or model is None:
                continue
            return []
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None:
            model = _model_in(annotation)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside an Optional/Union/Annotated annotation, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    origin = getattr(annotation, "__origin__", None)
    return _model_in(origin) if origin is not None and origin is not annotation else None


def parse_config(raw: Any, path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Validate an already-parsed mapping; ``overrides`` are top-level keys from the CLI or environment."""
    where = _where(path)
    if not isinstance(raw, dict):
        raise ConfigError("the file must hold a mapping of keys (study:, space:, …)", where)
    data = dict(raw)
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        # A misspelt key also makes the right one "missing": name the typo, it is the mistake.
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        raise ConfigError(_describe(errors[0], data), where) from None
    if config.space is not None:
        check_space(config.space, where)
    return config


def load_config(
    path: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> LoadedConfig:
    """Read and validate hpctune.yaml. ``HPCTUNE_STORAGE`` overrides ``storage`` (CLI flags override both)."""
    file = Path(path if path is not None else DEFAULT_CONFIG)
    if not file.is_file():
        raise ConfigError("config file not found", file)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"YAML syntax error{line}: {problem}", file.name) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config: {exc}", file) from None
    merged = {}
    if os.environ.get(STORAGE_ENV):
        merged["storage"] = os.environ[STORAGE_ENV]
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return LoadedConfig(config=parse_config(raw, file, merged), path=file.resolve())
