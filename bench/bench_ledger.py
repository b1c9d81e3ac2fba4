"""Ledger benchmarks: append rate, fsync cost, streaming verify of 1M entries, proof size/time.

Run: .venv/bin/python bench/bench_ledger.py [--entries 1000000] [--json out.json]

Each figure is printed with the plain path measured in the same run (writing/reading the same
entry bytes as JSON lines with no hashing, commitments or checks), so the ratio says what the
ledger costs on this machine. Targets (issue 3): append >= 50,000 entries/s with grouped
durability; verify of 1M entries <= 10 s on one core with memory that does not grow.

Durability, as measured here:
  grouped   `append(sync=False)` + `flush()` every --group entries: an entry is durable once the
            flush that follows it returns (both files fsynced); a crash loses at most the entries
            appended since the last flush, and `Ledger.open` cuts any torn record.
  per entry `append(sync=True)`: durable when append returns (two fsyncs: openings, ledger).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import emit

from bedside.ledger import Ledger, Signer, cosign
from bedside.ledger import entries as E
from bedside.ledger.commitment import DOMAIN_OUTPUT, open_commitment
from bedside.ledger.entries import output_committed_bytes
from bedside.ledger.openings import Opening
from bedside.ledger.proofs import check_inclusion_proof, make_inclusion_proof

# The ledger tests' session builders (tests/ledger/ledger_session.py): the bench's ledgers start
# with the same header the tests' do.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ledger"))
from ledger_session import new_session  # noqa: E402

SESSION = "bench-session"
ORIGIN = "hospital.example/bedside/bench-session"
CODE = "df = catalog.load('admissions')\ndf.groupby('ward').size().round(-1)\n" * 2
OUTPUT = {"name": "stdout", "text": "ward\nA    120\nB    340\nC    90\n" * 3}


def _entries(
    n: int, signer: Signer, researcher: Signer, ledger: Ledger, group: int
) -> dict[str, float]:
    """Append a realistic session: execute request, released output, blocked output, ...
    with a cosigned checkpoint every 1,000 entries and a flush every `group` entries.

    Returns the seconds spent in each part, so the ledger's own cost (`append`) can be told
    apart from the caller's (building entries: commitments, canonical content) and from fsync.
    """
    # CPU time: the machine may be shared, and the targets are about one core's work. fsync
    # (flush) is measured in wall time, since it is time spent waiting for the disk.
    clock, wall = time.process_time, time.perf_counter
    spent = {"build": 0.0, "append": 0.0, "checkpoint": 0.0, "flush": 0.0}
    cell = 0
    next_checkpoint, next_flush = 1000, group
    while ledger.size < n:
        cell += 1
        msg = f"exec-{cell}"
        blocked = cell % 7 == 0
        t0 = clock()
        request, request_opening = E.execute_request(
            session=SESSION, msg_id=msg, code=CODE, researcher_sig=None
        )
        out, out_opening = E.output(
            session=SESSION,
            msg_id=f"out-{cell}",
            parent=msg,
            channel="iopub",
            msg_type="stream",
            content=OUTPUT,
            decision="blocked" if blocked else "released",
            rule="min_cell_count" if blocked else "pass",
            layer="kernel",
        )
        t1 = clock()
        ledger.append(request, opening=request_opening)
        ledger.append(out, opening=out_opening)
        t2 = clock()
        spent["build"] += t1 - t0
        spent["append"] += t2 - t1
        if ledger.size >= next_checkpoint:
            next_checkpoint += 1000
            ledger.append_checkpoint(cosign(ledger.sign_checkpoint(signer), researcher), sync=False)
            spent["checkpoint"] += clock() - t2
        if ledger.size >= next_flush:
            next_flush += group
            t3 = wall()
            ledger.flush()
            spent["flush"] += wall() - t3
    t3 = wall()
    ledger.flush()
    spent["flush"] += wall() - t3
    return spent


# --- the researcher's per-message ledger path for a 1 MB output --------------------------------

MB_TEXT = "x" * 1_000_000 + "\n"  # what print('x' * 1_000_000) sends


def _mirror_steps(ledger: Ledger, entry: dict[str, object], salt: bytes, *, raw: bool) -> None:
    """What `SessionMirror` does with one output message once its receipt signature checked:
    the committed bytes, the receipt digest, opening the commitment, and the append with its
    opening (raw: the `Opening` path the mirror uses; else the base64-dict path)."""
    committed = output_committed_bytes(
        channel="iopub", msg_type="stream", content={"name": "stdout", "text": MB_TEXT}
    )
    digest = "sha256:" + hashlib.sha256(committed).hexdigest()
    assert digest
    index = ledger.size
    open_commitment(DOMAIN_OUTPUT, committed, salt, str(entry["content"]), index=index)
    if raw:
        ledger.append(entry, opening=Opening(index, "content", DOMAIN_OUTPUT, salt, committed))
    else:
        ledger.append(
            entry,
            opening={
                "field": "content",
                "domain": DOMAIN_OUTPUT,
                "salt": base64.b64encode(salt).decode("ascii"),
                "content": base64.b64encode(committed).decode("ascii"),
            },
        )


def _output_1mb(d: Path, rounds: int, per_round: int) -> dict[str, object]:
    """CPU ms per 1 MB output message: the mirror's ledger path (both opening forms) against
    the plain path (json.dumps of the message + a buffered write), interleaved per round.

    Each round writes fresh files (deleted afterwards) so the disk use stays bounded.
    """
    committed = output_committed_bytes(
        channel="iopub", msg_type="stream", content={"name": "stdout", "text": MB_TEXT}
    )
    message = {
        "header": {"msg_id": "m", "msg_type": "stream"},
        "channel": "iopub",
        "content": {"name": "stdout", "text": MB_TEXT},
    }
    made = []
    for i in range(per_round):
        entry, opening = E.output_from_bytes(
            session=SESSION,
            msg_id=f"out-{i}",
            parent="exec-1",
            channel="iopub",
            msg_type="stream",
            committed=committed,
            decision="released",
            rule="pass",
            layer="kernel",
        )
        made.append((entry, base64.b64decode(opening["salt"])))

    def ledger_run(raw: bool) -> float:
        path = d / "mb.ledger"
        ledger = _new_ledger(path)
        start = time.process_time()
        for entry, salt in made:
            _mirror_steps(ledger, {**entry}, salt, raw=raw)
        spent = time.process_time() - start
        ledger.close()
        path.unlink()
        path.with_suffix(".openings").unlink()
        return spent

    def plain_run() -> float:
        path = d / "mb.jsonl"
        start = time.process_time()
        with open(path, "w") as fh:
            for _ in made:
                fh.write(json.dumps(message) + "\n")
        spent = time.process_time() - start
        path.unlink()
        return spent

    runs: dict[str, list[float]] = {"plain": [], "opening_dict": [], "opening_raw": []}
    for _ in range(rounds):
        runs["plain"].append(plain_run() * 1000 / per_round)
        runs["opening_dict"].append(ledger_run(False) * 1000 / per_round)
        runs["opening_raw"].append(ledger_run(True) * 1000 / per_round)
    med = {k: statistics.median(v) for k, v in runs.items()}
    best = {k: min(v) for k, v in runs.items()}
    return {
        "messages_per_round": per_round,
        "rounds": rounds,
        "cpu_ms_per_message_median": med,
        "cpu_ms_per_message_best": best,
        "raw_vs_plain": med["opening_raw"] / med["plain"],
        "dict_vs_plain": med["opening_dict"] / med["plain"],
        "raw_vs_dict": med["opening_raw"] / med["opening_dict"],
    }


def _new_ledger(
    path: Path, intent: dict[str, object] | None = None, identities: dict[str, str] | None = None
) -> Ledger:
    """A new bench session ledger holding its header."""
    return new_session(
        path,
        identities or {},
        intent=intent,
        policy_id="bench",
        policy_digest="sha256:" + "0" * 64,
        kernel_env="sha256:" + "1" * 64,
        session=SESSION,
        origin=ORIGIN,
    )


def _plain_write(path: Path, ledger_path: Path, limit: int = 100_000) -> float:
    """The plain path: a JSON-lines logger (json.dumps + buffered write), no hashing or fsync.

    Timed on the first `limit` entries held in memory (the rate does not depend on the count).
    """
    from bedside.ledger.verify import iter_entries

    entries = []
    for i, entry in iter_entries(ledger_path):
        if i >= limit:
            break
        entries.append(entry)
    start = time.process_time()
    with open(path, "w") as fh:
        for entry in entries:
            fh.write(json.dumps(entry, sort_keys=True) + "\n")
        fh.flush()
    return len(entries) / (time.process_time() - start)


def _plain_read(path: Path) -> float:
    start = time.process_time()
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            json.loads(line)
            n += 1
    return n / (time.process_time() - start)


# Peak memory is read from /proc (VmHWM: this process image's high-water mark). ru_maxrss is no
# use here: Linux carries it over from the parent across fork+exec.
_HWM = """
def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""

