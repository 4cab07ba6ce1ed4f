"""``hpctune check`` beyond the config's lint: a study submitted before is compared with the config, against
a real study on the embedded journal and on PostgreSQL, and looking creates nothing."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml

from hpc_tune import attrs
from hpc_tune.config import load_config, parse_config
from hpc_tune.config.lint import LintFinding
from hpc_tune.policy.shared_study import existing_study_attrs, open_study
from hpc_tune.preflight import lint_against_study
from hpc_tune.storage.url import resolve_storage
from tests.config.test_lint import cfg


def write(tmp_path: Path, **kw: object) -> Path:
    path = tmp_path / "hpctune.yaml"
    path.write_text(yaml.safe_dump(cfg(results=str(tmp_path / "runs"), **kw), sort_keys=False))
    return path


def test_epochs_changed_since_the_study_was_created(tmp_path: Path) -> None:
    first = load_config(write(tmp_path, epochs=15))
    spec = resolve_storage(None, first.study_dir)
    assert existing_study_attrs(spec, "s1") is None
    assert not first.study_dir.exists()  # looking created nothing
    open_study(first, None, with_heartbeat=False)
    assert existing_study_attrs(spec, "s1")[attrs.EPOCHS] == 15  # type: ignore[index]

    changed = load_config(write(tmp_path, epochs=20))
    open_study(changed, None, with_heartbeat=False)  # a worker of the changed config: the record stays
    recorded = existing_study_attrs(spec, "s1")
    assert recorded is not None and recorded[attrs.EPOCHS] == 15
    assert lint_against_study(changed.config, recorded) == [
        LintFinding(
            "epochs",
            "is 20 but study 's1' was created with trials of 15 epochs; trials of different lengths would be "
            "ranked together: set it back to 15, or use a new study name",
        )
    ]
    assert lint_against_study(first.config, recorded) == []
    screening = parse_config(cfg(fidelity={"epochs": 5, "promote_top": 2}))
    assert [f.key for f in lint_against_study(screening, recorded)] == ["fidelity.epochs"]
    assert existing_study_attrs(spec, "other") is None


def test_a_study_from_before_gets_its_epochs_once(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, epochs=12))
    spec = resolve_storage(None, loaded.study_dir)
    assert spec.journal_path is not None
    spec.journal_path.parent.mkdir(parents=True)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(spec.journal_path))
    )
    optuna.create_study(study_name="s1", storage=storage, direction="maximize")
    assert attrs.EPOCHS not in existing_study_attrs(spec, "s1")  # type: ignore[operator]
    open_study(loaded, None, with_heartbeat=False)
    assert existing_study_attrs(spec, "s1")[attrs.EPOCHS] == 12  # type: ignore[index]


@pytest.mark.postgres
def test_epochs_changed_on_postgresql_and_an_empty_database_is_left_empty(
    tmp_path: Path, pg_url: str
) -> None:
    spec = resolve_storage(pg_url, tmp_path)
    assert existing_study_attrs(spec, "s1") is None
    engine = sqlalchemy.create_engine(pg_url)
    try:
        assert sqlalchemy.inspect(engine).get_table_names() == []  # no Optuna tables created by looking
    finally:
        engine.dispose()
    open_study(load_config(write(tmp_path, storage=pg_url, epochs=15)), None, with_heartbeat=False)
    recorded = existing_study_attrs(spec, "s1")
    assert recorded is not None
    assert [f.key for f in lint_against_study(parse_config(cfg(epochs=9)), recorded)] == ["epochs"]
