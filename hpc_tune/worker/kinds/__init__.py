"""The kinds of task a worker runs (``LoadedTask.kind``), each a
:class:`~hpc_tune.worker.kinds.base.TaskRunner` in a module of its own: ``build`` (the engine, engine.py),
``objective`` (objective.py), ``command`` (command.py).

A new kind is a module here with a runner class taking ``(task, loaded, guard)`` and a line in ``KINDS``.
The registry names modules instead of importing them, so that a worker imports only its own kind: a command
task's worker never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpc_tune.config import LoadedConfig
    from hpc_tune.tasks.base import LoadedTask
    from hpc_tune.worker.kinds.base import TaskRunner
    from hpc_tune.worker.signals import SignalGuard

# LoadedTask.kind -> "module:class" of its runner.
KINDS = {
    "build": "hpc_tune.worker.kinds.engine:EngineRunner",
    "objective": "hpc_tune.worker.kinds.objective:ObjectiveRunner",
    "command": "hpc_tune.worker.kinds.command:CommandRunner",
}


def task_runner_for(task: LoadedTask, loaded: LoadedConfig, guard: SignalGuard) -> TaskRunner:
    """The runner of this task's kind."""
    module, _, name = KINDS[task.kind].partition(":")
    runner: TaskRunner = getattr(importlib.import_module(module), name)(task, loaded, guard)
    return runner
