"""The digest of the front end's sources, recorded beside the prebuilt extension.

The built JupyterLab extension is committed under `extension/labextension/` so that
`pip install` needs no Node toolchain; `make labextension` rebuilds it and writes this digest to
`labextension/build.sha256`, and tests/frontend/test_build.py fails when the sources changed
without a rebuild.

    python labextension/digest.py          # print the digest of the current sources
    python labextension/digest.py --write  # record it (after a build)
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECORD = HERE / "build.sha256"
SOURCES = ("package.json", "package-lock.json", "tsconfig.json", "src", "style")


def source_files(root: Path = HERE) -> list[Path]:
    files: list[Path] = []
    for name in SOURCES:
        path = root / name
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    return files


def digest(root: Path = HERE) -> str:
    h = hashlib.sha256()
    for path in source_files(root):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"\n")
    return h.hexdigest()


if __name__ == "__main__":
    value = digest()
    if sys.argv[1:] == ["--write"]:
        RECORD.write_text(value + "\n")
    print(value)
