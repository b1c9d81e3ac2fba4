"""A test hospital's data and the attacker's-side oracle, shared by the sentry, gateway and
extension tests.

Synthetic patients come from the product's own generator (`bedside.policy.synthetic`):

`make_patients(n, seed)` is the patients table of `bedside demo-data --patients n --seed seed`
(the corpus columns of tests/corpus/README.md: mrn, name, dob, postcode, phone, sex, age, ward,
diagnosis, los_days, cost, hiv, died) as a DataFrame, built in memory. Identifiers come from
seeded Faker pools, everything else from a seeded numpy generator: the same arguments always
give the same rows, and no real person is in them.

`LeakOracle` judges what a client received: it is deliberately independent of `bedside.policy`
(it searches the raw identifier values of the table, case-insensitive, in every string of every
message, also after decoding base64 runs and big decimal numbers), so a bug in the product's
scanner cannot hide itself.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import ahocorasick
import pandas as pd
import pyarrow as pa

from bedside.ledger import Signer
from bedside.policy.synthetic import CHUNK, PATIENT_COLUMNS, Pools, make_pools, patients_chunk


@lru_cache(maxsize=8)
def _pools(seed: int, postcodes: int) -> Pools:
    # Faker draws are the slow part: modules that build several tables with one seed share them
    return make_pools(seed, postcodes=postcodes)


def make_patients(n: int = 5000, seed: int = 11) -> pd.DataFrame:
    """The first `n` patients (n ≤ 50,000) of the synthetic hospital with `seed`."""
    if not 1 <= n <= CHUNK:
        raise ValueError(f"make_patients: n must be between 1 and {CHUNK}, not {n}")
    # the same pool size as write_demo_hospital, so the rows are the demo hospital's
    columns = patients_chunk(0, n, seed, _pools(seed, min(60_000, max(1_000, n // 15))))
    return pd.DataFrame(
        {
            name: columns[name].to_pylist()
            if isinstance(columns[name], pa.Array)
            else columns[name]
            for name in PATIENT_COLUMNS
        }
    )


def open_up(path: Path) -> None:
    """pytest's tmp dirs are 0700; the sandboxed kernel (nobody under root) must read data."""
    for parent in [path, *path.parents]:
        if str(parent) in ("/", "/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o755)


# The disclosure, output, error and shell rules of the minimal policy: the kernel and
# policy tests' hospitals share them, each with its own `version`, `id` and `datasets` before.
RULES = """\
disclosure:
  min_cell_count: 10
  round_counts_to: 5
  dominance: {n: 2, k: 0.9}
  p_ratio: 0.1
  zeros_disclosive: true
  extremes: suppress
outputs:
  mime_allow: [text/plain, text/html, image/png, application/json]
  max_output_bytes: 1000000
  session_egress_bytes: 50000000
errors: scrub
shell: deny
"""


_POLICY = """\
version: bedside/v1
id: st-elsewhere
datasets:
  patients:
    path: data/patients.parquet
    record_id: mrn
    identifiers: [mrn, name, dob, postcode, phone]
outputs:
  mime_allow: [text/plain, text/html, image/png, application/json]
  max_output_bytes: {max_output_bytes}
  session_egress_bytes: {egress}
{limits}session:
  max_cells: {max_cells}
  max_cpu_seconds: 3600
  max_egress_bytes: {egress}
"""


def hospital_policy(
    *,
    max_cells: int = 2000,
    egress: int = 50_000_000,
    max_output_bytes: int = 1_000_000,
    processes: int | None = None,
) -> str:
    """The policy of the test hospital `st-elsewhere` (its patients table, the usual MIME types),
    with these session budgets, and with sandbox limits when `processes` is given."""
    limits = ""
    if processes is not None:
        limits = f"limits:\n  memory_mb: 4096\n  cpu_seconds: 3600\n  processes: {processes}\n"
    return _POLICY.format(
        max_cells=max_cells, egress=egress, max_output_bytes=max_output_bytes, limits=limits
    )


@dataclass
class Hospital:
    """A hospital on disk: its patients (data/patients.parquet), policy, custodian key and state
    directory; the sandboxed kernel may read the first two only."""

    root: Path
    policy: Path
    key: Path
    state: Path
    data: Path
    frame: pd.DataFrame
    signer: Signer

    @property
    def verifier_key(self) -> str:
        return self.signer.verifier_key


def write_hospital(root: Path, frame: pd.DataFrame, policy_text: str) -> Hospital:
    """Lay out a hospital under `root` (readable by the sandbox user where it must be) with a
    fresh custodian key for policy id `st-elsewhere`."""
    root.mkdir(parents=True, exist_ok=True)
    open_up(root)
    (root / "data").mkdir(exist_ok=True)
    data = root / "data" / "patients.parquet"
    frame.to_parquet(data)
    data.chmod(0o644)
    policy = root / "policy.yaml"
    policy.write_text(policy_text)
    policy.chmod(0o644)
    secrets = root / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    key = secrets / "custodian.key"
    signer = Signer.generate("st-elsewhere")
    signer.save(key)
    state = root / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    return Hospital(root, policy, key, state, data, frame, signer)


IDENTIFIERS = ["mrn", "name", "dob", "postcode", "phone"]
_B64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_DEC = re.compile(r"\d{12,}")


class LeakOracle:
    """Case-insensitive substring search for every identifier value (of 6+ characters)."""

    def __init__(self, frame: pd.DataFrame, columns: list[str] = IDENTIFIERS) -> None:
        self.automaton = ahocorasick.Automaton()
        for col in columns:
            for value in frame[col].astype(str):
                value = value.strip().lower()
                if len(value) >= 6:
                    self.automaton.add_word(value, (col, value))
        self.automaton.make_automaton()

    def _views(self, text: str) -> list[str]:
        views = [text.lower()]
        for m in _B64.finditer(text):
            run = m.group(0)
            try:
                raw = base64.b64decode(run + "=" * (-len(run) % 4))
                views.append(raw.decode("utf-8", errors="ignore").lower())
            except (binascii.Error, ValueError):
                pass
        for m in _DEC.finditer(text):
            n = int(m.group(0))
            raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
            views.append(raw.decode("utf-8", errors="ignore").lower())
        return views

    def leaks_shown(self, messages: list[dict[str, Any]]) -> list[str]:
        """Which identifier columns a client shows from `messages`: in any one of them, or in
        the text of a cell's stream once its messages are joined, as JupyterLab joins
        consecutive stream messages of a cell into one output and a terminal prints them in a
        row."""
        found = {col for msg in messages for col in self.leaks(msg)}
        joined: dict[tuple[str, str], str] = {}
        for msg in messages:
            if msg.get("msg_type") == "stream":
                parent = (msg.get("parent_header") or {}).get("msg_id", "")
                key = (parent, msg["content"].get("name", ""))
                joined[key] = joined.get(key, "") + str(msg["content"].get("text", ""))
        for text in joined.values():
            found.update(self.leaks({"text": text}))
        return sorted(found)

    def leaks(self, message: dict[str, Any]) -> list[str]:
        """Which identifier columns appear in `message` (never the values themselves)."""
        text = json.dumps(message, default=str, ensure_ascii=False)
        found = set()
        for view in self._views(text):
            for _, (col, _value) in self.automaton.iter(view):
                found.add(col)
        return sorted(found)


def notices(outputs: list[dict]) -> list[dict]:
    """The bedside decisions of messages a guard blocked or redacted."""
    out = []
    for msg in outputs:
        meta = msg.get("metadata", {}).get("bedside", {})
        if meta.get("decision") in ("blocked", "redacted"):
            out.append(meta)
    return out


@contextlib.contextmanager
def egress_listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP listener on a free loopback port, for the network-egress cell (L39) to aim at:
    yields the port and the list of what reached it (empty if the sandbox held)."""
    received: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            received.append(conn.recv(65536))
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], received
    finally:
        stop.set()
        thread.join()
        server.close()
