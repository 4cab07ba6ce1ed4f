"""A study's jobs as squeue sees them: its arrays (with every task) and its collectors.

``status`` shows it, the launchers build it from ``squeue``; it is plain SLURM data, so the collector's
``status`` view can read it without knowing how the jobs were started.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from hpc_tune.slurm.commands import TaskState


@dataclass(frozen=True)
class StudyStatus:
    """The study's jobs as squeue sees them (finished ones only for MinJobAge, 300 s by default)."""

    study: str
    job_name: str
    tasks: list[TaskState]

    @property
    def array_tasks(self) -> list[TaskState]:
        return [t for t in self.tasks if t.is_array_task]

    @property
    def by_state(self) -> dict[str, int]:
        return dict(Counter(t.state for t in self.array_tasks))

    @property
    def active(self) -> list[TaskState]:
        return [t for t in self.array_tasks if t.active]

    @property
    def collectors(self) -> list[TaskState]:
        return [t for t in self.tasks if not t.is_array_task]

    def current(self, running_array_ids: Iterable[str] = ()) -> StudyStatus:
        """Only the arrays at work now: the newest array of the study, and those its RUNNING trials came
        from (the parts of a split array run one after another, each recorded on its trials).

        An older array's tasks (ended ones squeue still lists for MinJobAge, or an earlier submission)
        would make the study look busier than it is; collectors are kept while they are queued or running.
        """
        arrays = {t.array_job_id for t in self.array_tasks}
        keep = set(running_array_ids)
        if arrays:
            keep.add(max(arrays, key=lambda j: (len(j), j)))  # job ids are decimal: longer is newer
        tasks = [t for t in self.tasks if (t.array_job_id in keep if t.is_array_task else t.active)]
        return StudyStatus(study=self.study, job_name=self.job_name, tasks=tasks)
