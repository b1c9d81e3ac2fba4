"""An HTML report on one session ledger, for a reviewer who would rather look than read.

The report is a notebook rendered by nbconvert: the verification verdict (and the first bad
entry when there is one), what the session promised (header), a timeline, a chart of the guard's
decisions by rule, the signed checkpoints and the chain anchors. Everything shown from the ledger
is HTML-escaped: a ledger is untrusted input until it verifies, and even then its strings are data.
matplotlib, nbformat and nbconvert are imported only here.
"""

from __future__ import annotations

import base64
import html
import importlib
import io
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bedside.errors import Error, LedgerError

from . import entries as E
from .note import parse_note
from .verify import VerifyReport, iter_entries, verify_ledger

_TIMELINE_ROWS = 400  # the timeline shows the first rows of every kind but keeps memory flat


class _Timeline:
    """Bounded summary of the entries, filled while the ledger streams past."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str, str, str]] = []
        self.omitted = 0
        self.by_rule: Counter[tuple[str, str]] = Counter()
        self.by_layer: Counter[tuple[str, str, str]] = Counter()
        self.first_ts = ""
        self.last_ts = ""

    def __call__(self, index: int, entry: dict[str, Any]) -> None:
        kind = entry.get("kind", "?")
        ts = str(entry.get("ts", ""))
        self.first_ts = self.first_ts or ts
        self.last_ts = ts
        if kind == E.OUTPUT:
            self.by_rule[(str(entry.get("decision")), str(entry.get("rule")))] += 1
            self.by_layer[
                (str(entry.get("decision")), str(entry.get("rule")), str(entry.get("layer")))
            ] += 1
        rare = kind not in (E.EXECUTE_REQUEST, E.OUTPUT)
        if len(self.rows) < _TIMELINE_ROWS or (rare and len(self.rows) < 2 * _TIMELINE_ROWS):
            self.rows.append((index, ts, kind, _describe(entry)))
        else:
            self.omitted += 1


def _describe(entry: dict[str, Any]) -> str:
    kind = entry.get("kind")
    if kind == E.HEADER:
        return f"policy {entry['policy'].get('id')} ({entry['policy'].get('digest')})"
    if kind == E.EXECUTE_REQUEST:
        signed = "signed by the researcher" if entry.get("researcher_sig") else "unsigned"
        return f"cell {entry['msg_id']}, {signed}, code {entry['code'][:12]}…"
    if kind == E.OUTPUT:
        claim = ""
        if "kernel_decision" in entry:
            claim = (
                f"; kernel claimed {entry['kernel_decision']} ({entry['kernel_rule']}), "
                f"sentry {entry['sentry_decision']}"
            )
        return (
            f"{entry['msg_type']} → {entry['decision']} (rule {entry['rule']}, "
            f"{entry['layer']}, {entry['bytes']} B{claim})"
        )
    if kind == E.CHECKPOINT:
        names = ", ".join(s.name for s in parse_note(entry["note"]).signatures)
        return f"signed tree head of {entry['size']} entries by {names}"
    if kind == E.ANCHOR:
        return f"anchored on chain {entry['chain_id']} in tx {entry['tx']} (block {entry['block']})"
    if kind == E.RELEASE:
        return f"artifact {entry['name']} {entry['digest']} → {entry['decision']}"
    if kind == E.METERING:
        return ", ".join(f"{k} {v}" for k, v in sorted(entry.get("counters", {}).items()))
    if kind in (E.SEAL, E.INTERRUPTED):
        return str(entry.get("reason", ""))
    return ""


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _chart(by_rule: Counter[tuple[str, str]]) -> bytes | None:
    if not by_rule:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rules = sorted({rule for _, rule in by_rule})
    decisions = [d for d in E.DECISIONS if any(k[0] == d for k in by_rule)]
    colours = {"released": "#2e7d32", "redacted": "#f9a825", "blocked": "#c62828"}
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 1.4 + 0.45 * len(rules)))
    left = [0] * len(rules)
    for decision in decisions:
        counts = [by_rule.get((decision, rule), 0) for rule in rules]
        ax.barh(rules, counts, left=left, label=decision, color=colours.get(decision))
        left = [a + b for a, b in zip(left, counts, strict=True)]
    ax.set_xlabel("outputs")
    ax.set_title("Guard decisions by rule")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_report(
    ledger: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    keys: Sequence[str] = (),
    openings: str | os.PathLike[str] | None = None,
    rpc: str | None = None,
    confirmations: int | None = None,
    progress: bool = False,
) -> bool:
    """Verify `ledger` and write the HTML report to `output`; returns whether it verified."""
    path = Path(ledger)
    timeline = _Timeline()
    report: VerifyReport | None = None
    failure: Error | None = None
    try:
        report = verify_ledger(
            path,
            keys=list(keys),
            openings=openings,
            rpc=rpc,
            confirmations=confirmations,
            on_entry=timeline,
            progress=progress,
        )
    except Error as exc:
        failure = exc
        timeline = _Timeline()
        try:
            for index, entry in iter_entries(path):
                timeline(index, entry)
        except (Error, ValueError, KeyError, TypeError):
            pass  # show what could be read before the damage
    html_text = _render(path, report, failure, timeline)
    try:
        Path(output).write_text(html_text, encoding="utf-8")
    except OSError as exc:
        raise LedgerError(f"{output}: cannot write the report: {exc.strerror}") from exc
    return failure is None


def _render(
    path: Path, report: VerifyReport | None, failure: Error | None, timeline: _Timeline
) -> str:
    nbformat: Any = importlib.import_module("nbformat")
    exporter_mod: Any = importlib.import_module("nbconvert")

    nb = nbformat.v4.new_notebook()
    nb.metadata["title"] = f"bedside ledger report: {path.name}"

    def block(html_text: str, png: bytes | None = None) -> None:
        cell = nbformat.v4.new_code_cell("")
        data: dict[str, Any] = {"text/html": html_text}
        if png is not None:
            data = {"image/png": base64.b64encode(png).decode()}
        cell.outputs.append(nbformat.v4.new_output("display_data", data=data))
        nb.cells.append(cell)

    style = (
        "<style>.bedside-ok{background:#e8f5e9;border-left:6px solid #2e7d32;padding:8px}"
        ".bedside-fail{background:#ffebee;border-left:6px solid #c62828;padding:8px}"
        "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;"
        "text-align:left;font-family:monospace;font-size:12px}</style>"
    )
    if failure is None and report is not None:
        verdict = (
            f"<div class='bedside-ok'><b>VERIFIED</b>: {report.size} entries, root "
            f"<code>{report.root.hex()}</code>; latest signature covers {report.signed_size} "
            f"entries.</div>"
        )
    else:
        assert failure is not None
        verdict = (
            f"<div class='bedside-fail'><b>VERIFICATION FAILED</b>: "
            f"{html.escape(failure.diagnostics())}</div>"
        )
    block(f"{style}<h1>Session ledger {html.escape(path.name)}</h1>{verdict}")

    if report is not None:
        header = report.header or {}
        rows: list[tuple[str, Any]] = [
            ("origin", report.origin),
            ("session", report.session),
            ("entries", report.size),
            ("time", f"{timeline.first_ts} → {timeline.last_ts}"),
            (
                "policy",
                f"{header.get('policy', {}).get('id')} {header.get('policy', {}).get('digest')}",
            ),
            ("kernel environment", header.get("kernel_env", "")),
            ("intent", header.get("intent", {})),
            ("sealed", "yes" if report.sealed else "no"),
            (
                "openings",
                f"{report.openings_checked} match, {report.openings_withheld} withheld, "
                f"{report.openings_missing_count} missing",
            ),
            (
                "trusted keys",
                ", ".join(report.trusted_keys)
                + (" (named by the ledger itself)" if report.self_asserted_keys else ""),
            ),
        ]
        for role, vkey in sorted(header.get("identities", {}).items()):
            rows.append((f"identity: {role}", vkey))
        block("<h2>Session</h2>" + _table(["", ""], rows))
        if report.warnings:
            block(
                "<h3>Warnings</h3><ul>"
                + "".join(f"<li>{html.escape(w)}</li>" for w in report.warnings)
                + "</ul>"
            )

    chart = _chart(timeline.by_rule)
    if chart is not None:
        block("<h2>Guard decisions</h2>")
        block("", png=chart)
        block(
            _table(
                ["decision", "rule", "layer", "outputs"],
                [(d, r, la, n) for (d, r, la), n in sorted(timeline.by_layer.items())],
            )
        )

    if report is not None:
        cps = [(c.index, c.size, c.root.hex(), ", ".join(c.signers)) for c in report.checkpoints]
        block("<h2>Signed checkpoints</h2>" + _table(["entry", "size", "root", "signed by"], cps))
        anchors = [
            (
                a["index"],
                a["checkpoint_index"],
                a["chain_id"],
                a["contract"],
                a["tx"],
                a["block"],
                a["status"],
            )
            for a in report.anchors
        ]
        block(
            "<h2>Chain anchors</h2>"
            + (
                _table(
                    ["entry", "checkpoint", "chain", "contract", "tx", "block", "status"], anchors
                )
                if anchors
                else "<p>This session was not anchored on a chain.</p>"
            )
        )

    more = (
        f"<p>{timeline.omitted} further execute/output entries are not listed.</p>"
        if timeline.omitted
        else ""
    )
    block("<h2>Timeline</h2>" + _table(["entry", "time", "kind", "what"], timeline.rows) + more)

    exporter = exporter_mod.HTMLExporter(
        exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True
    )
    body, _ = exporter.from_notebook_node(nb)
    return str(body)
