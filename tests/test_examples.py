"""The shipped example configs run through a real ``hpctune worker``: the CNN task on the accelerated
engine, a bring-your-own task module and a plain Optuna objective."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import worker_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, tmp_path: Path, trials: int) -> tuple[dict[str, object], list[dict[str, object]]]:
    raw = yaml.safe_load((EXAMPLES / name).read_text())
    task = raw["task"]
    if ".py:" in task:  # make the file path absolute: the copy lives in tmp_path
        raw["task"] = str(EXAMPLES.parent / task)
    raw.update(trials=trials, results=str(tmp_path / "runs"), epochs=min(int(raw["epochs"]), 3))
    cfg = tmp_path / "hpctune.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = subprocess.run(
        [sys.executable, "-m", "hpc_tune", "worker", "-c", str(cfg)],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    records = [
        json.loads(p.read_text())
        for p in sorted((tmp_path / "runs" / raw["study"] / "trials").glob("*.json"))
    ]
    return raw, records


@pytest.mark.slow
@pytest.mark.parametrize("name", ["shapes_cnn.yaml", "byo_task.yaml", "byo_objective.yaml", "demo.yaml"])
def test_example_runs(tmp_path: Path, name: str) -> None:
    raw, records = run_example(name, tmp_path, trials=2)
    assert len(records) == 2
    for record in records:
        assert record["state"] in ("COMPLETE", "PRUNED")
        assert record["epochs"], record
        assert raw["metric"] in record["epochs"][0]  # type: ignore[index]
    complete = [r for r in records if r["state"] == "COMPLETE"]
    assert complete and all(0.0 <= r["value"] <= 1.0 for r in complete)  # type: ignore[operator]
