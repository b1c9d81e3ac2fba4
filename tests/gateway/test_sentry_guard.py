"""The sentry's boundary guard on single messages (no processes): what is scanned, what a
notice looks like for each message type, MIME allowlist, byte limits, buffers, PNG text."""

from __future__ import annotations

import base64
import io
import sys
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import make_hospital, make_patients  # noqa: E402

from bedside.gateway._boundary import (  # noqa: E402
    BoundaryGuard,
    png_text,
    policy_scanner,
    trivially_clean,
)
from bedside.policy import load_policy  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    frame = make_patients(300, seed=9)
    hospital = make_hospital(tmp_path_factory.mktemp("guard"), frame=frame)
    scan, size = policy_scanner(load_policy(hospital.policy))
    assert size > 1000
    guard = BoundaryGuard(
        scan,
        mime_allow=["text/plain", "text/html", "image/png"],
        max_output_bytes=10_000,
        scan_seam=scan,  # as the sentry builds it
    )
    return guard, frame


def check(guard, channel, msg_type, content, metadata=None, buffers=()):
    import json

    size = len(json.dumps(content)) + sum(len(b) for b in buffers)
    return guard.check(channel, msg_type, content, metadata or {}, list(buffers), size)


def test_clean_output_is_released_unchanged(world):
    guard, _ = world
    content = {
        "data": {"text/plain": "ward\ncardiology  335"},
        "metadata": {},
        "execution_count": 3,
    }
    verdict = check(guard, "iopub", "execute_result", content)
    assert verdict.decision.action.value == "released"
    assert verdict.content == content and not verdict.changed


@pytest.mark.parametrize("column", ["mrn", "name", "dob", "postcode", "phone"])
def test_identifier_anywhere_blocks_with_a_shaped_notice(world, column):
    guard, frame = world
    value = str(frame[column].iloc[7])
    cases = [
        ("iopub", "stream", {"name": "stdout", "text": f"row: {value}\n"}, "stream"),
        ("iopub", "display_data", {"data": {"text/html": f"<td>{value}</td>"}, "metadata": {}},
         "display_data"),
        ("iopub", "error", {"ename": "KeyError", "evalue": value, "traceback": [value]}, "error"),
        ("iopub", "comm_msg", {"comm_id": "c", "data": {"state": {"options": [value]}}},
         "display_data"),
        ("shell", "complete_reply", {"status": "ok", "matches": [value], "cursor_start": 0,
                                     "cursor_end": 0, "metadata": {}}, "complete_reply"),
        ("stdin", "input_request", {"prompt": f"{value}? ", "password": False}, "input_request"),
    ]  # fmt: skip
    for channel, msg_type, content, shown_as in cases:
        verdict = check(guard, channel, msg_type, content)
        assert verdict.blocked, (column, msg_type)
        assert verdict.decision.rule in ("identifier", "phi")
        assert verdict.msg_type == shown_as
        assert value.lower() not in repr(verdict.content).lower()
        assert verdict.metadata["bedside"]["layer"] == "sentry"
    # Metadata is scanned too.
    verdict = check(
        guard, "iopub", "stream", {"name": "stdout", "text": "fine"}, metadata={"x": value}
    )
    assert verdict.blocked


def test_error_notice_keeps_a_clean_exception_name(world):
    guard, frame = world
    verdict = check(
        guard,
        "iopub",
        "error",
        {"ename": "ValueError", "evalue": frame.name.iloc[0], "traceback": []},
    )
    assert verdict.content["ename"] == "ValueError"
    assert "rule: identifier" in verdict.content["evalue"]


def test_execute_reply_user_expressions_are_scrubbed(world):
    guard, frame = world
    content = {
        "status": "ok",
        "execution_count": 4,
        "payload": [],
        "user_expressions": {"x": {"status": "ok", "data": {"text/plain": frame.mrn.iloc[0]}}},
    }
    verdict = check(guard, "shell", "execute_reply", content)
    assert verdict.blocked
    assert verdict.content["status"] == "ok"
    assert verdict.content["execution_count"] == 4
    assert verdict.content["user_expressions"]["x"]["ename"] == "BedsideBlocked"


