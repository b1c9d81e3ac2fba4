"""How a benchmark hands over its results: one JSON document on stdout, which `make bench`
(bench/run_all.py) reads, and the same document in the file the caller named, if any.

Imported by the bench scripts by name (`from _report import emit`): Python puts the script's own
folder, bench/, first on sys.path.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(doc: dict[str, Any], out: str | Path | None = None) -> None:
    """Print `doc` as indented JSON on stdout and, when `out` is given, write it there too."""
    text = json.dumps(doc, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
