"""What is searched: the schema of hpctune.yaml, its loading, the search space and the config's lint.

It imports neither Optuna nor torch (an import-linter contract holds it to that): ``check``, ``render`` and
a command task's worker read a config without paying for either. SQLAlchemy's URL parser checks ``storage:``.
"""

from hpc_tune.config.load import DEFAULT_CONFIG, STORAGE_ENV, load_config, parse_config
from hpc_tune.config.schema import STUDY_NAME_RE, Config, LoadedConfig
from hpc_tune.config.sections import (
    TRIALS_PER_GPU_AUTO_MAX,
    FidelityConfig,
    PrunerConfig,
    SamplerConfig,
    ScheduleConfig,
    ServerConfig,
    ServerJobConfig,
    SlurmConfig,
    TrainConfig,
    WorkerConfig,
    slurm_time_seconds,
)
from hpc_tune.config.storage_value import (
    EMBEDDED,
    SERVER,
    is_embedded,
    is_server,
    redact_url,
    scrub,
    url_password,
)
from hpc_tune.config.task import COMMAND_PLACEHOLDERS, CommandTask

__all__ = [
    "COMMAND_PLACEHOLDERS",
    "DEFAULT_CONFIG",
    "EMBEDDED",
    "STORAGE_ENV",
    "STUDY_NAME_RE",
    "TRIALS_PER_GPU_AUTO_MAX",
    "CommandTask",
    "Config",
    "FidelityConfig",
    "LoadedConfig",
    "PrunerConfig",
    "SERVER",
    "SamplerConfig",
    "ScheduleConfig",
    "ServerConfig",
    "ServerJobConfig",
    "SlurmConfig",
    "TrainConfig",
    "WorkerConfig",
    "is_embedded",
    "is_server",
    "load_config",
    "parse_config",
    "redact_url",
    "scrub",
    "slurm_time_seconds",
    "url_password",
]
