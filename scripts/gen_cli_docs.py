"""Write docs/cli.md from the commands' own --help, so the reference cannot drift from the code.

.venv/bin/python scripts/gen_cli_docs.py          # rewrite docs/cli.md
.venv/bin/python scripts/gen_cli_docs.py --check  # exit 1 if docs/cli.md is out of date (tests run this)
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hpc_tune.cli import cli

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
HEADER = """# CLI reference

Generated from `hpctune --help` by `scripts/gen_cli_docs.py`; do not edit by hand.
Every command turns a user error into one line, `Error: <what> (<where>)`, and a non-zero exit code:
2 config or usage, 3 storage, 4 task, 5 SLURM, 8 every trial of the study failed (`collect`), 9 the
learning-rate range test found no range (`lr-range`), 75 database unreachable (try again later).
"""


def render_cli_docs() -> str:
    parts = [HEADER]
    settings = {"terminal_width": 100, "max_content_width": 100, "help_option_names": ["-h", "--help"]}
    with click.Context(cli, info_name="hpctune", **settings) as ctx:
        parts.append(f"```\n{cli.get_help(ctx)}\n```\n")
        for name in sorted(cli.list_commands(ctx)):
            command = cli.get_command(ctx, name)
            assert command is not None
            with click.Context(command, info_name=name, parent=ctx, **settings) as sub:
                parts.append(f"## hpctune {name}\n\n```\n{command.get_help(sub)}\n```\n")
    return "\n".join(parts)


def main() -> int:
    text = render_cli_docs()
    if "--check" in sys.argv:
        if not DOC.is_file() or DOC.read_text() != text:
            print("docs/cli.md is out of date: run .venv/bin/python scripts/gen_cli_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
