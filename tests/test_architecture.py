"""The package's shape holds: the import-linter contracts of pyproject.toml (layers, forbidden imports, no
cycle, all read transitively), only the adapter touching Optuna's private modules, and rooms small enough to
read (no class over 200 lines, no module over 500)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "hpc_tune"
MAX_CLASS_LINES = 200
MAX_MODULE_LINES = 500


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_import_contracts_are_kept() -> None:
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint_imports is not None, "import-linter is not installed (pip install -e '.[test]')"
    proc = subprocess.run(
        [lint_imports, "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_only_the_adapter_imports_optunas_private_modules() -> None:
    # import-linter can forbid only top-level external packages, so this one rule is read here.
    for path in _modules():
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        private = {n for n in names if n.startswith("optuna.") and any(p[0] == "_" for p in n.split("."))}
        if path != PACKAGE / "storage" / "optuna_adapter.py":
            assert not private, (path, private)


def test_no_class_over_200_lines_and_no_module_over_500() -> None:
    too_long = []
    for path in _modules():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                too_long.append(f"{path.relative_to(REPO)}: class {node.name}")
    assert not too_long, too_long
