"""The docs that are generated or promised stay true: the CLI and config references, the README's two
commands, and the links of the pages about bringing your code."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _script(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date() -> None:
    assert (REPO / "docs" / "cli.md").read_text() == _script("gen_cli_docs").render_cli_docs(), (
        "docs/cli.md is stale: run .venv/bin/python scripts/gen_cli_docs.py"
    )


def test_summary_schema_is_up_to_date() -> None:
    # A field added to or changed in hpc_tune/collector/summary.py (or a check's details) fails here too.
    assert (REPO / "docs" / "summary.schema.json").read_text() == _script(
        "gen_summary_schema"
    ).render_schema(), "docs/summary.schema.json is stale: run .venv/bin/python scripts/gen_summary_schema.py"


def test_readme_shows_the_two_commands_and_makefile_has_them() -> None:
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    makefile = (REPO / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in ci and "set -euo pipefail" in ci


def test_config_reference_is_up_to_date() -> None:
    # A field added to hpc_tune/config/schema.py without a meaning in the generator fails here too.
    doc = (REPO / "docs" / "your-code.md").read_text()
    assert doc == _script("gen_config_docs").render_doc(doc), (
        "docs/your-code.md's config reference is stale: run .venv/bin/python scripts/gen_config_docs.py"
    )


def test_config_reference_has_a_row_for_every_key() -> None:
    module = _script("gen_config_docs")
    doc = (REPO / "docs" / "your-code.md").read_text()
    for path, model in module.sections():
        for name in model.model_fields:
            key = f"{path}.{name}" if path else name
            assert f"| `{key}` |" in doc, key


LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def test_relative_links_of_the_code_docs_resolve() -> None:
    for page in (REPO / "README.md", REPO / "docs" / "your-code.md"):
        targets = [t for t in LINK.findall(page.read_text()) if not t.startswith(("http://", "https://"))]
        assert targets, page
        missing = [t for t in targets if not (page.parent / t).exists()]
        assert not missing, f"{page.name} links to missing {missing}"
