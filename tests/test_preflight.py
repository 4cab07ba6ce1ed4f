"""``hpctune check`` beyond the config's lint: a study submitted before is compared with the config, against
a real study on the embedded journal and on PostgreSQL, and looking creates nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from click.testing import CliRunner

from hpc_tune import attrs
from hpc_tune.cli import cli
from hpc_tune.config import load_config, parse_config
from hpc_tune.config.lint import LintFinding
from hpc_tune.lr_range.curve import LrRun
from hpc_tune.lr_range.result import LrRangeResult, write_result
from hpc_tune.lr_range.suggest import LrSuggestion, RunRange
from hpc_tune.policy.shared_study import existing_study_attrs, open_study
from hpc_tune.preflight import lint_against_study, lint_lr_range
from hpc_tune.storage.url import resolve_storage
from tests.config.test_lint import SPACE, cfg
from tests.conftest import PostgresServer, write_config


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


# --- the database as check sees it ----------------------------------------------------------------------


def check_lines(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["check", "-c", str(config), *args], env=env, catch_exceptions=False)
    return result.exit_code, result.stdout.splitlines()


def test_check_warns_when_the_database_does_not_answer_and_shows_it_redacted(tmp_path: Path) -> None:
    config = write_config(tmp_path, task="objective.py:objective")
    (tmp_path / "objective.py").write_text("def objective(trial):\n    return 0.0\n")
    url = "postgresql+psycopg2://u:s3cret-word@127.0.0.1:1/x"
    code, lines = check_lines(config, env={"HPCTUNE_STORAGE": url})
    assert code == 0  # the login node may not reach what the compute nodes reach: a warning, not an error
    warning = next(line for line in lines if line.startswith("warning: storage:"))
    assert warning.startswith(
        "warning: storage: postgresql+psycopg2://u:***@127.0.0.1:1/x does not answer from here (connection "
        'to server at "127.0.0.1", port 1 failed: Connection refused'
    )
    assert warning.endswith("the compute nodes may reach it, but make sure before submitting an array")
    assert all("s3cret-word" not in line for line in lines)
    assert "storage postgresql+psycopg2://u:***@127.0.0.1:1/x (" in lines[-1]


@pytest.mark.postgres
def test_check_compares_the_roles_connection_limit_with_the_arrays_workers(
    tmp_path: Path, pg_url: str, postgres_server: PostgresServer
) -> None:
    role = "lim_" + uuid.uuid4().hex[:8]
    database = pg_url.rsplit("/", 1)[1]
    postgres_server.sql(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 12")
    postgres_server.sql(f"GRANT ALL ON DATABASE {database} TO {role}")
    url = f"postgresql+psycopg2://{role}@127.0.0.1:{postgres_server.port}/{database}"
    config = write_config(tmp_path, storage=url, task="objective.py:objective")
    (tmp_path / "objective.py").write_text("def objective(trial):\n    return 0.0\n")
    code, lines = check_lines(config, "--array", "0-23")
    assert code == 0
    version = postgres_server.version()
    assert (
        f"storage: PostgreSQL {version} answers; role {role}: connection limit 12, server max_connections "
        "300 (3 reserved for superusers)"
    ) in lines
    expected = (
        f"warning: storage: 24 workers at once need up to 26 connections (worker.pool auto) but role {role} "
        "may hold 12: they will wait for each other's connections. Lower the array's parallelism to 10, "
        "set worker.pool: none, or connect through PgBouncer in transaction mode "
        '(docs/concepts.md, "Connections")'
    )
    assert expected in lines
    code, lines = check_lines(config, "--array", "0-23%4")  # 4 at once, 3 connections each: fits in 12
    assert code == 0 and not any(line.startswith("warning: storage:") for line in lines)


# --- the space's lr against the study's learning-rate range test ------------------------------------------


def lr_range_result(low: float, high: float, param: str = "lr") -> LrRangeResult:
    """What ``hpctune lr-range`` would have written, with the suggestion [low, high]."""
    run = LrRun(
        label="adamw, batch 64",
        optimizer="adamw",
        batch_size=64,
        steps=3,
        smoothing=0.5,
        stopped="diverged",
        lr=[1e-5, 1e-2, 30.0],
        loss=[2.3, 1.0, 9.0],
        smoothed=[2.3, 1.4, 5.5],
    )
    return LrRangeResult(
        study="s1",
        task="hpc_tune.tasks.digits",
        param=param,
        space_low=1e-4,
        space_high=1e-1,
        start_lr=1e-5,
        end_lr=30.0,
        steps=3,
        runs=[run],
        readings=[RunRange(label=run.label, steepest_lr=low * 10, lowest_lr=high * 3)],
        suggestion=LrSuggestion(low=low, high=high),
    )


@pytest.mark.parametrize(
    ("space_lr", "expected"),
    [
        ((1e-4, 1e-1), None),  # holds the suggestion, 1000x wide against its 40x: 25 times, under 100
        ((1e-3, 1e-2), None),  # inside it
        ((1e-7, 1e-5), "all below"),
        ((1.0, 10.0), "all above"),
        ((1e-7, 10.0), "times as wide"),
    ],
)
def test_lr_against_the_range_test(space_lr: tuple[float, float], expected: str | None) -> None:
    space = {**SPACE, "lr": {"type": "float", "low": space_lr[0], "high": space_lr[1], "log": True}}
    found = lint_lr_range(parse_config(cfg(space=space)), lr_range_result(1e-3, 4e-2))
    if expected is None:
        assert found == []
        return
    (finding,) = found
    assert finding.key == "space.lr" and expected in finding.message
    assert "the range test's 1.0e-03 to 4.0e-02 (runs/s1/lr-range.json)" in finding.message
    assert "low: 1.0e-3, high: 4.0e-2" in finding.message


def test_a_range_test_of_another_parameter_or_without_a_suggestion_says_nothing() -> None:
    config = parse_config(cfg(space={**SPACE, "lr": {"type": "float", "low": 1e-7, "high": 1e-6}}))
    assert lint_lr_range(config, lr_range_result(1e-3, 4e-2, param="optimizer.lr")) == []
    assert lint_lr_range(config, lr_range_result(1e-3, 4e-2).model_copy(update={"suggestion": None})) == []


def test_check_reads_the_studys_range_test_and_warns_when_the_space_misses_it(tmp_path: Path) -> None:
    config = write(tmp_path, space={**SPACE, "lr": {"type": "float", "low": 1e-7, "high": 1e-5, "log": True}})
    code, lines = check_lines(config)
    assert code == 0 and not any("range test" in line for line in lines)  # no test yet: nothing to say
    write_result(load_config(config).study_dir, lr_range_result(1e-3, 4e-2))
    code, lines = check_lines(config)
    where = tmp_path / "runs" / "s1" / "lr-range.json"
    assert code == 0 and lines[0] == (
        f"warning: space.lr: is 1.0e-07 to 1.0e-05, all below the range test's 1.0e-03 to 4.0e-02 ({where}): "
        "no trial would train at a rate where the loss falls well; set low: 1.0e-3, high: 4.0e-2, or run "
        "hpctune lr-range again"
    )
    assert lines[-1].endswith("(1 warning)")
    (load_config(config).study_dir / "lr-range.json").write_text('{"study": "s1"}')
    code, lines = check_lines(config)
    assert code == 0 and lines[0].startswith("warning: lr-range: the range test's result is not one hpctune ")
