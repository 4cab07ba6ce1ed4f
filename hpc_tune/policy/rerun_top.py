"""A linked confirmation study: the top-k configurations of a study re-run at full fidelity with new seeds.

Field notes behind it: many configurations were run with one seed, then the top 5 with 3 seeds, because a
single-seed winner is often noise. The re-runs go into a study of their own (``<study>-confirm``) on the same
storage, so that the original study's budget, ranking and pruner statistics stay as they were, and the two
studies name each other (study user attributes) so that the collector can put both side by side.

Every trial of the linked study is enqueued here with its parameters and its seed: nothing is sampled, no
trial is pruned, and its budget is exactly the number of (source trial, seed) pairs it holds, so workers run
each pair once and stop. Enqueuing is idempotent: a pair already in the study (waiting, running or finished)
is never enqueued again.

Seeds: a source trial that ran with seed ``s`` is confirmed with ``s + 1, ..., s + seeds``: new for that
configuration, distinct from each other, and the same for every source that shared ``s`` (typically
``train.seed``), so the configurations are compared on common seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from hpc_tune import attrs
from hpc_tune.atomic import atomic_write_text
from hpc_tune.config import STUDY_NAME_RE, LoadedConfig, load_config, parse_config
from hpc_tune.errors import ConfigError, HpcTuneError
from hpc_tune.policy.budget import counted_trials
from hpc_tune.policy.ranking import ranked_trials
from hpc_tune.policy.reruns import seed_of
from hpc_tune.policy.shared_study import SharedStudy, load_existing_study, open_store_for, open_study
from hpc_tune.storage.url import resolve_storage, spec_of

CONFIRM_SUFFIX = "-confirm"
# The first line of a config written here: such a file may be rewritten, any other file is left alone.
CONFIG_MARK = "# Written by `hpctune rerun-top`"
# What the linked study must not inherit: screening, phases and the baseline are sampling strategies, and a
# confirmation runs every trial to its end.
_DROPPED_KEYS = ("fidelity", "phases", "baseline")


@dataclass(frozen=True)
class ConfirmationPlan:
    """What ``confirm_top`` did: the linked study's config (as written beside the original), the sources
    it confirms, best first, and which (source, seed) pairs it enqueued now."""

    loaded: LoadedConfig
    original: str
    requested_k: int
    sources: tuple[int, ...]
    seeds: int
    enqueued: tuple[tuple[int, int], ...]
    already_there: int

    @property
    def study(self) -> str:
        return self.loaded.config.study

    @property
    def trials(self) -> int:
        return self.loaded.config.trials


def confirmation_name(study: str) -> str:
    return f"{study}{CONFIRM_SUFFIX}"


def confirmation_seeds(source_seed: int, seeds: int) -> list[int]:
    """The seeds a source trial that ran with ``source_seed`` is confirmed with (see the module's doc)."""
    return [source_seed + i for i in range(1, seeds + 1)]


def confirmation_config_path(loaded: LoadedConfig, name: str) -> Path:
    """``<name>.yaml`` in the original config's folder, so that its relative paths (the task's file, a
    command's cwd, results:) resolve as the original's do."""
    if loaded.path is None:
        raise ConfigError("a confirmation needs the study's config file", "rerun-top")
    return loaded.path.parent / f"{name}.yaml"


def derived_config_mapping(loaded: LoadedConfig, name: str, trials: int) -> dict[str, Any]:
    """The original file's mapping (not the loaded Config: its storage may come from HPCTUNE_STORAGE or
    --storage, which must not be written into a file) with what a confirmation changes."""
    assert loaded.path is not None
    raw = yaml.safe_load(loaded.path.read_text(encoding="utf-8"))
    data = {k: v for k, v in raw.items() if k not in _DROPPED_KEYS}
    data["study"] = name
    data["trials"] = trials
    data["pruner"] = {"type": "none"}
    # Every trial is enqueued, so the sampler only has to accept that (grid would claim grid points).
    sampler = raw.get("sampler") if isinstance(raw.get("sampler"), dict) else {}
    data["sampler"] = {
        "type": "random",
        **({"seed": sampler["seed"]} if sampler.get("seed") is not None else {}),
    }
    if loaded.config.on_server:
        # The linked study lives on the original's study server, not on one of its own.
        server = raw.get("server") if isinstance(raw.get("server"), dict) else {}
        data["server"] = {**server, "data_dir": str(loaded.server_dir)}
    return data


def _config_text(loaded: LoadedConfig, data: dict[str, Any], original: str, seeds: int) -> str:
    assert loaded.path is not None
    header = (
        f"{CONFIG_MARK} from {loaded.path.name}: the top trials of study {original} re-run at full fidelity\n"
        f"# with {seeds} new seed(s) each. Every trial is enqueued with its parameters and seed; nothing is\n"
        "# sampled or pruned. Rewritten by every rerun-top; edit the original config instead.\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)


def _refuse_foreign_file(path: Path, original: LoadedConfig) -> None:
    if original.path is not None and path.resolve() == original.path.resolve():
        raise ConfigError("the confirmation would overwrite the study's own config; pass --name", path)
    if path.exists():
        try:
            first = path.read_text(encoding="utf-8").split("\n", 1)[0]
        except (OSError, UnicodeDecodeError):
            first = ""
        if not first.startswith(CONFIG_MARK):
            raise ConfigError("file exists and was not written by hpctune rerun-top; pass --name", path)


def _pairs(trials: list[FrozenTrial], default_seed: int) -> set[tuple[int, int]]:
    return {
        (int(t.user_attrs[attrs.CONFIRMS_TRIAL]), seed_of(t, default_seed))
        for t in trials
        if attrs.CONFIRMS_TRIAL in t.user_attrs
    }


def confirm_top(
    loaded: LoadedConfig,
    storage_url: str | None,
    *,
    k: int,
    seeds: int,
    name: str | None = None,
    for_array: bool = False,
) -> ConfirmationPlan:
    """Create (or extend) the linked study confirming the top ``k`` trials of ``loaded``'s study with
    ``seeds`` new seeds each, write its config beside the original and return what was done.

    Nothing is enqueued when the original study is missing or has no completed trial, or when ``name``
    belongs to a study that confirms something else; nor, ``for_array``, when the SLURM workers would not
    find the storage this call uses.
    """
    config = loaded.config
    # What an array's workers will see: the file's storage, or HPCTUNE_STORAGE exported by sbatch.
    seen = load_config(loaded.path).config.storage if for_array and loaded.path is not None else storage_url
    if storage_url and storage_url != seen:
        raise ConfigError(
            "SLURM workers read the storage from the config or HPCTUNE_STORAGE, not --storage: set "
            "HPCTUNE_STORAGE instead",
            "--storage",
        )
    url = storage_url if storage_url is not None else config.storage
    original = load_existing_study(spec_of(loaded, url), config.study).study
    of = original.user_attrs.get(attrs.CONFIRMS)
    if of:
        # Its trials share parameters and their seeds follow a scheme: more seeds come from the original.
        raise ConfigError(
            f"study '{config.study}' is the confirmation of '{of}'; for more seeds: "
            f"hpctune rerun-top {of} --seeds N",
            "rerun-top",
        )
    direction = "maximize" if original.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"
    ranked = ranked_trials(original.get_trials(deepcopy=False), direction)
    if not ranked:
        raise HpcTuneError(f"study '{config.study}' has no complete trial to confirm", "rerun-top")
    sources = ranked[:k]
    name = name or confirmation_name(config.study)
    if not STUDY_NAME_RE.match(name):
        raise ConfigError(f"{name!r} is not a valid study name", "--name")
    if name == config.study:
        raise ConfigError("the confirmation needs a name of its own", "--name")
    path = confirmation_config_path(loaded, name)
    _refuse_foreign_file(path, loaded)
    # The derived config is validated before anything is enqueued.
    derived = parse_config(derived_config_mapping(loaded, name, len(sources) * seeds), path, {"storage": url})
    study_dir = derived.study_dir(path.parent).resolve()
    spec = resolve_storage(url, study_dir, loaded.server_dir)  # the same server as the original's
    store = open_store_for(spec, config.worker, liveness=False)
    study = optuna.create_study(
        study_name=name, storage=store.storage, direction=direction, load_if_exists=True
    )
    confirms = study.user_attrs.get(attrs.CONFIRMS)
    if confirms != config.study and (confirms is not None or study.get_trials(deepcopy=False)):
        what = f"confirms study '{confirms}'" if confirms else "is not a confirmation"
        raise ConfigError(f"study '{name}' already exists and {what}; pass --name", spec.display)
    enqueued: list[tuple[int, int]] = []
    # The workers' budget lock: a worker deciding "done" never sees half of the pairs.
    with SharedStudy(study, store).lock("budget"):
        have = _pairs(study.get_trials(deepcopy=False), config.train.seed)
        for source in sources:
            for seed in confirmation_seeds(seed_of(source, config.train.seed), seeds):
                if (source.number, seed) in have:
                    continue
                study.add_trial(
                    optuna.trial.create_trial(
                        state=TrialState.WAITING,
                        params=source.params,
                        distributions=source.distributions,
                        user_attrs={attrs.CONFIRMS_TRIAL: source.number},
                        system_attrs={attrs.SEED: seed},
                    )
                )
                enqueued.append((source.number, seed))
        if confirms is None:
            study.set_user_attr(attrs.CONFIRMS, config.study)
        # Exactly the pairs it holds: with more, a worker would sample trials that confirm nothing.
        total = len(counted_trials(study.get_trials(deepcopy=False)))
    links = {attrs.CONFIRMATION_STUDY: name}
    if spec.journal_path is not None:
        links[attrs.CONFIRMATION_JOURNAL] = str(spec.journal_path)
    for key, value in links.items():
        if original.user_attrs.get(key) != value:
            original.set_user_attr(key, value)
    data = derived_config_mapping(loaded, name, total)
    atomic_write_text(path, _config_text(loaded, data, config.study, seeds))
    written = load_config(path, overrides={"storage": storage_url})
    open_study(written, storage_url, with_heartbeat=False)  # the study's budget and metric attributes
    return ConfirmationPlan(
        loaded=written,
        original=config.study,
        requested_k=k,
        sources=tuple(t.number for t in sources),
        seeds=seeds,
        enqueued=tuple(enqueued),
        already_there=len(sources) * seeds - len(enqueued),
    )