def test_encoded_values_are_found(world):
    guard, frame = world
    value = frame.name.iloc[3]
    encoded = base64.b64encode(f"{value},{frame.mrn.iloc[3]}\n".encode()).decode()
    as_int = str(int.from_bytes(value.encode(), "big"))
    for text in (encoded, as_int):
        assert check(guard, "iopub", "stream", {"name": "stdout", "text": text}).blocked


def test_mime_allowlist_drops_or_blocks(world):
    guard, _ = world
    mixed = {"data": {"text/plain": "ok", "application/javascript": "x()"}, "metadata": {}}
    verdict = check(guard, "iopub", "display_data", mixed)
    assert verdict.decision.action.value == "redacted"
    assert set(verdict.content["data"]) == {"text/plain"}
    only = {"data": {"application/javascript": "x()"}, "metadata": {}}
    verdict = check(guard, "iopub", "display_data", only)
    assert verdict.blocked and verdict.decision.rule == "mime_allow"


def test_output_byte_limit_and_buffers(world):
    guard, _ = world
    big = {"name": "stdout", "text": "a" * 20_000}
    verdict = check(guard, "iopub", "stream", big)
    assert verdict.blocked and verdict.decision.rule == "max_output_bytes"
    verdict = check(
        guard, "iopub", "comm_msg", {"comm_id": "c", "data": {}}, buffers=[b"\x00\xff" * 10]
    )
    assert verdict.blocked and verdict.decision.rule == "binary_buffer"
    verdict = check(guard, "iopub", "comm_msg", {"comm_id": "c", "data": {}}, buffers=[b"12.5"])
    assert not verdict.blocked


def test_unknown_message_types_do_not_leave(world):
    guard, _ = world
    verdict = check(guard, "iopub", "bedside_exfil", {"text": "anything"})
    assert verdict.blocked and verdict.decision.rule == "unknown_msg_type"
    assert verdict.msg_type == "display_data"
    # A status message is rebuilt from its one field: nothing else rides on it.
    verdict = check(guard, "iopub", "status", {"execution_state": "idle", "extra": "x"})
    assert verdict.content == {"execution_state": "idle"}
    verdict = check(guard, "iopub", "status", {"execution_state": "Kathryn"})
    assert verdict.blocked


def _png(chunks: list[tuple[bytes, bytes]]) -> str:
    out = io.BytesIO()
    out.write(b"\x89PNG\r\n\x1a\n")
    for kind, body in chunks:
        out.write(
            len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")
        )
    return base64.b64encode(out.getvalue()).decode()


def test_png_text_chunks_are_read(world):
    guard, frame = world
    value = frame.name.iloc[5]
    plain = _png([(b"IHDR", b"\x00" * 13), (b"IDAT", zlib.compress(b"\x00" * 100)), (b"IEND", b"")])
    hidden = _png(
        [(b"IHDR", b"\x00" * 13), (b"zTXt", b"Comment\x00\x00" + zlib.compress(value.encode())),
         (b"IEND", b"")]
    )  # fmt: skip
    assert png_text(plain) is not None
    assert value in png_text(hidden)
    bundle = {"data": {"image/png": plain, "text/plain": "<Figure>"}, "metadata": {}}
    assert not check(guard, "iopub", "display_data", bundle).blocked
    bundle["data"]["image/png"] = hidden
    assert check(guard, "iopub", "display_data", bundle).blocked


def test_trivially_clean_is_conservative():
    assert trivially_clean("status\nok\nexecution\n1+1")
    assert not trivially_clean("1+1\n2")  # three numbers: scanned
    assert not trivially_clean("12/3/56")  # a date needs three numbers: scanned
    assert not trivially_clean("Li Wu")
    assert not trivially_clean("123")


