"""The prebuilt JupyterLab extension is up to date with its sources and is what pip installs.

The built extension is committed (extension/labextension/) so that installing bedside needs no
Node toolchain; these checks catch a source change committed without `make labextension`.
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "labextension"
BUILT = REPO / "extension" / "labextension"
NAME = "bedside-jupyterlab"


def test_built_extension_matches_its_sources() -> None:
    digest = runpy.run_path(str(SOURCE / "digest.py"))["digest"]
    recorded = (SOURCE / "build.sha256").read_text().strip()
    assert digest(SOURCE) == recorded, (
        "labextension/ changed since the extension was built: run `make labextension` and "
        "commit extension/labextension/ and labextension/build.sha256"
    )


def test_built_extension_is_complete() -> None:
    meta = json.loads((BUILT / "package.json").read_text())
    assert meta["name"] == NAME
    load = meta["jupyterlab"]["_build"]["load"]
    assert (BUILT / load).is_file(), f"{load} is missing from {BUILT}"
    source_meta = json.loads((SOURCE / "package.json").read_text())
    assert meta["version"] == source_meta["version"]


def test_pip_installed_the_extension_where_jupyterlab_finds_it() -> None:
    from jupyter_core.paths import jupyter_path
    from jupyterlab_server.config import get_federated_extensions

    installed = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / NAME
    if not installed.exists():
        pytest.fail(f"{installed} is missing: `pip install -e .` (make venv) installs it")
    found = get_federated_extensions(jupyter_path("labextensions"))
    assert NAME in found, "JupyterLab does not see the extension in its labextensions path"
    built = json.loads((BUILT / "package.json").read_text())["jupyterlab"]["_build"]["load"]
    assert (installed / built).is_file(), "the installed extension is older than the built one"
