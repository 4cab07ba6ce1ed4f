import importlib.abc
import re
import sys
from pathlib import Path

import optuna
import pytest

from hpc_tune.config import TrainConfig
from hpc_tune.errors import TaskError
from hpc_tune.tasks.base import TaskParts, load_task

REPO = Path(__file__).resolve().parents[2]


def test_builtin_module_with_build():
    task = load_task("hpc_tune.tasks.digits")
    assert task.kind == "build"
    assert isinstance(task.build({"hidden": 16}, None, 0, TrainConfig()), TaskParts)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("hpc_tune.tasks.nope", "not found"),
        ("no_such_package_xyz", "not found"),
        ("hpc_tune.tasks.common", "has no build()"),
        ("hpc_tune.tasks.digits:nope", "no function 'nope'"),
        ("missing/file.py:build", "task file not found"),
        ("", "task is empty"),
    ],
)
def test_load_errors(spec, message):
    with pytest.raises(TaskError) as info:
        load_task(spec)
    assert message in str(info.value)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_file_functions_are_told_apart(tmp_path):
    path = _write(
        tmp_path,
        "my task.py",
        (
            "def objective(trial):\n    return 1.0\n"
            "def build(params, fidelity, seed, train):\n    return None\n"
            "def neither(a, b):\n    return 0\n"
            "def build_kw(params, fidelity, seed, train, extra=1):\n    return None\n"
        ),
    )
    assert load_task(f"{path}:objective").kind == "objective"
    assert load_task(f"{path}:build").kind == "build"
    assert load_task(f"{path}:build_kw").kind == "build"
    with pytest.raises(TaskError, match="neither objective"):
        load_task(f"{path}:neither")
    with pytest.raises(TaskError, match="expected TaskParts"):
        load_task(f"{path}:build").build({}, None, 0, TrainConfig())
    with pytest.raises(TaskError, match="no build"):
        load_task(f"{path}:objective").build({}, None, 0, TrainConfig())


def test_relative_file_is_found_from_root(tmp_path):
    _write(tmp_path, "obj.py", "def objective(trial):\n    return 2.0\n")
    assert load_task("obj.py:objective", root=tmp_path).fn(None) == 2.0


def test_import_error_inside_user_file_is_reported_as_such(tmp_path):
    path = _write(tmp_path, "broken.py", "import not_installed_pkg_xyz\n")
    with pytest.raises(TaskError, match="failed to import: ModuleNotFoundError"):
        load_task(f"{path}:build")


def test_example_task_runs_through_the_engine():
    from hpc_tune.train import fit

    task = load_task("examples/byo_task.py:build", root=REPO)
    options = TrainConfig(compile="off")
    result = fit(
        task.build({"hidden": 16, "lr": 0.05}, None, 0, options),
        epochs=2,
        options=options,
        on_epoch=lambda r: None,
    )
    assert result.records[-1]["val_acc"] > 0.7


def test_example_objective_is_a_plain_optuna_objective():
    task = load_task("examples/byo_objective.py:objective", root=REPO)
    assert task.kind == "objective"
    study = optuna.create_study(direction="maximize")
    study.optimize(task.fn, n_trials=1)
    assert 0.5 < study.best_value <= 1.0


# required: whatever the importing process's argv is (pytest's, a worker's), parsing it exits
ARGPARSE_AT_IMPORT = (
    "import argparse\np = argparse.ArgumentParser()\np.add_argument('--lr', required=True)\np.parse_args()\n"
)


@pytest.mark.parametrize(
    ("files", "spec", "message"),
    [
        # what new users wrote for an existing script: each says how to run it as it is
        (
            {},
            "python train.py --lr {lr}",
            'this looks like a command: write task: {command: "python train.py',
        ),
        ({"train.py": ARGPARSE_AT_IMPORT}, "train.py", "the file exits when imported (a script?)"),
        (
            {"train.py": "def main():\n    pass\n"},
            "train.py:main",
            "to run a script as it is, use task: {command:",
        ),
        ({"train.py": "def main():\n    pass\n"}, "train.py", "(to run a script as it is: task: {command:"),
    ],
)
def test_an_existing_script_given_as_task_points_to_command_tasks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: dict[str, str], spec: str, message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(TaskError, match=re.escape(message)):
        load_task(spec, tmp_path)
    assert capsys.readouterr().err == ""  # argparse's usage message does not bury the one line


class _NotInstalled(importlib.abc.MetaPathFinder):
    """Imports of ``top`` and its submodules fail as they do where it is not installed."""

    def __init__(self, top: str) -> None:
        self.top = top

    def find_spec(self, fullname, path=None, target=None):  # type: ignore[no-untyped-def]
        if fullname == self.top or fullname.startswith(self.top + "."):
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@pytest.mark.parametrize("missing", ["torch", "sklearn"])
def test_builtin_task_without_the_engine_extra_names_it(monkeypatch, missing):
    # A core install: neither the library nor the tasks that import it are loaded yet.
    for name in [m for m in sys.modules if m.split(".")[0] == missing] + [
        "hpc_tune.tasks.digits",
        "hpc_tune.tasks.common",
    ]:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NotInstalled(missing), *sys.meta_path])
    with pytest.raises(TaskError, match=re.escape("pip install 'hpc-tune[engine]'")) as info:
        load_task("hpc_tune.tasks.digits")
    assert f"No module named '{missing}" in str(info.value)
