"""Shared pieces of the sentry tests: a hospital with the sentry's policy, a running sentry, a
client that keeps every message it receives, receipts and the researcher's mirror ledger.

The synthetic patients and the leak oracle (deliberately independent of `bedside.policy`, so a
guard bug in the shared scanner cannot hide itself) come from tests/_hospital.py.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

import pandas as pd
from jupyter_client import BlockingKernelClient

# The repo root, for tests._hospital: bench/sentry_relay.py imports this module by its folder alone.
if str(Path(__file__).resolve().parents[2]) not in sys.path:
    sys.path.append(str(Path(__file__).resolve().parents[2]))

# (the sentry tests import these from here)
from tests._hospital import (  # noqa: E402,F401
    IDENTIFIERS,
    Hospital,
    LeakOracle,
    hospital_policy,
    make_patients,
    notices,
    write_hospital,
)


def make_hospital(
    root: Path,
    *,
    frame: pd.DataFrame,
    max_cells: int = 2000,
    egress: int = 50_000_000,
    max_output_bytes: int = 1_000_000,
) -> Hospital:
    text = hospital_policy(max_cells=max_cells, egress=egress, max_output_bytes=max_output_bytes)
    return write_hospital(root, frame, text)


class CaptureSocket:
    """Stands in for a zmq socket of an in-process sentry: keeps the frames it is given
    (copied to bytes unless `copy=False`, which the benchmarks use to time the sentry alone)."""

    def __init__(self, copy: bool = True) -> None:
        self.copy = copy
        self.sent: list[list[Any]] = []

    def send_multipart(self, frames: list[Any], *args: Any, **kwargs: Any) -> None:
        self.sent.append([bytes(f) for f in frames] if self.copy else frames)


def in_process_sentry(
    hospital: Hospital, root: Path, *, guard: bool = True, copy: bool = True
) -> tuple[Any, Any, Any]:
    """(sentry, client session, kernel session): a `Sentry` set up as its `run` would, with a
    real policy, guard, hospital ledger and custodian key, but capture sockets in place of zmq,
    so that a test or a benchmark feeds it frames (`_from_client`, `_from_kernel`) and reads
    what it sent (`sentry._sockets[name].sent`). `guard=False`: the relay before its guard is
    built. The caller closes `sentry.ledger`."""
    import uuid

    from jupyter_client.session import Session

    from bedside.gateway._receipts import HospitalLedger
    from bedside.gateway._session import policy_ceiling
    from bedside.gateway.sentry import Sentry
    from bedside.ledger import Signer
    from bedside.policy import load_policy

    key = uuid.uuid4().hex
    conn = root / "kernel.json"
    ports = {f"{c}_port": i + 1 for i, c in enumerate(("shell", "iopub", "stdin", "control", "hb"))}
    info = {**ports, "ip": "127.0.0.1", "key": key, "transport": "tcp"}
    conn.write_text(json.dumps({**info, "signature_scheme": "hmac-sha256"}))
    sentry = Sentry(
        connection_file=conn,
        policy_path=hospital.policy,
        custodian_key=hospital.key,
        state_dir=hospital.state,
        sandbox=False,
        kernel="plain",
    )
    sentry.policy = load_policy(hospital.policy)
    sentry.signer = Signer.load(hospital.key)
    sentry.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if guard:
        sentry._build_guard()
        sentry._open_guard()
    sentry.budget = policy_ceiling(sentry.policy)
    sentry.ledger = HospitalLedger(
        sentry.state_dir / "session.ledger",
        session_id=sentry.session_id,
        origin=sentry.origin,
        signer=sentry.signer,
    )
    for side in ("outer", "inner"):
        for channel in ("shell", "control", "stdin", "iopub", "hb"):
            sentry._sockets[f"{side}_{channel}"] = CaptureSocket(copy)
    client = Session(key=key.encode(), username="researcher")
    kernel = Session(key=sentry.inner.key, username="kernel")
    return sentry, client, kernel


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class RunningSentry:
    proc: subprocess.Popen[bytes]
    connection: dict[str, Any]
    log_path: Path
    hospital: Hospital

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def ledger_path(self) -> Path:
        found = sorted(
            self.hospital.state.glob("*/session.ledger"), key=lambda p: p.stat().st_mtime
        )
        assert found, "no ledger written"
        return found[-1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sentry(
    hospital: Hospital,
    tmp: Path,
    *,
    sandbox: bool = False,
    kernel: str = "plain",
    extra_env: dict[str, str] | None = None,
    wrap: list[str] | None = None,
) -> RunningSentry:
    """Start a sentry on free ports; `wrap` is put before its argv (a launcher of its own)."""
    ports = _free_ports(5)
    key = os.urandom(16).hex()
    connection = {
        "shell_port": ports[0],
        "iopub_port": ports[1],
        "stdin_port": ports[2],
        "control_port": ports[3],
        "hb_port": ports[4],
        "ip": "127.0.0.1",
        "key": key,
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
        "kernel_name": "bedside",
    }
    tmp.mkdir(parents=True, exist_ok=True)
    conn_file = tmp / f"kernel-{ports[0]}.json"
    conn_file.write_text(json.dumps(connection))
    log_path = tmp / f"sentry-{ports[0]}.log"
    argv = [
        sys.executable,
        "-m",
        "bedside.gateway.sentry",
        "-f",
        str(conn_file),
        "--policy",
        str(hospital.policy),
        "--custodian-key",
        str(hospital.key),
        "--state-dir",
        str(hospital.state),
        "--kernel",
        kernel,
    ]
    if not sandbox:
        argv.append("--no-sandbox")
    argv = [*(wrap or []), *argv]
    env = dict(os.environ)
    env.update(extra_env or {})
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    return RunningSentry(proc, connection, log_path, hospital)


@dataclass
class Client:
    """A jupyter_client that records every message it receives, on every channel."""

    kc: BlockingKernelClient
    # (channel, message) of everything received, in order.
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @classmethod
    def connect(cls, sentry: RunningSentry, timeout: float = 90) -> Client:
        kc = BlockingKernelClient()
        kc.load_connection_info(sentry.connection)
        kc.start_channels()
        client = cls(kc)
        deadline = time.monotonic() + timeout
        while True:
            if sentry.proc.poll() is not None:
                raise RuntimeError(f"sentry exited:\n{sentry.log()}")
            try:
                kc.wait_for_ready(timeout=5)
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sentry not ready:\n{sentry.log()}") from None
        client.drain()
        return client

    def drain(self) -> None:
        for name, channel in (("iopub", self.kc.iopub_channel), ("shell", self.kc.shell_channel)):
            while True:
                try:
                    self.received.append((name, channel.get_msg(timeout=0.2)))
                except Empty:
                    break

    def request(self, msg_type: str, content: dict[str, Any], timeout: float = 30) -> dict:
        msg = self.kc.session.msg(msg_type, content)
        self.kc.shell_channel.send(msg)
        return self.shell_reply(msg["header"]["msg_id"], timeout)

    def shell_reply(self, msg_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no shell reply to {msg_id}")
            reply = self.kc.shell_channel.get_msg(timeout=remaining)
            self.received.append(("shell", reply))
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    def execute(
        self,
        code: str,
        *,
        timeout: float = 120,
        stdin_reply: str | None = None,
        **kwargs: Any,
    ) -> tuple[dict, list[dict]]:
        """Run `code`; (the execute_reply, the iopub messages of this request)."""
        msg_id = self.kc.execute(code, allow_stdin=stdin_reply is not None, **kwargs)
        outputs: list[dict] = []
        deadline = time.monotonic() + timeout
        idle = False
        while not idle:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"cell did not finish: {code[:60]!r}")
            if stdin_reply is not None:
                try:
                    req = self.kc.stdin_channel.get_msg(timeout=0.05)
                    self.received.append(("stdin", req))
                    self.kc.input(stdin_reply)
                except Empty:
                    pass
            try:
                msg = self.kc.iopub_channel.get_msg(timeout=min(remaining, 0.2))
            except Empty:
                continue
            self.received.append(("iopub", msg))
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            outputs.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        reply = self.shell_reply(msg_id, timeout=max(1.0, deadline - time.monotonic()))
        return reply, outputs

    def close(self) -> None:
        self.kc.stop_channels()


def committed(channel: str, msg: dict[str, Any]) -> bytes:
    from bedside.ledger import entries

    return entries.output_committed_bytes(
        channel=channel,
        msg_type=msg["msg_type"],
        content=msg["content"],
        buffers=[bytes(b) for b in msg.get("buffers", [])],
    )


def check_receipt(channel: str, msg: dict[str, Any], custodian_vkey: str) -> dict[str, Any]:
    """What the researcher side checks on one message; returns the receipt. Raises on failure."""
    import hashlib

    import rfc8785

    from bedside.ledger import DOMAIN_OUTPUT, Verifier, open_commitment

    receipt = msg["metadata"]["bedside"]["receipt"]
    assert receipt["key"] == custodian_vkey
    body = {k: v for k, v in receipt.items() if k != "sig"}
    Verifier(custodian_vkey).verify(rfc8785.dumps(body), base64.b64decode(receipt["sig"]))
    raw = committed(channel, msg)
    assert receipt["msg_id"] == msg["header"]["msg_id"]
    if receipt["v"] == 1 or "digest" in receipt:
        assert receipt["digest"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    else:
        # version 2 without a digest: this message's own salted output entry binds the bytes
        # (its commitment is opened with them below)
        assert receipt["v"] == 2
        assert any(
            "salt" in item
            and item["entry"]["kind"] == "output"
            and item["entry"]["msg_id"] == msg["header"]["msg_id"]
            for item in receipt["entries"]
        ), receipt
    for item in receipt["entries"]:
        entry = item["entry"]
        if entry["kind"] == "output" and entry["msg_id"] == msg["header"]["msg_id"]:
            if entry["decision"] == "blocked":
                assert "salt" not in item
            else:
                open_commitment(
                    DOMAIN_OUTPUT, raw, base64.b64decode(item["salt"]), entry["content"]
                )
    return receipt


class Mirror:
    """The researcher's copy of the ledger, rebuilt from receipts alone.

    Messages arrive on several channels, so receipts come out of order across channels: collect
    them, then append every entry in index order and check each receipt's size and root.
    """

    def __init__(self, path: Path, custodian_vkey: str) -> None:
        self.path = path
        self.key = custodian_vkey
        self.receipts: list[dict[str, Any]] = []

    def feed(self, channel: str, msg: dict[str, Any]) -> None:
        self.receipts.append(check_receipt(channel, msg, self.key))

    def finish(self) -> Any:
        from bedside.ledger import Ledger

        items = sorted(
            (item for r in self.receipts for item in r["entries"]), key=lambda i: i["index"]
        )
        indices = [i["index"] for i in items]
        missing = sorted(set(range(max(indices) + 1)) - set(indices))
        assert not missing, f"entries never received: {missing[:20]}"
        assert items[0]["entry"]["kind"] == "header"
        first = items[0]["entry"]
        ledger = Ledger.create(self.path, session_id=first["session"], origin=first["origin"])
        for item in items:
            ledger.append(item["entry"])
        for receipt in self.receipts:
            if receipt["size"]:
                assert receipt["root"] == ledger.root_at(receipt["size"]).hex()
        return ledger


CORPUS = Path(__file__).parents[1] / "corpus"


def corpus(name: str) -> list[dict]:
    import yaml

    return yaml.safe_load((CORPUS / name).read_text())


def run_leak_cell(client: Client, case: dict) -> list[dict]:
    """Run one leak cell the way its corpus entry says; the messages it produced."""
    before = len(client.received)
    if case["id"] == "L24":
        client.execute("x = 1", user_expressions={"x": "df.mrn.head(5).tolist()"})
    elif case["id"] == "L25":
        client.execute("d = dict(zip(df.mrn, df.age))")
        msg_id = client.kc.complete("d['", 3)
        client.shell_reply(msg_id)
    else:
        client.execute(case["cell"], timeout=120)
    return [m for _, m in client.received[before:]]
