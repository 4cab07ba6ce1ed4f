"""``hpctune check``: everything that can be known about a study before an array spends GPU-hours on it.

The config is valid (loading it proved that); the task is imported as a worker would import it, so a
missing file, a typo in a module or a broken import is one line here and not a failure in every array task;
the config's lint (config/lint.py) warns about settings that waste trials; and a study submitted before is
compared with this config, which must still be the one its trials ran with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpc_tune import attrs
from hpc_tune.config import Config, LoadedConfig
from hpc_tune.config.lint import LintFinding, lint, lint_for_task
from hpc_tune.errors import HpcTuneError
from hpc_tune.policy.shared_study import existing_study_attrs
from hpc_tune.storage.url import resolve_storage
from hpc_tune.tasks.base import load_task


@dataclass(frozen=True)
class Preflight:
    """What ``check`` found: the warnings, the task's kind, and where the study lives (redacted)."""

    loaded: LoadedConfig
    task_kind: str
    findings: list[LintFinding]
    storage: str

    def summary_line(self) -> str:
        c = self.loaded.config
        parameters = (
            f"{len(c.space)} parameter{'s' if len(c.space) != 1 else ''}"
            if c.space
            else "parameters defined by the objective"
        )
        n = len(self.findings)
        return (
            f"ok: study {c.study}, {parameters}, {c.trials} trials x {c.effective_epochs()} epochs, "
            f"sampler {c.sampler.type}, pruner {c.pruner.type}, storage {self.storage}"
            + (f" ({n} warning{'s' if n != 1 else ''})" if n else "")
        )


def preflight(loaded: LoadedConfig) -> Preflight:
    config = loaded.config
    task = load_task(config.task, loaded.root, has_space=config.space is not None)
    findings = lint(config) + lint_for_task(config, task.kind)
    spec = resolve_storage(config.storage, loaded.study_dir)
    try:
        # A study submitted before: is this config still the one its trials ran with?
        recorded = existing_study_attrs(spec, config.study)
    except HpcTuneError:
        recorded = None  # an unreachable database is the workers' problem; check warns about the config
    if recorded is not None:
        findings += lint_against_study(config, recorded)
    return Preflight(loaded, task.kind, findings, "embedded" if config.embedded else spec.display)


def lint_against_study(config: Config, study_attrs: Mapping[str, Any]) -> list[LintFinding]:
    """Warnings that need the study as it is on the storage (its user attributes): a config changed between
    two submits of the same study."""
    recorded = study_attrs.get(attrs.EPOCHS)
    epochs = config.effective_epochs()
    if not isinstance(recorded, int) or recorded == epochs:
        return []
    key = (
        "fidelity.epochs" if config.fidelity is not None and config.fidelity.epochs is not None else "epochs"
    )
    return [
        LintFinding(
            key,
            f"is {epochs} but study '{config.study}' was created with trials of {recorded} epochs; trials of "
            f"different lengths would be ranked together: set it back to {recorded}, or use a new study name",
        )
    ]
