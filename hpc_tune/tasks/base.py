"""The small protocol between a task (model + data + loss) and the train engine, and how tasks are found.

A task is any module with ``build(params, fidelity, seed, train) -> TaskParts``. A user who does not want
the engine can instead point ``task:`` at a plain Optuna objective ``objective(trial) -> float``;
:func:`load_task` tells the worker which of the two it got so that it can drive either.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from hpc_tune.errors import TaskError
from hpc_tune.study.config import FidelityConfig, TrainConfig

if TYPE_CHECKING:  # torch costs ~2 s to import: a worker running a plain objective(trial) never needs it
    import torch
    from torch import Tensor

BUILD_PARAMS = ("params", "fidelity", "seed", "train")


@dataclass
class TaskParts:
    model: torch.nn.Module
    train_set: torch.utils.data.Dataset
    val_set: torch.utils.data.Dataset
    # (outputs, targets) -> scalar MEAN loss over the batch.
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    # name -> per-batch SUM over samples (e.g. correct count); the engine divides by the number of samples, so
    # uneven last batches and max_val_batches subsets still give exact means.
    metrics: Mapping[str, Callable[[Tensor, Tensor], Tensor]]
    make_optimizer: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
    # The effective train batch (the sampler's choice or train.batch_size); the engine may split it into
    # micro-batches with gradient accumulation but never changes it.
    batch_size: int


class Task(Protocol):
    def build(
        self, params: dict[str, Any], fidelity: FidelityConfig | None, seed: int, train: TrainConfig
    ) -> TaskParts: ...


BuildFn = Callable[[dict[str, Any], FidelityConfig | None, int, TrainConfig], TaskParts]


@dataclass(frozen=True)
class LoadedTask:
    """What ``task:`` resolved to.

    ``kind == "build"``: call :meth:`build` and run the engine; ``"objective"``: call
    ``fn(trial)`` and use its return value as the trial's value."""

    kind: Literal["build", "objective"]
    fn: Callable[..., Any]
    spec: str

    def build(
        self, params: dict[str, Any], fidelity: FidelityConfig | None, seed: int, train: TrainConfig
    ) -> TaskParts:
        if self.kind != "build":
            raise TaskError("this task is a plain objective(trial); it has no build()", self.spec)
        parts = self.fn(params, fidelity, seed, train)
        if not isinstance(parts, TaskParts):
            raise TaskError(f"build() returned {type(parts).__name__}, expected TaskParts", self.spec)
        return parts


def load_task(spec: str, root: str | os.PathLike[str] | None = None) -> LoadedTask:
    """Resolve ``task:``: ``pkg.module`` (with ``build``), ``path/file.py:func`` or ``pkg.module:func``.

    Relative file paths are looked up in ``root`` (the config file's directory), then in the current
    directory. A function is an objective when its only parameter is named ``trial``; otherwise it
    must accept the four build arguments.
    """
    if not spec or not spec.strip():
        raise TaskError("task is empty", "task")
    target, _, func_name = spec.partition(":")
    module = _load_module(target, spec, root)
    if func_name:
        fn = getattr(module, func_name, None)
        if fn is None or not callable(fn):
            raise TaskError(f"no function {func_name!r} in {target}", spec)
        return LoadedTask(_kind_of(fn, spec), fn, spec)
    build = getattr(module, "build", None)
    if build is None or not callable(build):
        hint = " (a plain objective needs file.py:objective)" if hasattr(module, "objective") else ""
        raise TaskError(f"module {target} has no build() function{hint}", spec)
    if _kind_of(build, spec) != "build":
        raise TaskError("build() must take (params, fidelity, seed, train)", spec)
    return LoadedTask("build", build, spec)


def _kind_of(fn: Callable[..., Any], spec: str) -> Literal["build", "objective"]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise TaskError("cannot inspect the task function's signature", spec) from None
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) == 1 and positional[0].name == "trial":
        return "objective"
    try:
        sig.bind(*BUILD_PARAMS)
    except TypeError:
        raise TaskError(
            f"{getattr(fn, '__name__', 'function')}{sig} is neither objective(trial) nor "
            "build(params, fidelity, seed, train)",
            spec,
        ) from None
    return "build"


def _load_module(target: str, spec: str, root: str | os.PathLike[str] | None) -> Any:
    if target.endswith(".py") or os.sep in target or "/" in target:
        path = Path(target)
        if not path.is_absolute():
            # The config's directory first (a study folder carries its task), then the current directory
            # (``task: examples/x.py:objective`` run from the repository root).
            candidates = [Path(root) / path] if root is not None else []
            path = next((c for c in candidates if c.is_file()), Path.cwd() / path)
        if not path.is_file():
            raise TaskError("task file not found", target)
        path = path.resolve()
        # The file's own folder, so that it can import its sibling modules however the worker was started.
        _on_import_path(path.parent)
        return _import_file(path, spec)
    # A module of the user's project: the config's folder, as ``python -m`` would put the current directory
    # there. The ``hpctune`` console script (what an array task runs) puts nothing there.
    if root is not None:
        _on_import_path(Path(root).resolve())
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        # Only "this module is missing" is the user's typo; a missing import INSIDE their module is reported
        # as such so that they do not hunt for a typo in hpctune.yaml.
        if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
            raise TaskError(f"task module {target!r} not found", spec) from None
        raise TaskError(f"task module {target!r} failed to import: {exc}", spec) from exc
    except Exception as exc:
        raise TaskError(
            f"task module {target!r} failed to import: {type(exc).__name__}: {exc}", spec
        ) from exc


def _on_import_path(folder: Path) -> None:
    """Put ``folder`` first on sys.path: a task that imports ``train`` from beside it then works the same
    under ``run --local`` (``python -m`` adds the current directory), ``hpctune worker`` and an array task
    (the console script adds nothing), whatever the current directory is."""
    entry = str(folder)
    if entry not in sys.path:
        sys.path.insert(0, entry)


def _import_file(path: Path, spec: str) -> Any:
    # A stable, unique module name per file: two tasks both called task.py must not overwrite each other, and
    # registering in sys.modules lets pickling/dataclasses inside the user's file work.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"hpc_tune_user_task_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise TaskError("cannot load task file", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise TaskError(f"task file failed to import: {type(exc).__name__}: {exc}", spec) from exc
    return module
