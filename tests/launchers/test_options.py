"""One set of sbatch options for both ways to SLURM: the rendered scripts and ``hpc_tune.launch``'s
submitit jobs ask for the same resources because they read one mapping, and extra_sbatch is parsed once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from submitit.slurm.slurm import _make_sbatch_string  # what submitit writes for a job (its own private name)

from hpc_tune.config import slurm_time_seconds
from hpc_tune.errors import ConfigError
from hpc_tune.launchers.options import parse_extra_sbatch, sbatch_options
from hpc_tune.launchers.python_api import _slurm_parameters
from hpc_tune.launchers.scripts import render_scripts
from hpc_tune.slurm import ArraySpec
from tests.launchers.test_scripts import loaded_config

SLURM = {
    "partition": "gpu",
    "account": "proj-42",
    "qos": "normal",
    "time": "02:00:00",
    "gres": "gpu:1",
    "cpus_per_task": 8,
    "mem": "32G",
    "extra_sbatch": ["--constraint=a100", "--exclusive", "--cpus-per-task=16 --hint=nomultithread"],
}


def sbatch_lines(text: str) -> dict[str, str | None]:
    """``#SBATCH --name=value`` / ``#SBATCH --name`` lines of a script, by name."""
    found: dict[str, str | None] = {}
    for name, _, value in re.findall(r"^#SBATCH --([\w-]+)(=(\S+))?$", text, re.M):
        found[name] = value or None
    return found


def test_extra_sbatch_is_parsed_once_into_long_options() -> None:
    lines = [
        "--constraint=a100",
        "--exclusive",
        "--reservation maint",
        "--cpus-per-task=16 --hint=nomultithread",
    ]
    assert parse_extra_sbatch(lines) == {
        "constraint": "a100",
        "exclusive": None,
        "reservation": "maint",
        "cpus-per-task": "16",
        "hint": "nomultithread",
    }
    with pytest.raises(ConfigError, match="must not set --signal"):
        parse_extra_sbatch(["--signal=USR1@60"])
    with pytest.raises(ConfigError, match="write long options"):
        parse_extra_sbatch(["--mail-type=END -N 2"])
    with pytest.raises(ConfigError, match="control character"):
        parse_extra_sbatch(["--comment=a\x07b"])


def test_an_option_extra_sbatch_repeats_is_replaced_not_written_twice(tmp_path: Path) -> None:
    options = sbatch_options(loaded_config(tmp_path, slurm=SLURM), "array")
    assert options.resources["cpus-per-task"] == "16"
    assert options.extra == {"constraint": "a100", "exclusive": None, "hint": "nomultithread"}
    collector = sbatch_options(loaded_config(tmp_path, slurm=SLURM), "collector")
    assert collector.resources["cpus-per-task"] == "1" and "gres" not in collector.resources
    assert collector.extra == {}  # GPU or exclusive options are not the one-core collector's


@pytest.mark.parametrize("collector", [False, True])
def test_the_scripts_and_submitit_ask_slurm_for_the_same_resources(tmp_path: Path, collector: bool) -> None:
    loaded = loaded_config(tmp_path, slurm=SLURM)
    scripts = render_scripts(loaded, ArraySpec.parse("0-3"))
    rendered = sbatch_lines(scripts.collect_text if collector else scripts.array_text)
    params = _slurm_parameters(loaded, collector=collector)
    submitted = sbatch_lines(_make_sbatch_string("true", tmp_path / "submitit", **params))
    mechanics = {"array", "output", "error", "open-mode", "signal", "dependency", "time", "nodes", "wckey"}
    ours = {k: v for k, v in rendered.items() if k not in mechanics}
    theirs = {k: v for k, v in submitted.items() if k not in mechanics | {"ntasks-per-node"}}
    assert ours == theirs
    assert int(submitted["time"]) * 60 == slurm_time_seconds(rendered["time"])  # type: ignore[arg-type]
    assert ("gres" in ours, ours.get("exclusive", "-")) == ((False, "-") if collector else (True, None))
