"""The sessions of one researcher server: one `SessionMirror` per hospital kernel.

Browser tabs come and go (each opens its own websocket), but a kernel's session and its ledger
copy live as long as the kernel, so the mirrors are kept here, keyed by kernel id, and the REST
API reads the same objects the websocket connections write.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from bedside.errors import Error
from bedside.ledger import Signer

from .config import Bedside
from .mirror import SessionMirror


def load_researcher_key(path: str | os.PathLike[str], name: str = "researcher") -> Signer:
    """The researcher's signing key, created (mode 0600) on first use."""
    p = Path(path)
    if p.exists():
        return Signer.load(p)
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    signer = Signer.generate(name)
    signer.save(p)
    os.chmod(p, 0o600)
    return signer


def read_intent(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An intent file (JSON or YAML), with an error that names the file and the fix."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise Error(f"{p}: cannot read the session intent ({exc.strerror})") from exc
    try:
        data = yaml.safe_load(text) if p.suffix in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = p.suffix[1:] or "JSON"
        raise Error(f"{p}: the session intent is not valid {kind}: {exc}") from exc
    if isinstance(data, dict) and isinstance(data.get("intent"), dict):
        data = data["intent"]
    if not isinstance(data, dict):
        raise Error(
            f"{p}: the session intent must be a mapping with purpose, cohort, policy_id, budget"
        )
    return data


def notebook_intent(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """`metadata.bedside.intent` of a notebook file, when it has one."""
    try:
        nb = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    intent = ((nb.get("metadata") or {}).get("bedside") or {}).get("intent")
    return intent if isinstance(intent, dict) else None


class SessionRegistry:
    """Every session this server has seen, live ones in memory, past ones on disk."""

    def __init__(self, config: Bedside) -> None:
        self.config = config
        self.root = config.sessions_path()
        self.root.mkdir(parents=True, exist_ok=True)
        self._signer: Signer | None = None
        self.live: dict[str, SessionMirror] = {}
        # kernel id -> its open websocket connections (extension/connection.py), newest last
        self.connections: dict[str, list[Any]] = {}
        # (kernel id, session id) of gateway websockets still opening, or failed to open
        self.handshakes: set[tuple[str, str]] = set()

    @property
    def signer(self) -> Signer:
        if self._signer is None:
            self._signer = load_researcher_key(
                self.config.researcher_key_file, self.config.researcher_name
            )
        return self._signer

    def intent_for(self, notebook: Path | None) -> dict[str, Any] | None:
        if notebook is not None:
            intent = notebook_intent(notebook)
            if intent is not None:
                return intent
        if self.config.intent_file:
            return read_intent(self.config.intent_file)
        return None

    def open(self, kernel_id: str, notebook: Path | None) -> SessionMirror:
        """The kernel's mirror: one per kernel, whichever websocket asks for it."""
        mirror = self.live.get(kernel_id)
        if mirror is not None:
            if mirror.intent is None and not mirror.intent_sent:
                # the first connection came before the server knew the kernel's notebook
                mirror.intent = self.intent_for(notebook)
            return mirror
        mirror = SessionMirror(
            kernel_id=kernel_id,
            directory=self.root / kernel_id,
            signer=self.signer,
            intent=self.intent_for(notebook),
            custodian_key=self.config.custodian_key,
        )
        self.live[kernel_id] = mirror
        return mirror

    def status(self, session: str) -> dict[str, Any] | None:
        mirror = self.find(session)
        if mirror is not None:
            return mirror.status()
        path = self.root / session / "status.json"
        if path.is_file() and path.parent.parent == self.root:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            return data
        return None

    def find(self, session: str) -> SessionMirror | None:
        """A live session by kernel id or by the hospital's session id."""
        if session in self.live:
            return self.live[session]
        for mirror in self.live.values():
            if mirror.session_id and mirror.session_id == session:
                return mirror
        return None

    def directory(self, session: str) -> Path | None:
        mirror = self.find(session)
        if mirror is not None:
            return mirror.directory
        candidate = self.root / session
        if candidate.parent == self.root and (candidate / "status.json").is_file():
            return candidate
        return None

    def list(self) -> list[dict[str, Any]]:
        out = []
        for child in sorted(self.root.iterdir()):
            status = self.status(child.name)
            if status is not None:
                keep = ("kernel_id", "session", "state", "entries", "root", "reason")
                out.append({k: status.get(k) for k in keep})
        return out

    def close(self) -> None:
        for mirror in self.live.values():
            mirror.close()
