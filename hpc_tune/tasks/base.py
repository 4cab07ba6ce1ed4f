"""The small protocol between a task (model + data + loss) and the train engine, and how tasks are found.

A task is any module with ``build(params, fidelity, seed, train) -> TaskParts``. A user who does not want
the engine can instead point ``task:`` at a plain Optuna objective ``objective(trial) -> float``, or at an
existing script with ``task: {command: ...}``; :func:`load_task` tells the worker which of the three it got
so that it can drive each.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import io
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from hpc_tune.config import STORAGE_ENV, CommandTask, FidelityConfig, TrainConfig
from hpc_tune.errors import TaskError

if TYPE_CHECKING:  # torch costs ~2 s to import: a worker running a plain objective(trial) never needs it
    import torch
    from torch import Tensor

BUILD_PARAMS = ("params", "fidelity", "seed", "train")
# What the built-in engine tasks import that the core install leaves out (setup.cfg, extra "engine").
ENGINE_EXTRA = ("torch", "sklearn")


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

    ``kind == "build"``: call :meth:`build` and run the engine; ``"objective"``: call ``fn(trial)`` and use
    its return value as the trial's value; ``"command"``: run ``command``, read its metrics from stdout."""

    kind: Literal["build", "objective", "command"]
    fn: Callable[..., Any] | None
    spec: str
    command: CommandTask | None = None
    cwd: Path | None = None  # a command's working directory

    def build(
        self, params: dict[str, Any], fidelity: FidelityConfig | None, seed: int, train: TrainConfig
    ) -> TaskParts:
        if self.kind != "build" or self.fn is None:
            raise TaskError(f"this task is a {self.kind}; it has no build()", self.spec)
        parts = self.fn(params, fidelity, seed, train)
        if not isinstance(parts, TaskParts):
            raise TaskError(f"build() returned {type(parts).__name__}, expected TaskParts", self.spec)
        return parts


def load_task(
    task: str | CommandTask, root: str | os.PathLike[str] | None = None, *, has_space: bool = True
) -> LoadedTask:
    """Resolve ``task:``: ``pkg.module`` (with ``build``), ``path/file.py:func``, ``pkg.module:func`` or a
    command.

    Relative file paths are looked up in ``root`` (the config file's directory), then in the current
    directory. A function is an objective when its only parameter is named ``trial``; otherwise it
    must accept the four build arguments. Only an objective may run without ``space:`` (it asks for its
    parameters itself); the config already refuses a command without one.
    """
    if isinstance(task, CommandTask):
        return _load_command(task, root)
    loaded = _load_callable(task, root)
    if loaded.kind == "build" and not has_space:
        raise TaskError(
            "space: is required for a build() task (only an objective(trial) defines its own parameters)",
            task,
        )
    return loaded


def command_environment(base: os._Environ[str] | dict[str, str] | None = None) -> dict[str, str]:
    """The environment a command runs in: the worker's own (CUDA_VISIBLE_DEVICES and SLURM_* included),
    with the worker's Python first on PATH so that ``python`` in a command is the interpreter that has
    hpc_tune (for ``hpc_tune.report``) even when the venv was not activated, and without the database
    URL, which a script never needs."""
    env = dict(os.environ if base is None else base)
    env.pop(STORAGE_ENV, None)
    bindir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[:1] != [bindir]:
        env["PATH"] = bindir + (os.pathsep + path if path else "")
    env["PYTHONUNBUFFERED"] = "1"  # a Python script's prints reach us per line, not at exit: pruning needs it
    return env


def _load_command(task: CommandTask, root: str | os.PathLike[str] | None) -> LoadedTask:
    base = Path(root) if root is not None else Path.cwd()
    cwd = (base / task.cwd) if task.cwd else base
    spec = task.command if isinstance(task.command, str) else shlex.join(task.command)
    if not cwd.is_dir():
        raise TaskError("the command's working directory does not exist", cwd)
    program = _program_of(task.command)
    if program is not None and "{" not in program and not _runnable(program, cwd, task.env):
        raise TaskError(f"command not found: {program}", spec)
    return LoadedTask("command", None, spec, command=task, cwd=cwd.resolve())


def _program_of(command: str | list[str]) -> str | None:
    """The program a command starts: the first word after ``VAR=value`` assignments."""
    if isinstance(command, list):
        return command[0]
    try:
        words = shlex.split(command)
    except ValueError:
        return None  # unbalanced quotes: bash will say so in the trial's stderr
    for word in words:
        if "=" in word.split("/")[0] and not word.startswith(("=", "/")):
            continue
        return word
    return None


def _runnable(program: str, cwd: Path, extra_env: dict[str, str]) -> bool:
    """Whether bash would find ``program`` (a file on PATH or relative to cwd, a builtin or a keyword) in
    the environment the command gets."""
    env = command_environment()
    env.update(extra_env)
    if "/" in program:
        path = Path(program) if Path(program).is_absolute() else cwd / program
        return path.is_file() and os.access(path, os.X_OK)
    if shutil.which(program, path=env.get("PATH")):
        return True
    found = subprocess.run(
        ["bash", "-c", 'type -t -- "$1"', "_", program],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return bool(found.stdout.strip())


def _load_callable(spec: str, root: str | os.PathLike[str] | None) -> LoadedTask:
    if not spec or not spec.strip():
        raise TaskError("task is empty", "task")
    target, _, func_name = spec.partition(":")
    if " " in spec.strip() and not any(
        p.is_file() for p in (Path(target), Path(root or ".") / target, Path.cwd() / target)
    ):
        raise TaskError(f'this looks like a command: write task: {{command: "{spec.strip()}"}}', "task")
    module = _load_module(target, spec, root)
    if func_name:
        fn = getattr(module, func_name, None)
        if fn is None or not callable(fn):
            raise TaskError(f"no function {func_name!r} in {target}", spec)
        return LoadedTask(_kind_of(fn, spec), fn, spec)
    build = getattr(module, "build", None)
    if build is None or not callable(build):
        hint = (
            " (a plain objective needs file.py:objective)"
            if hasattr(module, "objective")
            else ' (to run a script as it is: task: {command: "python train.py ..."})'
        )
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
            "build(params, fidelity, seed, train); to run a script as it is, use "
            'task: {command: "python train.py --lr {lr} ..."}',
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
        if target.startswith("hpc_tune.") and (exc.name or "").split(".")[0] in ENGINE_EXTRA:
            # The core install (enough for commands and objectives) has neither; say which extra has them.
            raise TaskError(
                f"task module {target!r} needs the engine: pip install 'hpc-tune[engine]' ({exc})", spec
            ) from exc
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
    # What the file prints while imported is held back: a script's argparse usage message would otherwise
    # bury the one line that says what to do.
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            module_spec.loader.exec_module(module)
        sys.stdout.write(out.getvalue())
        sys.stderr.write(err.getvalue())
    except SystemExit:
        # A training script that parses its arguments at import time: it was meant to be run, not imported.
        del sys.modules[name]
        raise TaskError(
            'the file exits when imported (a script?): to run it as it is, use task: {command: "python '
            f'{path.name} --lr {{lr}} ..."}}',
            spec,
        ) from None
    except Exception as exc:
        del sys.modules[name]
        raise TaskError(f"task file failed to import: {type(exc).__name__}: {exc}", spec) from exc
    return module
