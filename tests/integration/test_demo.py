"""`bedside demo` end to end, as a process, the way a data scientist and a reviewer use it.

The demo runs as `make demo` runs it (`bedside demo`), in a temp directory, with JupyterLab on a
free port, its stdin a pseudo-terminal and in a process group of its own, as in a terminal. The
test waits for what it prints (what to open and the token), then:

1. runs notebooks/01-walkthrough.ipynb cell by cell through that JupyterLab's kernel websocket
   with its token (the protocol JupyterLab speaks): the aggregate is released, the leak is
   blocked with its notice and no identifier value reaches the client;
2. seals and anchors the session through `/bedside/sessions/{id}/…` as the notebook tells the
   user to, downloads the ledger and openings, and checks the anchor against the demo's chain;
3. runs notebooks/02-reviewer.ipynb on a local kernel over what it downloaded;
4. sends SIGINT to the demo's process group (Ctrl-C in the terminal) and checks that the demo
   exits 0, that no process it started (JupyterLab, `bedside gateway start`, Enterprise
   Gateway, sentries, sandboxed kernels, ganache) is left, and that both ledgers on disk pass
   `bedside ledger verify`.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import psutil
import pytest

from bedside.errors import GatewayError
from bedside.extension._headless import KernelSession, free_port
from bedside.gateway.eg import eg_executable
from bedside.ledger import verify_ledger

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
BIN = Path(sys.executable).parent
GANACHE = REPO / "node_modules" / "ganache" / "dist" / "node" / "cli.js"


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Demo:
    """`bedside demo` as a child process; its output read line by line in a thread."""

    def __init__(self, work: Path, port: int) -> None:
        self.work = work
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        primary, secondary = pty.openpty()
        self._pty = primary
        env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
        env.pop("KERNEL_USERNAME", None)
        self.proc = subprocess.Popen(
            [str(BIN / "bedside"), "demo", "--dir", str(work), "--port", str(port),
             "--patients", "600"],
            stdin=secondary,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # the terminal's foreground process group
            # As a shell's background job or a CI runner starts it: SIGINT ignored, which
            # Python keeps unless the demo sets its handler; Ctrl-C must stop it all the same.
            preexec_fn=_ignore_sigint,  # noqa: PLW1509 (no threads in the test before this)
        )  # fmt: skip
        os.close(secondary)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None:
                pytest.fail(f"bedside demo exited ({self.proc.wait()}):\n{self.log()}")
            if marker in line:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"bedside demo did not print {marker!r} in time:\n{self.log()}")

    def field(self, name: str) -> str:
        for line in self.output:
            if line.strip().startswith(name + ":"):
                return line.split(":", 1)[1].strip()
        raise AssertionError(f"the demo printed no {name!r} line:\n{self.log()}")

    def log(self) -> str:
        text = "\n".join(self.output)
        for name in ("gateway.log", "jupyterlab.log", "chain.log"):
            path = self.work / "logs" / name
            if path.exists():
                text += f"\n--- {name} ---\n" + path.read_text(errors="replace")[-4000:]
        return text

    def kill(self) -> None:
        """Last resort for a failed test: the whole tree, by the pids captured from it."""
        with_children = [self.proc.pid]
        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
            with_children += [p.pid for p in tree]
        except psutil.NoSuchProcess:
            pass
        for pid in with_children:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait()
        os.close(self._pty)


def identifier_values(work: Path) -> list[str]:
    frame = pd.read_parquet(work / "hospital" / "data" / "patients.parquet")
    return [str(v) for col in ("mrn", "name", "phone") for v in frame[col]]


async def walkthrough(url: str, token: str, review: Path) -> dict[str, Any]:
    """Run the walkthrough's code cells through the demo's JupyterLab, seal, anchor, download."""
    nb = nbformat.read(NOTEBOOKS / "01-walkthrough.ipynb", as_version=4)
    client = KernelSession(url, token)
    await client.start("01-walkthrough.ipynb", nb.metadata["kernelspec"]["name"])
    cells: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = []
    try:
        await client.request("kernel_info_request", {}, timeout=150)
        for cell in nb.cells:
            if cell.cell_type == "code":
                reply, iopub = await client.execute(cell.source, timeout=120)
                cells.append((cell.source, reply, iopub))
        path = f"/bedside/sessions/{client.kernel_id}"
        sealed = await client.api("POST", path + "/seal")
        anchored = await client.api("POST", path + "/anchor", timeout=120)
        (review / "session.ledger").write_bytes(await client.api("GET", path + "/ledger"))
        (review / "session.openings").write_bytes(await client.api("GET", path + "/openings"))
    finally:
        # as a user leaves it: the kernel runs on at the hospital until Ctrl-C stops the demo
        await client.close(shutdown=False)
    return {"cells": cells, "sealed": sealed, "anchored": anchored, "kernel": client.kernel_id}


async def run_notebook(opened: str, name: str) -> list[str]:
    """Run `name`'s code cells in the JupyterLab at `opened` (URL?token=…); their text outputs.

    A cell that fails, or an output a guard touched, fails the test: the reviewer's kernels are
    local and see everything."""
    match = re.fullmatch(r"(http://127\.0\.0\.1:\d+)/lab/tree/\S+\?token=(\S+)\s.*", opened)
    assert match, opened
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = KernelSession(match.group(1), match.group(2))
    await client.start(name, nb.metadata["kernelspec"]["name"])
    texts: list[str] = []
    try:
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            reply, iopub = await client.execute(cell.source, timeout=120)
            assert reply["content"]["status"] == "ok", (cell.source, reply["content"])
            for msg in iopub:
                content = msg["content"]
                texts.append(content.get("text", ""))
                texts.append(content.get("data", {}).get("text/plain", ""))
                assert msg["header"]["msg_type"] != "error", content
    finally:
        await client.close()
    return texts


def reviewer_cli(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        [str(BIN / "bedside"), *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def record_offsets(path: Path) -> list[int]:
    """Where each record of a ledger file starts (docs/ledger-format.md)."""
    from bedside.ledger._records import LEDGER_MAGIC, Record, iter_records
    from bedside.ledger.log import read_meta

    with path.open("rb") as fh:
        _, start = read_meta(fh, LEDGER_MAGIC, path)
        return [r.offset for r in iter_records(fh, start) if isinstance(r, Record)]


def bedside_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "bedside"), *args], capture_output=True, text=True, timeout=120
    )


def test_demo_end_to_end(tmp_path: Path) -> None:
    try:
        eg_executable()
    except GatewayError as exc:
        pytest.fail(f"the demo needs Enterprise Gateway (`make eg-venv`): {exc}")
    if not GANACHE.exists() or shutil.which("node") is None:
        pytest.fail("the demo's chain needs node and ganache (`make npm`)")
    work = tmp_path / "demo"
    review = tmp_path / "review"
    review.mkdir()
    demo = Demo(work, free_port())
    try:
        demo.wait_for("Press Ctrl-C", timeout=150)
        opened = demo.field("Open")
        token = demo.field("Token")
        match = re.fullmatch(r"(http://127\.0\.0\.1:\d+)/lab/tree/01-walkthrough\.ipynb\?token=(\S+)",
                             opened)  # fmt: skip
        assert match and match.group(2) == token, opened
        url = match.group(1)
        chain = demo.field("Chain")
        rpc = chain.split()[0]
        contract = re.search(r"BedsideAnchor at (0x[0-9a-fA-F]{40})", chain)
        assert rpc.startswith("http://127.0.0.1:") and contract, chain

        run = asyncio.run(walkthrough(url, token, review))

        # the data scientist's view: every message verified, the aggregate out, the leak not
        by_source = {src: (reply, iopub) for src, reply, iopub in run["cells"]}
        for src, (reply, iopub) in by_source.items():
            for msg in [reply, *iopub]:
                assert msg["metadata"]["bedside"]["verified"] is True, (src, msg["metadata"])
        aggregate = next(v for k, v in by_source.items() if "groupby" in k)
        assert aggregate[0]["content"]["status"] == "ok"
        released = [m for m in aggregate[1] if m["header"]["msg_type"] == "execute_result"]
        assert released, aggregate
        # it comes back; its counts rounded to the nearest 5 (the kernel says so), and the
        # sentry let it out
        decision = released[0]["metadata"]["bedside"]
        assert decision["decision"] == "released" or decision["rule"] == "rounding", decision
        # the ledger records the stricter of the two layers: the kernel's rounding (redacted)
        # beside the sentry's own verdict (released)
        entry = decision["receipt"]["entries"][-1]["entry"]
        assert entry.get("sentry_decision", entry["decision"]) == "released", entry
        assert entry["decision"] == decision["decision"], (entry, decision)
        assert "mean" in json.dumps(released[0]["content"]["data"])
        leak = next(v for k, v in by_source.items() if "patients.head()" in k)
        notices = [
            m["metadata"]["bedside"]
            for m in [leak[0], *leak[1]]
            if m["metadata"]["bedside"].get("decision") in ("blocked", "redacted")
        ]
        assert notices, leak
        received = json.dumps([[r, i] for _, r, i in run["cells"]]).lower()
        assert not [v for v in identifier_values(work) if v.lower() in received]
        training = next(v for k, v in by_source.items() if "torch" in k)
        assert "training loss" in json.dumps(training[1])

        # sealed, and the cosigned checkpoint anchored on the demo's chain
        assert run["sealed"]["state"] == "sealed"
        anchor = run["anchored"]["anchor"]
        assert anchor["kind"] == "anchor" and anchor["chain_id"] == 1337
        assert anchor["contract"].lower() == contract.group(1).lower()
        custodian = work / "secrets" / "custodian.pub"
        keys = [custodian.read_text().strip(), run["sealed"]["researcher_key"]]
        verify_ledger(
            review / "session.ledger",
            keys,
            openings=review / "session.openings",
            rpc=rpc,
            contract=contract.group(1),
        )

        # the reviewer's commands (docs/reviewer/getting-started.md), the chain still running
        (review / "custodian.pub").write_text(custodian.read_text())
        (review / "researcher.pub").write_text(run["sealed"]["researcher_key"] + "\n")
        verified = reviewer_cli(review, "ledger", "verify", "session.ledger", "--key",
                                "custodian.pub", "--key", "researcher.pub", "--openings",
                                "session.openings", "--rpc", rpc)  # fmt: skip
        assert "— verified on chain" in verified and "sealed: yes" in verified, verified
        reviewer_cli(review, "ledger", "prove", "session.ledger", "--entry", "12", "--openings",
                     "session.openings", "-o", "entry12.proof.json")  # fmt: skip
        proved = reviewer_cli(review, "ledger", "check-proof", "entry12.proof.json", "--key",
                              "custodian.pub")  # fmt: skip
        assert proved.startswith("OK: entry 12"), proved
        reported = reviewer_cli(review, "ledger", "report", "session.ledger", "--key",
                                "custodian.pub", "--openings", "session.openings", "-o",
                                "report.html")  # fmt: skip
        assert "report written (verified)" in reported, reported

        # the reviewer notebook, in the reviewer's JupyterLab (local kernels) the demo printed
        reviewed = asyncio.run(run_notebook(demo.field("Review"), "02-reviewer.ipynb"))
        text = "\n".join(reviewed)
        assert "OK —" in text and "sealed: yes" in text, text
        assert re.search(r"anchor \(entry \d+\): checkpoint entry \d+ on chain 1337", text), text
        assert "replayed.ipynb:" in text and "report.html:" in text, text
        assert (work / "notebooks" / "replayed.ipynb").exists()

        # Ctrl-C: what the demo started, captured before the signal, must all be gone after it
        tree = psutil.Process(demo.proc.pid).children(recursive=True)
        names = " ".join(" ".join(p.cmdline()) for p in tree)
        for part in ("jupyterlab", "gateway start", "jupyter-enterprisegateway", "sentry",
                     "bwrap", "ganache"):  # fmt: skip
            assert part in names, f"{part} is not running under the demo: {names}"
        os.killpg(demo.proc.pid, signal.SIGINT)
        status = demo.proc.wait(timeout=150)
        assert status == 0, demo.log()
        _, alive = psutil.wait_procs(tree, timeout=10)
        alive = [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, [" ".join(p.cmdline()) for p in alive]
        assert "bedside demo: stopped" in "\n".join(demo.output)
    finally:
        if demo.proc.poll() is None:
            demo.kill()
        else:
            os.close(demo._pty)

    # tampering with the downloaded copy names the first bad entry
    data = (review / "session.ledger").read_bytes()
    starts = record_offsets(review / "session.ledger")
    flipped = bytearray(data)
    flipped[starts[20] + 8] ^= 0x01  # a byte inside entry 20's payload
    (review / "flipped.ledger").write_bytes(bytes(flipped))
    (review / "dropped.ledger").write_bytes(data[: starts[20]] + data[starts[21] :])
    for name, message in (
        ("flipped.ledger", "FAILED: entry 20: record checksum mismatch"),
        ("dropped.ledger", "FAILED: entry 20: entry says it is entry 21"),
    ):
        result = bedside_cli("ledger", "verify", str(review / name), "--key", str(custodian))
        assert result.returncode == 1, result.stdout + result.stderr
        assert message in result.stdout + result.stderr, result.stdout + result.stderr

    # both copies of the ledger on disk verify with the CLI a reviewer uses
    mine = work / "sessions" / run["kernel"] / "session.ledger"
    theirs = work / "hospital-state" / run["sealed"]["session"] / "session.ledger"
    for ledger in (mine, theirs):
        result = bedside_cli("ledger", "verify", str(ledger), "--key", str(custodian))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "OK" in result.stdout