def test_numbers_that_look_like_compact_dates_are_not_blocked(world):
    guard, frame = world
    dob = frame.dob.iloc[2]  # "YYYY-MM-DD"
    year, month, day = dob.split("-")
    compact = f"{int(month)}{int(day):02d}{year}"
    for text in (f"Pseudo R-squ.: 0.{compact[::-1]}", f"total {compact}", "Time: 16:39:04"):
        verdict = check(guard, "iopub", "stream", {"name": "stdout", "text": text})
        assert not verdict.blocked, text
    # With separators a date of birth is still caught, forwards.
    for text in (dob, f"{day}/{month}/{year}"):
        assert check(guard, "iopub", "stream", {"name": "stdout", "text": text}).blocked


def test_base64_next_to_ordinary_lines_is_read(world):
    guard, frame = world
    rows = frame.head(5)[["mrn", "name"]].to_csv()
    encoded = base64.b64encode(rows.encode()).decode()
    for text in (f"payload\n{encoded}\n", f"{encoded}\ndone\n", f"a\nheader\n{encoded}"):
        assert check(guard, "iopub", "stream", {"name": "stdout", "text": text}).blocked, text


# -- streams joined (StreamSeams) --------------------------------------------------------------


def _stream(text, name="stdout"):
    return {"name": name, "text": text}


def test_a_seam_finding_must_span_the_join(world):
    """Asked for a seam, the policy's scanner reports only a value that neither side holds
    alone: both sides were scanned with their own messages, in full."""
    guard, frame = world
    name = str(frame.name.iloc[5])
    cut = len(name) // 2
    scan = guard.seams.scan
    assert scan(name[:cut] + name[cut:], cut) is not None
    assert scan(name + " and more", len(name)) is None
    assert scan("before: " + name, len("before: ")) is None


def test_the_join_is_per_cell_and_stream_and_follows_what_was_shown(world):
    guard, frame = world
    mrn = str(frame.mrn.iloc[6])
    first = guard.joined("iopub", "cell-1", check(guard, "iopub", "stream", _stream(mrn[:4])))
    assert not first.blocked
    # Another stream, and another cell, show their own text: nothing joins there.
    other = check(guard, "iopub", "stream", _stream(mrn[4:], "stderr"))
    assert not guard.joined("iopub", "cell-1", other).blocked
    assert not guard.joined(
        "iopub", "cell-2", check(guard, "iopub", "stream", _stream(mrn[4:]))
    ).blocked
    second = guard.joined("iopub", "cell-1", check(guard, "iopub", "stream", _stream(mrn[4:])))
    assert second.blocked and second.msg_type == "stream"
    assert second.decision.details == {"kind": "mrn", "joined": "stream"}
    assert mrn[4:] not in second.content["text"]
    # What follows joins the notice the client was shown, not the blocked piece.
    third = guard.joined("iopub", "cell-1", check(guard, "iopub", "stream", _stream(mrn[4:])))
    assert not third.blocked


def test_only_recent_cells_are_remembered(world):
    from bedside.gateway._boundary import SEAM_CELLS, StreamSeams

    seams = StreamSeams(lambda text, seam: ("identifier", "x") if "ab" in text else None)
    seams.released("cell-0", "stdout", "a")
    assert seams.check("cell-0", "stdout", "b") == ("identifier", "x")
    for i in range(1, SEAM_CELLS + 1):
        seams.released(f"cell-{i}", "stdout", "a")
    assert seams.check("cell-0", "stdout", "b") is None
    assert seams.check(f"cell-{SEAM_CELLS}", "stdout", "b") == ("identifier", "x")


def test_a_scanner_without_positions_counts_any_finding_in_the_join(world):
    """A scanner that cannot be asked for a seam (a custom `Scan`) is not trusted to tell the
    sides apart: any finding in the joined text blocks."""
    policy_guard, frame = world
    name = str(frame.name.iloc[7])
    guard = BoundaryGuard(
        lambda text: policy_guard.scan(text), mime_allow=["text/plain"], max_output_bytes=10_000
    )
    guard.seams.released("c", "stdout", name)
    assert guard.seams.check("c", "stdout", " ok") is not None
