"""Built-in tasks behind one small protocol (see base.py); ``digits`` is the demo task."""

from hpc_tune.tasks.base import LoadedTask, Task, TaskParts, load_task

__all__ = ["LoadedTask", "Task", "TaskParts", "load_task"]
