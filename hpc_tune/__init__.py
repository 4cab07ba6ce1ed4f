"""hpc_tune: tune PyTorch models with Optuna on SLURM job arrays — one shared study, many workers.

The public API is listed in ``__all__``; the CLI (``hpctune``) is a thin shell over these functions.

Names are imported on first use: a training script run as a command task calls ``hpc_tune.report(...)``
in an environment that may have neither Optuna nor torch, and must not pay for importing them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> the module that defines it
_API = {
    "Config": "hpc_tune.config",
    "LoadedConfig": "hpc_tune.config",
    "load_config": "hpc_tune.config",
    "parse_config": "hpc_tune.config",
    "redact_url": "hpc_tune.config",
    "resolve_storage": "hpc_tune.storage.url",
    "launch": "hpc_tune.launchers.python_api",
    "Launched": "hpc_tune.launchers.python_api",
    "report": "hpc_tune.worker.script_protocol",
    "analyze": "hpc_tune.collector.analysis",
    "summarize": "hpc_tune.collector.collect",
    "collect": "hpc_tune.collector.collect",
    "collect_shared": "hpc_tune.collector.collect",
    "recommend": "hpc_tune.collector.advice",
    "next_yaml": "hpc_tune.collector.next_study",
    "progress_of": "hpc_tune.collector.progress",
    "confirm_top": "hpc_tune.policy.rerun_top",
    "HpcTuneError": "hpc_tune.errors",
    "ConfigError": "hpc_tune.errors",
    "SpaceError": "hpc_tune.errors",
    "StorageError": "hpc_tune.errors",
    "StorageUnavailableError": "hpc_tune.errors",
    "StudyNotFoundError": "hpc_tune.errors",
    "TaskError": "hpc_tune.errors",
    "SlurmError": "hpc_tune.errors",
    "MetricsError": "hpc_tune.errors",
    "LaunchError": "hpc_tune.errors",
    "AllTrialsFailedError": "hpc_tune.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'hpc_tune' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
