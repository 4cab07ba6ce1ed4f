"""The wings' dependency direction: cli → (worker | slurm | report) → study → errors; train and tasks know
nothing of Optuna; only the adapter touches Optuna's private modules. Read from the import statements."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hpc_tune"


def imports_of(folder: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(PACKAGE))] = names
    return found


def test_study_stands_on_nothing_but_itself() -> None:
    for module, names in imports_of("study").items():
        wings = {n for n in names if n.startswith(("hpc_tune.worker", "hpc_tune.slurm", "hpc_tune.report"))}
        assert not wings, (module, wings)
        assert "hpc_tune.cli" not in names, module


def test_nothing_imports_the_cli() -> None:
    for folder in ("study", "worker", "slurm", "report", "train", "tasks"):
        for module, names in imports_of(folder).items():
            assert "hpc_tune.cli" not in names, module


def test_only_the_adapter_imports_optunas_private_modules() -> None:
    for folder in ("study", "worker", "slurm", "report", "train", "tasks"):
        for module, names in imports_of(folder).items():
            private = {
                n for n in names if n.startswith("optuna.") and any(p.startswith("_") for p in n.split("."))
            }
            if module != "study/optuna_adapter.py":
                assert not private, (module, private)


def test_the_worker_uses_only_the_environment_of_the_slurm_wing() -> None:
    for module, names in imports_of("worker").items():
        slurm = {n for n in names if n.startswith("hpc_tune.slurm")}
        assert slurm <= {"hpc_tune.slurm.environment"}, (module, slurm)


def test_train_and_tasks_know_nothing_of_optuna() -> None:
    for folder in ("train", "tasks"):
        for module, names in imports_of(folder).items():
            assert not {n for n in names if n == "optuna" or n.startswith("optuna.")}, module


def test_in_the_slurm_wing_only_the_python_api_runs_workers_and_collects() -> None:
    """``launch`` runs the worker loop and the collector as submitit jobs, as the CLI runs them as commands;
    the rest of the wing renders, submits and watches, and imports neither the worker nor the report wing."""
    for module, names in imports_of("slurm").items():
        wings = {n for n in names if n.startswith(("hpc_tune.worker", "hpc_tune.report"))}
        if module == "slurm/launch.py":
            assert wings <= {"hpc_tune.worker.loop", "hpc_tune.report.collect"}, wings
        else:
            assert not wings, (module, wings)
