"""Rebuild a session's notebook from its ledger, and optionally re-run it to see what reproduces.

Each execute request becomes a code cell (its code taken from the openings and checked against
the commitment); each output entry becomes that cell's output: released outputs as they left the
hospital, blocked ones (whose openings never leave) as a notice naming the rule. With
`execute=True` the notebook runs again through nbclient, every output message is captured as the
sentry would have seen it, and its commitment is recomputed with the ledger's salt: equal means
the output reproduced byte for byte. Outputs that are not deterministic (timings, random draws
without a seed, tracebacks with paths) will differ; that is reported, not hidden.

nbformat/nbclient are imported only when this runs, so `bedside.ledger` stays Jupyter-free.
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bedside.errors import LedgerError, LedgerIntegrityError

from . import entries as E
from .commitment import DOMAIN_OUTPUT, commit, open_commitment
from .entries import output_committed_bytes
from .openings import Opening, read_openings
from .verify import iter_entries

#: iopub message types that become notebook outputs.
OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error", "update_display_data")


@dataclass
class OutputCheck:
    entry: int
    msg_type: str
    decision: str
    status: str  # reproduced | differs | missing | not compared: <why>


@dataclass
class CellReplay:
    cell: int
    entry: int
    msg_id: str
    outputs: list[OutputCheck] = field(default_factory=list)
    extra_outputs: int = 0
    error: str | None = None


@dataclass
class ReplayResult:
    notebook: Path
    cells: list[CellReplay]
    executed: bool
    executed_notebook: Path | None = None

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for cell in self.cells:
            for out in cell.outputs:
                key = out.status.split(":")[0]
                counts[key] = counts.get(key, 0) + 1
        return counts

    @property
    def ok(self) -> bool:
        """Rebuilt, and (when executed) every compared output reproduced."""
        if not self.executed:
            return True
        return not any(o.status in ("differs", "missing") for c in self.cells for o in c.outputs)

    def summary(self) -> str:
        lines = [f"{self.notebook}: {len(self.cells)} cells rebuilt from the ledger"]
        if self.executed:
            counts = self.counts
            lines.append(
                f"re-run ({self.executed_notebook}): "
                + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            )
            for cell in self.cells:
                for o in cell.outputs:
                    lines.append(
                        f"  cell {cell.cell} (entry {cell.entry}) output entry {o.entry} "
                        f"[{o.msg_type}, {o.decision}]: {o.status}"
                    )
                if cell.extra_outputs:
                    lines.append(f"  cell {cell.cell}: {cell.extra_outputs} new output(s)")
                if cell.error:
                    lines.append(f"  cell {cell.cell}: {cell.error}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "notebook": str(self.notebook),
            "executed": self.executed,
            "executed_notebook": str(self.executed_notebook) if self.executed_notebook else None,
            "ok": self.ok,
            "counts": self.counts,
            "cells": [
                {
                    "cell": c.cell,
                    "entry": c.entry,
                    "msg_id": c.msg_id,
                    "error": c.error,
                    "extra_outputs": c.extra_outputs,
                    "outputs": [o.__dict__ for o in c.outputs],
                }
                for c in self.cells
            ],
        }


@dataclass
class _Cell:
    entry: int
    msg_id: str
    code: str
    outputs: list[tuple[int, dict[str, Any], Opening | None]] = field(default_factory=list)


def _nbformat() -> Any:
    """nbformat, imported on first use (it is untyped, hence Any)."""
    return importlib.import_module("nbformat")


def _opened(entry: dict[str, Any], index: int, opening: Opening | None) -> bytes | None:
    if opening is None:
        return None
    field_name, domain = E.COMMITTED_FIELD[entry["kind"]]
    if (opening.field, opening.domain) != (field_name, domain):
        raise LedgerIntegrityError("opening is for another field or domain", index=index)
    open_commitment(domain, opening.content, opening.salt, entry[field_name], index=index)
    return opening.content


def _collect(ledger: Path, openings: dict[int, Opening]) -> list[_Cell]:
    cells: list[_Cell] = []
    by_msg: dict[str, _Cell] = {}
    for index, entry in iter_entries(ledger):
        kind = entry.get("kind")
        if kind == E.EXECUTE_REQUEST:
            raw = _opened(entry, index, openings.get(index))
            code = (
                raw.decode("utf-8", errors="replace")
                if raw is not None
                else f"# bedside: the code of entry {index} has no opening in this file"
            )
            cell = _Cell(index, entry["msg_id"], code)
            cells.append(cell)
            by_msg[entry["msg_id"]] = cell
        elif kind == E.OUTPUT and entry["channel"] == "iopub":
            if entry["msg_type"] not in OUTPUT_TYPES:
                continue
            cell_for = by_msg.get(entry["parent"])
            if cell_for is None:
                continue  # output of a message not in this ledger (e.g. a comm)
            opening = openings.get(index)
            _opened(entry, index, opening)
            cell_for.outputs.append((index, entry, opening))
    return cells


def _notice(index: int, entry: dict[str, Any]) -> dict[str, Any]:
    decision = entry["decision"]
    why = "blocked" if decision == "blocked" else "not opened in this openings file"
    text = (
        f"bedside: output {why} (entry {index}, {entry['msg_type']}, rule {entry['rule']}, "
        f"layer {entry['layer']}, {entry['bytes']} bytes); the ledger holds only its "
        f"commitment {entry['content'][:16]}…"
    )
    return {
        "output_type": "display_data",
        "data": {"text/plain": text, "text/markdown": f"> **{text}**"},
        "metadata": {"bedside": {"entry": index, "decision": decision, "rule": entry["rule"]}},
    }


def _to_output(index: int, entry: dict[str, Any], raw: bytes) -> dict[str, Any]:
    msg = json.loads(raw)
    content = msg["content"]
    msg_type = msg["msg_type"]
    meta = {"bedside": {"entry": index, "decision": entry["decision"], "rule": entry["rule"]}}
    if msg_type == "stream":
        return {"output_type": "stream", "name": content["name"], "text": content["text"]}
    if msg_type == "error":
        return {
            "output_type": "error",
            "ename": content.get("ename", ""),
            "evalue": content.get("evalue", ""),
            "traceback": content.get("traceback", []),
        }
    out: dict[str, Any] = {
        "output_type": "execute_result" if msg_type == "execute_result" else "display_data",
        "data": content.get("data", {}),
        "metadata": {**content.get("metadata", {}), **meta},
    }
    if msg_type == "execute_result":
        out["execution_count"] = content.get("execution_count")
    return out


def build_notebook(cells: list[_Cell], ledger: Path) -> Any:
    nbformat = _nbformat()
    nb = nbformat.v4.new_notebook()
    nb.metadata["bedside"] = {"ledger": ledger.name, "rebuilt_by": "bedside ledger replay"}
    for cell in cells:
        code = nbformat.v4.new_code_cell(cell.code)
        code.metadata["bedside"] = {"entry": cell.entry, "msg_id": cell.msg_id}
        for index, entry, opening in cell.outputs:
            if opening is None or entry["decision"] == "blocked":
                code.outputs.append(nbformat.from_dict(_notice(index, entry)))
            else:
                code.outputs.append(nbformat.from_dict(_to_output(index, entry, opening.content)))
        nb.cells.append(code)
    return nb


def _execute(nb: Any, kernel: str, timeout: int, cwd: Path) -> list[list[dict[str, Any]]]:
    """Run `nb`; return, per cell, the iopub output messages as the sentry would commit them."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    captured: list[list[dict[str, Any]]] = [[] for _ in nb.cells]

    class _Capturing(NotebookClient):
        def process_message(self, msg: dict[str, Any], cell: Any, cell_index: int) -> Any:
            if msg["msg_type"] in OUTPUT_TYPES:
                captured[cell_index].append(
                    {
                        "msg_type": msg["msg_type"],
                        "content": msg["content"],
                        "buffers": [bytes(b) for b in msg.get("buffers") or []],
                    }
                )
            return super().process_message(msg, cell, cell_index)

    client = _Capturing(
        nb,
        kernel_name=kernel,
        timeout=timeout,
        allow_errors=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:  # pragma: no cover - allow_errors keeps going
        raise LedgerError(f"replay stopped: {exc}") from exc
    except Exception as exc:
        # nbclient raises plain exceptions for a missing kernelspec or a dead kernel.
        raise LedgerError(f"cannot run the notebook with kernel {kernel!r}: {exc}") from exc
    return captured


def _compare(cells: list[_Cell], captured: list[list[dict[str, Any]]]) -> list[CellReplay]:
    results = []
    for n, (cell, new) in enumerate(zip(cells, captured, strict=True)):
        result = CellReplay(n, cell.entry, cell.msg_id)
        for k, (index, entry, opening) in enumerate(cell.outputs):
            if k >= len(new):
                status = "missing"
            elif entry["decision"] == "redacted":
                status = "not compared: redacted by the guard before it was committed"
            elif opening is None:
                status = "not compared: no opening (blocked output)"
            else:
                msg = new[k]
                content = dict(msg["content"])
                if msg["msg_type"] == "execute_result":
                    # The prompt number depends on the cells run before; use the original's.
                    original = json.loads(opening.content)["content"]
                    content["execution_count"] = original.get("execution_count")
                raw = output_committed_bytes(
                    channel="iopub",
                    msg_type=msg["msg_type"],
                    content=content,
                    buffers=msg["buffers"],
                )
                again, _ = commit(DOMAIN_OUTPUT, raw, salt=opening.salt)
                status = "reproduced" if again == entry["content"] else "differs"
            result.outputs.append(OutputCheck(index, entry["msg_type"], entry["decision"], status))
        result.extra_outputs = max(0, len(new) - len(cell.outputs))
        errors = [m for m in new if m["msg_type"] == "error"]
        if errors:
            result.error = f"raised {errors[0]['content'].get('ename', 'an error')}"
        results.append(result)
    return results


def replay(
    ledger: str | os.PathLike[str],
    openings: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    execute: bool = False,
    kernel: str = "python3",
    timeout: int = 600,
) -> ReplayResult:
    """Write the rebuilt notebook to `output`; with `execute`, also re-run and compare.

    The re-run notebook is written beside it as `<name>.replayed.ipynb`.
    """
    nbformat = _nbformat()
    lp, out = Path(ledger), Path(output)
    cells = _collect(lp, read_openings(openings))
    nb = build_notebook(cells, lp)
    nbformat.write(nb, out)
    result = ReplayResult(
        out, [CellReplay(n, c.entry, c.msg_id) for n, c in enumerate(cells)], executed=False
    )
    if not execute:
        return result
    run = build_notebook(cells, lp)
    for cell in run.cells:
        cell.outputs = []
    captured = _execute(run, kernel, timeout, out.parent)
    executed = out.with_suffix(".replayed.ipynb")
    nbformat.write(run, executed)
    return ReplayResult(out, _compare(cells, captured), executed=True, executed_notebook=executed)
