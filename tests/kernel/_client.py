"""Drive a real guarded kernel through jupyter_client and collect every message it sends."""

from __future__ import annotations

import base64
import binascii
import json
import queue
import re
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ahocorasick
import numpy as np
import pandas as pd
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

CHANNELS = ("iopub", "shell", "stdin", "control")


def kernel_spec_dir(
    root: Path,
    name: str,
    policy: Path | None,
    module: str = "bedside.kernel",
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> Path:
    """Write the kernelspec `name` (this Python running `module` with `policy`, under the
    command `prefix` if any, e.g. valgrind) under root/kernels; return that folder, for a
    KernelSpecManager or JUPYTER_PATH's kernels/."""
    d = root / "kernels" / name
    d.mkdir(parents=True, exist_ok=True)
    argv = [*prefix, sys.executable, "-m", module, "-f", "{connection_file}"]
    if policy is not None:
        argv += ["--policy", str(policy)]
    spec: dict[str, Any] = {"argv": argv, "display_name": name, "language": "python"}
    if env:
        spec["env"] = env
    (d / "kernel.json").write_text(json.dumps(spec))
    return root / "kernels"


def start(
    root: Path,
    name: str,
    policy: Path | None,
    module: str = "bedside.kernel",
    *,
    prefix: Sequence[str] = (),
    timeout: float = 120,
    env: dict[str, str] | None = None,
) -> Any:
    """Start the kernel of `kernel_spec_dir(root, name, policy, module, env, prefix)`; return
    its manager and a blocking client with its channels started, once it answers."""
    kdir = kernel_spec_dir(root, name, policy, module, env, prefix=prefix)
    km = KernelManager(
        kernel_name=name, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kdir)])
    )
    km.start_kernel()
    kc = km.blocking_client()
    kc.start_channels()
    kc.wait_for_ready(timeout=timeout)
    return km, kc


def stop(km: Any, kc: Any) -> None:
    """Stop what `start` started."""
    kc.stop_channels()
    km.shutdown_kernel(now=True)


@contextmanager
def running(
    root: Path, name: str, policy: Path | None, env: dict[str, str] | None = None
) -> Iterator[Session]:
    """A guarded kernel's `Session` for the block (`start`); the kernel is stopped after it."""
    km, kc = start(root, name, policy, env=env)
    try:
        yield Session(kc)
    finally:
        stop(km, kc)


@dataclass
class Reply:
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def reply(self) -> dict[str, Any]:
        return next(m for ch, m in self.messages if ch == "shell")

    def of(self, msg_type: str) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if m["header"]["msg_type"] == msg_type]

    def decisions(self) -> list[str]:
        out = []
        for _, m in self.messages:
            for meta in (m.get("metadata") or {}, (m.get("content") or {}).get("metadata") or {}):
                if isinstance(meta, dict) and isinstance(meta.get("bedside"), dict):
                    out.append(meta["bedside"]["decision"])
        return out

    def blocked(self) -> bool:
        """Whether a message of this reply carries the guard's `blocked` decision."""
        return "blocked" in self.decisions()

    def text(self) -> str:
        return "\n".join(
            json.dumps({"c": m.get("content"), "m": m.get("metadata")}, default=str)
            for _, m in self.messages
        )

    def shown(self) -> str:
        """What a researcher reads: stream text, text/plain outputs, errors, replies."""
        parts = []
        for _, m in self.messages:
            c = m.get("content") or {}
            parts.append(str(c.get("text", "")))
            parts.append(str((c.get("data") or {}).get("text/plain", "")))
            if m["header"]["msg_type"] == "error":
                parts.append(c.get("ename", "") + ": " + c.get("evalue", ""))
        return "\n".join(parts)


