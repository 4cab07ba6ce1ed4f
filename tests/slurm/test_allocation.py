"""What a task holds, read from the environment SLURM and CUDA give it. No GPU exists on the test machine:
the GPU cases set the variables SLURM's gres plugin sets on a GPU node (that is all the code reads)."""

from __future__ import annotations

import os

from hpc_tune.slurm.allocation import Devices, devices_held


def test_the_gpus_a_task_can_see_are_what_it_holds() -> None:
    assert devices_held({"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_CPUS_PER_TASK": "8"}) == Devices(
        "gpu", 2, ["0", "1"]
    )
    # A GPU UUID list (MIG, or a site that prints UUIDs) counts the same way.
    assert devices_held({"CUDA_VISIBLE_DEVICES": "GPU-1a2b, GPU-3c4d, GPU-5e6f"}).count == 3
    # SLURM's own lists where CUDA's is not set (a prolog that does not export it).
    assert devices_held({"SLURM_JOB_GPUS": "3"}) == Devices("gpu", 1, ["3"])
    assert devices_held({"SLURM_GPUS_ON_NODE": "4"}) == Devices("gpu", 4, [])
    assert devices_held({"CUDA_VISIBLE_DEVICES": "0"}).unit == "GPU-hours"


def test_a_task_without_gpus_holds_its_cpu_cores() -> None:
    # Hidden GPUs are none, whatever SLURM lists: the task's processes cannot use them.
    assert devices_held({"CUDA_VISIBLE_DEVICES": "", "SLURM_JOB_GPUS": "0", "SLURM_CPUS_PER_TASK": "4"}) == (
        Devices("cpu", 4, [])
    )
    assert devices_held({"CUDA_VISIBLE_DEVICES": "-1", "SLURM_CPUS_PER_TASK": "2"}) == Devices("cpu", 2, [])
    assert devices_held({"SLURM_CPUS_PER_TASK": "6"}).unit == "CPU core-hours"
    # Outside SLURM: the cores this process may run on.
    assert devices_held({}) == Devices("cpu", len(os.sched_getaffinity(0)), [])