_CHILD = (
    _HWM
    + """
import json, sys, time
from bedside.ledger import verify_ledger
t0, c0 = time.perf_counter(), time.process_time()
report = verify_ledger(sys.argv[1], keys=[sys.argv[2]], openings=sys.argv[3] or None)
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"entries": report.size, "wall_s": wall, "cpu_s": cpu, "maxrss_mb": hwm_mb()}))
"""
)


def _verify_child(path: Path, vkey: str, openings: Path | None) -> dict[str, float]:
    """Verify in a fresh process so its peak RSS is the verifier's alone."""
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), vkey, str(openings or "")],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout)
    return result


def _baseline_rss() -> float:
    out = subprocess.run(
        [sys.executable, "-c", _HWM + "import bedside.ledger\nprint(hwm_mb())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000, help="second size for memory")
    parser.add_argument("--group", type=int, default=1000, help="entries per flush (fsync)")
    parser.add_argument("--fsync-entries", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--mb-rounds", type=int, default=7, help="1 MB output case: rounds")
    parser.add_argument("--mb-messages", type=int, default=20, help="1 MB messages per round")
    parser.add_argument(
        "--only-output-1mb", action="store_true", help="run only the 1 MB output entry case"
    )
    args = parser.parse_args()

    signer, researcher = Signer.generate("custodian"), Signer.generate("researcher")
    results: dict[str, object] = {"python": sys.version.split()[0]}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        d = Path(tmp)
        results["output_1mb"] = _output_1mb(d, args.mb_rounds, args.mb_messages)
        if args.only_output_1mb:
            _print_output_1mb(results)
            emit(results, args.json)
            return 0
        ledgers = {}
        for label, n in (("small", args.small), ("large", args.entries)):
            path = d / f"{label}.ledger"
            ledger = _new_ledger(path, {"purpose": "bench"}, {"custodian": signer.verifier_key})
            start = time.perf_counter()
            cpu = time.process_time()
            spent = _entries(n, signer, researcher, ledger, args.group)
            ledger.append_checkpoint(ledger.sign_checkpoint(signer))
            ledger.append(E.seal(session=SESSION))
            elapsed = time.perf_counter() - start
            cpu = time.process_time() - cpu
            size = ledger.size
            ledger.close()
            ledgers[label] = (path, size)
            if label == "large":
                results["append_grouped"] = {
                    "entries": size,
                    "seconds": elapsed,
                    "cpu_seconds": cpu,
                    "entries_per_s": size / elapsed,
                    "ledger_append_entries_per_s": size / spent["append"],
                    "build_entries_per_s": size / spent["build"],
                    "seconds_by_part": spent,
                    "group": args.group,
                    "ledger_bytes": path.stat().st_size,
                    "openings_bytes": path.with_suffix(".openings").stat().st_size,
                }
        large, large_size = ledgers["large"]

        # fsync per entry, and the plain path for ratios.
        path = d / "fsync.ledger"
        ledger = _new_ledger(path)
        start = time.perf_counter()
        for i in range(args.fsync_entries):
            entry, opening = E.execute_request(
                session=SESSION, msg_id=f"m{i}", code=CODE, researcher_sig=None
            )
            ledger.append(entry, opening=opening, sync=True)
        per_entry = args.fsync_entries / (time.perf_counter() - start)
        ledger.close()
        plain_path = d / "plain.jsonl"
        plain_write = _plain_write(plain_path, large)
        plain_read = _plain_read(plain_path)
        grouped = results["append_grouped"]["ledger_append_entries_per_s"]  # type: ignore[index]
        grouped_wall = results["append_grouped"]["entries_per_s"]  # type: ignore[index]
        results["append_fsync_per_entry"] = {
            "entries_per_s": per_entry,
            "ms_per_entry": 1000 / per_entry,
            "slowdown_vs_grouped_end_to_end": grouped_wall / per_entry,
        }
        results["plain_jsonl_write_entries_per_s"] = plain_write
        results["append_grouped_vs_plain_write"] = grouped / plain_write

        # Streaming verify, each in its own process; memory at two sizes shows it is flat.
        base = _baseline_rss()
        small, small_size = ledgers["small"]
        v_small = _verify_child(small, signer.verifier_key, None)
        v_large = _verify_child(large, signer.verifier_key, None)
        v_open = _verify_child(large, signer.verifier_key, large.with_suffix(".openings"))
        results["verify"] = {
            "entries": v_large["entries"],
            "wall_s": v_large["wall_s"],
            "cpu_s": v_large["cpu_s"],
            "entries_per_s": v_large["entries"] / v_large["wall_s"],
            "entries_per_cpu_s": v_large["entries"] / v_large["cpu_s"],
            "maxrss_mb": v_large["maxrss_mb"],
            "maxrss_mb_small": v_small["maxrss_mb"],
            "small_entries": v_small["entries"],
            "import_baseline_rss_mb": base,
            "vs_plain_jsonl_read": (v_large["entries"] / v_large["cpu_s"]) / plain_read,
        }
        results["plain_jsonl_read_entries_per_s"] = plain_read
        results["verify_with_openings"] = {
            "wall_s": v_open["wall_s"],
            "cpu_s": v_open["cpu_s"],
            "maxrss_mb": v_open["maxrss_mb"],
        }

        # Inclusion proofs: size and time (from the file, and per proof once loaded).
        start = time.perf_counter()
        index = large_size // 3
        proof = make_inclusion_proof(large, index)
        make_s = time.perf_counter() - start
        start = time.perf_counter()
        check_inclusion_proof(proof, [signer.verifier_key])
        check_s = time.perf_counter() - start
        reopened = Ledger.open(large)
        start = time.perf_counter()
        reps = 1000
        for k in range(reps):
            reopened.inclusion_proof((k * 7919) % reopened.size)
        per_proof = (time.perf_counter() - start) / reps
        reopened.close()
        encoded = json.dumps(proof).encode()
        results["proof"] = {
            "tree_size": proof["tree_size"],
            "hashes": len(proof["proof"]),
            "audit_path_bytes": 32 * len(proof["proof"]),
            "proof_file_bytes": len(encoded),
            "make_from_file_s": make_s,
            "check_s": check_s,
            "per_proof_in_memory_ms": per_proof * 1000,
        }
    results["peak_rss_bench_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _print(results)
    emit(results, args.json)
    return 0


def _print_output_1mb(r: dict[str, object]) -> None:
    o: dict[str, object] = r["output_1mb"]  # type: ignore[assignment]
    med: dict[str, float] = o["cpu_ms_per_message_median"]  # type: ignore[assignment]
    print(
        f"1 MB output entry (the extension's ledger path per message, CPU, median of "
        f"{o['rounds']} rounds x {o['messages_per_round']}): {med['opening_raw']:.2f} ms "
        f"= {o['raw_vs_plain']:.2f}x the plain path (json.dumps + write: {med['plain']:.2f} ms); "
        f"with a base64-dict opening {med['opening_dict']:.2f} ms ({o['dict_vs_plain']:.2f}x)"
    )


def _print(r: dict[str, object]) -> None:
    _print_output_1mb(r)
    a: dict[str, float] = r["append_grouped"]  # type: ignore[assignment]
    f: dict[str, float] = r["append_fsync_per_entry"]  # type: ignore[assignment]
    v: dict[str, float] = r["verify"]  # type: ignore[assignment]
    p: dict[str, float] = r["proof"]  # type: ignore[assignment]
    parts: dict[str, float] = a["seconds_by_part"]  # type: ignore[assignment]
    print(
        f"Ledger.append (one core, entries prepared by the caller): "
        f"{a['ledger_append_entries_per_s']:,.0f} entries/s = "
        f"{r['append_grouped_vs_plain_write']:.2f}x a plain JSON-lines write "
        f"({r['plain_jsonl_write_entries_per_s']:,.0f}/s, no hashing, no fsync)"
    )
    print(
        f"  building the entries (commitments, canonical content): "
        f"{a['build_entries_per_s']:,.0f} entries/s; CPU s: append {parts['append']:.1f}, "
        f"build {parts['build']:.1f}, checkpoints {parts['checkpoint']:.1f}; fsync wait "
        f"{parts['flush']:.1f} s (grouped: flush every {a['group']:.0f} entries)"
    )
    print(
        f"  end to end {a['entries']:,.0f} entries in {a['seconds']:.1f} s wall / "
        f"{a['cpu_seconds']:.1f} s CPU = {a['entries_per_s']:,.0f} entries/s wall "
        f"({a['ledger_bytes'] / 1e6:.0f} MB ledger + {a['openings_bytes'] / 1e6:.0f} MB openings)"
    )
    print(
        f"append, fsync per entry: {f['entries_per_s']:,.0f} entries/s "
        f"({f['ms_per_entry']:.2f} ms each, "
        f"{f['slowdown_vs_grouped_end_to_end']:.0f}x slower than grouped end to end)"
    )
    print(
        f"verify {v['entries']:,.0f} entries: {v['wall_s']:.2f} s wall, {v['cpu_s']:.2f} s CPU "
        f"({v['entries_per_cpu_s']:,.0f}/CPU s = {v['vs_plain_jsonl_read']:.2f}x a plain "
        f"JSON-lines read+parse); "
        f"peak RSS {v['maxrss_mb']:.0f} MB vs {v['maxrss_mb_small']:.0f} MB at "
        f"{v['small_entries']:,.0f} entries (import alone {v['import_baseline_rss_mb']:.0f} MB)"
    )
    print(
        f"inclusion proof at {p['tree_size']:,.0f}: {p['hashes']:.0f} hashes "
        f"({p['audit_path_bytes']:.0f} B path, {p['proof_file_bytes']:.0f} B file); "
        f"from file {p['make_from_file_s']:.2f} s, check {p['check_s'] * 1000:.1f} ms, "
        f"{p['per_proof_in_memory_ms']:.3f} ms per proof once loaded"
    )


if __name__ == "__main__":
    raise SystemExit(main())
