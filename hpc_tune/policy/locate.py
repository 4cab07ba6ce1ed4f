"""Which study a command means: ``collect``, ``status``, ``next``, ``dashboard``, ``export`` and
``rerun-top`` take a STUDY name, a config, or both, and work on any Optuna study from the storage alone; a
study on the study server is served for as long as the command needs it (``served``).

The rules, one place for every command: ``-c CONFIG`` names the study (and a STUDY given too must match it);
without ``-c``, ``hpctune.yaml`` here is used when it describes STUDY (or when no STUDY is named); else the
study is looked up by name on ``--storage``, ``HPCTUNE_STORAGE`` or the embedded store under ``--results``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hpc_tune.config import (
    DEFAULT_CONFIG,
    STORAGE_ENV,
    STUDY_NAME_RE,
    Config,
    LoadedConfig,
    is_server,
    load_config,
)
from hpc_tune.errors import ConfigError, StorageError, StudyNotFoundError
from hpc_tune.policy.shared_study import SharedStudy, load_existing_study
from hpc_tune.storage.server.service import running_address, serving
from hpc_tune.storage.url import resolve_storage


@dataclass(frozen=True)
class StudyTarget:
    """A study to report on: from its config, or from its name and the storage alone (any Optuna study)."""

    name: str
    study_dir: Path
    loaded: LoadedConfig | None
    opened: SharedStudy

    @property
    def budget(self) -> int | None:
        return self.loaded.config.trials if self.loaded is not None else None

    @property
    def config(self) -> Config | None:
        return self.loaded.config if self.loaded is not None else None


def config_for(
    study: str | None, config_path: Path | None, storage: str | None, command: str = "collect"
) -> LoadedConfig | None:
    """The config to use for a STUDY argument: the one given, or hpctune.yaml here if it names STUDY."""
    overrides = {"storage": storage}
    if config_path is not None:
        loaded = load_config(config_path, overrides=overrides)
        if study is not None and loaded.config.study != study:
            raise ConfigError(
                f"the config describes study '{loaded.config.study}', not '{study}'", config_path
            )
        return loaded
    default = Path(DEFAULT_CONFIG)
    if default.is_file():
        try:
            found: LoadedConfig | None = load_config(default, overrides=overrides)
        except ConfigError:
            found = None
        if found is not None and (study is None or found.config.study == study):
            return found
    if study is None:
        raise StudyNotFoundError("name a STUDY or pass -c CONFIG", f"hpctune {command}")
    return None


def locate(
    study: str | None, storage: str | None, results: Path, loaded: LoadedConfig | None, *, repair: bool = True
) -> StudyTarget:
    """Open the study. With its config and ``repair``, the trials of workers that died without a word are
    failed and re-run first (as a worker would), so that counts and reports do not show them RUNNING;
    ``repair=False`` only reads (``status``)."""
    if loaded is not None:
        name, study_dir = loaded.config.study, loaded.study_dir
        url = storage or loaded.config.storage
    else:
        assert study is not None
        if not STUDY_NAME_RE.match(study):
            raise ConfigError(f"{study!r} is not a valid study name", "STUDY")
        name, study_dir = study, (results / study).resolve()
        url = storage or os.environ.get(STORAGE_ENV) or None
    spec = resolve_storage(url, study_dir, loaded.server_dir if loaded is not None else None)
    liveness = loaded.config.worker if loaded is not None and repair else None
    return StudyTarget(name, study_dir, loaded, load_existing_study(spec, name, liveness))


@contextlib.contextmanager
def served(
    loaded: LoadedConfig | None, storage: str | None = None, *, workers: int | None = None
) -> Iterator[None]:
    """For a study on the study server: its running server, or one started here for the block and stopped
    after it (the server job has ended, or the study is run on this machine, by ``workers`` workers). Any
    other storage: nothing."""
    value = storage or (loaded.config.storage if loaded is not None else os.environ.get(STORAGE_ENV))
    if not is_server(value):
        yield
        return
    if loaded is None:
        raise StorageError("the study server needs the study's config to be found or started", "-c CONFIG")
    if storage is not None and loaded.config.storage != storage:
        loaded = LoadedConfig(config=loaded.config.model_copy(update={"storage": storage}), path=loaded.path)
    if running_address(loaded) is not None:
        yield
        return
    with serving(loaded, workers=workers):
        yield
