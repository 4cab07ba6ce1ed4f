"""Write docs/summary.schema.json from the ``Summary`` model, so summary.json's documented schema cannot drift
from the file the collector writes.

.venv/bin/python scripts/gen_summary_schema.py          # rewrite docs/summary.schema.json
.venv/bin/python scripts/gen_summary_schema.py --check  # exit 1 if it is out of date (tests check this too)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hpc_tune.collector.summary import Summary

DOC = Path(__file__).resolve().parent.parent / "docs" / "summary.schema.json"


def render_schema() -> str:
    """The JSON Schema (draft 2020-12, as pydantic writes it) of runs/<study>/summary.json."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **Summary.model_json_schema()}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    text = render_schema()
    if "--check" in sys.argv:
        if not DOC.is_file() or DOC.read_text(encoding="utf-8") != text:
            print(
                "docs/summary.schema.json is out of date: run .venv/bin/python scripts/gen_summary_schema.py",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
