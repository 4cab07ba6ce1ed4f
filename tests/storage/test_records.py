from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hpc_tune.atomic import atomic_write_text
from hpc_tune.storage.records import TrialRecord, read_trials, trial_path, write_trial


def test_record_tracks_best_epoch_and_writes_schema(tmp_path: Path) -> None:
    record = TrialRecord(study="s", trial=3, params={"lr": 0.1})
    for epoch, acc, loss in [(1, 0.5, 1.0), (2, 0.8, 0.6), (3, 0.7, 0.7)]:
        record.add_epoch(
            {"epoch": epoch, "train_loss": 1.0, "val_loss": loss, "val_acc": acc}, "val_acc", "maximize"
        )
    write_trial(tmp_path, record)
    data = json.loads(trial_path(tmp_path, 3).read_text())
    assert list(data)[0] == "schema_version" and data["schema_version"] == 1
    assert data["best"] == {"epoch": 2, "val_loss": 0.6, "val_acc": 0.8}
    assert [e["epoch"] for e in data["epochs"]] == [1, 2, 3]


def test_nan_is_stored_as_null(tmp_path: Path) -> None:
    record = TrialRecord(study="s", trial=0, params={})
    record.add_epoch({"epoch": 1, "train_loss": float("nan"), "val_acc": float("inf")}, "val_acc", "maximize")
    write_trial(tmp_path, record)
    data = json.loads(trial_path(tmp_path, 0).read_text())
    assert data["epochs"][0]["train_loss"] is None and data["best"] is None


def test_atomic_write_leaves_old_content_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temp file left behind


def test_reader_quarantines_damaged_files(tmp_path: Path) -> None:
    study_dir = tmp_path / "s"  # runs/<study>/
    write_trial(study_dir, TrialRecord(study="s", trial=0, params={}))
    folder = study_dir / "trials"
    (folder / "trial-1.json").write_text('{"schema_version": 1, "trial"')
    (folder / "trial-2.json").write_text('{"schema_version": 1}')
    (folder / "trial-3.json").write_text(
        json.dumps({"schema_version": 9, "study": "s", "trial": 3, "state": "X", "params": {}, "epochs": []})
    )
    loaded = read_trials(study_dir)
    assert list(loaded.records) == [0]
    whys = {q["file"]: q["why"] for q in loaded.quarantined}
    assert whys["trial-1.json"].startswith("not valid JSON")
    assert whys["trial-2.json"] == "missing key 'study'"
    assert whys["trial-3.json"] == "schema_version 9"


def test_full_validation_replaces_the_subsets_best_whatever_the_metric_is_called(tmp_path: Path) -> None:
    record = TrialRecord(study="s", trial=0, params={})
    for epoch, f1 in ((1, 0.5), (2, 0.9), (3, 0.7)):  # a subset's values: epoch 2 looked best
        record.add_epoch({"epoch": epoch, "f1": f1, "val_loss": 1.0 / epoch}, "f1", "maximize")
    assert record.best is not None and record.best["f1"] == 0.9
    full = [
        {"epoch": 3, "of": "final", "f1": 0.72, "val_loss": 0.4, "val_samples": 100},
        {"epoch": 2, "of": "best", "f1": 0.81, "val_loss": 0.5, "val_samples": 100},
        {"epoch": 2, "of": "nan", "f1": float("nan"), "val_loss": 0.5, "val_samples": 100},
    ]
    record.set_full_validation(full, "f1", "maximize")
    assert record.best == {
        "epoch": 2,
        "f1": 0.81,
        "val_loss": 0.5,
        "val_samples": 100,
        "validated_on": "full",
    }
    record.set_full_validation(full[:1], "f1", "minimize")
    assert record.best["f1"] == 0.72 and record.full_validation == full[:1]
    write_trial(tmp_path, record)
    assert json.loads(trial_path(tmp_path, 0).read_text())["full_validation"][0]["of"] == "final"
