"""hpc_tune: tune PyTorch models with Optuna on SLURM job arrays — one shared study, many workers.

The public API is listed in ``__all__``; the CLI (``hpctune``) is a thin shell over these functions.
"""

from __future__ import annotations

__version__ = "0.1.0"

from hpc_tune.errors import (
    ConfigError,
    HpcTuneError,
    MetricsError,
    SlurmError,
    SpaceError,
    StorageError,
    StorageUnavailableError,
    StudyNotFoundError,
    TaskError,
)
from hpc_tune.study.config import Config, LoadedConfig, load_config, parse_config
from hpc_tune.study.storage import redact_url, resolve_storage

__all__ = [
    "__version__",
    "Config",
    "LoadedConfig",
    "load_config",
    "parse_config",
    "redact_url",
    "resolve_storage",
    "HpcTuneError",
    "ConfigError",
    "SpaceError",
    "StorageError",
    "StorageUnavailableError",
    "StudyNotFoundError",
    "TaskError",
    "SlurmError",
    "MetricsError",
]