class Session:
    """A kernel client that keeps every message received on every channel."""

    def __init__(self, kc: Any) -> None:
        self.kc = kc
        self.log: list[tuple[str, dict[str, Any]]] = []

    def _drain(self, channel: str, timeout: float) -> list[dict[str, Any]]:
        ch = getattr(self.kc, f"{channel}_channel")
        out = []
        while True:
            try:
                out.append(ch.get_msg(timeout=timeout))
            except queue.Empty:
                return out

    def request(self, send: Any, quiet: float = 0.25, timeout: float = 120) -> Reply:
        msg_id = send()
        got = Reply()
        deadline = time.monotonic() + timeout
        idle = reply = False
        while not (idle and reply):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no reply to {msg_id}")
            for m in self._drain("iopub", 0.05):
                got.messages.append(("iopub", m))
                if (
                    m["header"]["msg_type"] == "status"
                    and m["parent_header"].get("msg_id") == msg_id
                    and m["content"]["execution_state"] == "idle"
                ):
                    idle = True
            for m in self._drain("shell", 0.01):
                got.messages.append(("shell", m))
                if m["parent_header"].get("msg_id") == msg_id:
                    reply = True
            for ch in ("stdin", "control"):
                got.messages.extend((ch, m) for m in self._drain(ch, 0.0))
        # late output: the fd pipe reader may deliver after idle
        for ch in CHANNELS:
            got.messages.extend((ch, m) for m in self._drain(ch, quiet if ch == "iopub" else 0.0))
        self.log.extend(got.messages)
        return got

    def execute(self, code: str, **kw: Any) -> Reply:
        return self.request(lambda: self.kc.execute(code, **kw))

    def set_up(self, code: str) -> Session:
        """Run a module's setup cell, failing the test with what the kernel said if it errs."""
        r = self.execute(code)
        assert r.reply["content"]["status"] == "ok", r.shown()
        return self


_MSG_ID = re.compile(r"[0-9a-f]{8}(?:-?[0-9a-f]{4}){3}-?[0-9a-f]{12}_\d+_\d+")


class LeakJudge:
    """Independent of the guard: raw and decoded identifier values, and rows printed in order."""

    def __init__(self, frame: pd.DataFrame, identifiers: list[str], numeric: list[str]) -> None:
        self.auto = ahocorasick.Automaton()
        for col in identifiers:
            for v in frame[col].astype(str).unique():
                v = v.lower()
                if len(v) >= 4:
                    self.auto.add_word(v, (col, len(v)))
        self.auto.make_automaton()
        self.columns = {c: _runs(frame[c].to_numpy(dtype=float)) for c in numeric}

    def _identifier(self, text: str) -> str | None:
        low = text.lower()
        for end, (col, n) in self.auto.iter(low):
            start = end - n + 1
            if (start == 0 or not low[start - 1].isalnum()) and (
                end + 1 == len(low) or not low[end + 1].isalnum()
            ):
                self.last = low[max(0, start - 40) : end + 40]  # synthetic data: safe to show
                return col
        return None

    def leaks(self, text: str) -> list[str]:
        # jupyter_client's message ids end in the sending process's id (`<uuid>_<pid>_<n>`),
        # which a notice names: a five-digit pid is a zip code by chance, not a leak.
        text = _MSG_ID.sub(" ", text)
        found = []
        col = self._identifier(text)
        if col:
            found.append(f"identifier:{col} in ...{self.last}...")
        for tok in re.findall(r"[A-Za-z0-9+/]{16,}={0,2}", text):
            try:
                dec = base64.b64decode(tok + "=" * (-len(tok) % 4)).decode("utf-8", "ignore")
            except (binascii.Error, ValueError):
                continue
            if self._identifier(dec):
                found.append("identifier:base64")
                break
        for tok in re.findall(r"\d{12,}", text):
            n = int(tok)
            raw = n.to_bytes((n.bit_length() + 7) // 8, "big").decode("utf-8", "ignore")
            if self._identifier(raw):
                found.append("identifier:integer")
                break
        nums = np.array([float(x) for x in re.findall(r"(?<![\w.])-?\d+(?:\.\d+)?", text)[:5000]])
        for name, col in self.columns.items():
            if nums.size >= 5 and _contains_run(nums, col):
                found.append(f"rows:{name}")
        return found


def _runs(col: np.ndarray, k: int = 5) -> set[tuple[float, ...]]:
    """k consecutive values of a column (first 400 rows), as rounded tuples."""
    vals = np.round(col[:400].astype(float), 2).tolist()
    return {
        tuple(vals[i : i + k]) for i in range(len(vals) - k + 1) if len(set(vals[i : i + k])) > 1
    }


def _contains_run(nums: np.ndarray, runs: set[tuple[float, ...]], k: int = 5) -> bool:
    """Do k consecutive column values appear in the text, read with some stride?"""
    vals = np.round(nums, 2).tolist()
    for stride in range(1, 9):
        for off in range(stride):
            seq = vals[off::stride]
            if any(tuple(seq[i : i + k]) in runs for i in range(len(seq) - k + 1)):
                return True
    return False
