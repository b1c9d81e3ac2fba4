"""The websocket tuning shipped in the gateway configuration, checked inside Enterprise Gateway's
own environment: loading the config patches EG's kernel websocket handler so that every socket
it opens sets nodelay, and a stock config (nodelay off) leaves the handler alone; each other
patch is compared against the stock code on the same input (what the client receives, what is
refused), and stays off on versions it was not written against."""

from __future__ import annotations

import json
import subprocess
import textwrap
from typing import Any

import pytest

from bedside.errors import GatewayError
from bedside.gateway.eg import CONFIG_NAME, CONFIG_TEMPLATE_DIR, eg_executable

PROBE = textwrap.dedent(
    """
    import json, sys
    from traitlets.config.loader import PyFileConfigLoader
    from enterprise_gateway.services.kernels import handlers

    calls = []

    def recording_open(self, *args, **kwargs):
        calls.append(("open", args))

    class Handler:
        def set_nodelay(self, value):
            calls.append(("set_nodelay", value))

    # Stand in for EG's own open(), then load the config as EG would: the patch wraps it.
    cls = handlers.ZMQChannelsHandler
    cls.open = recording_open
    config = PyFileConfigLoader("{name}", path=sys.argv[1]).load_config()
    cls.open(Handler(), "kernel-id")
    print(json.dumps({{
        "patched": cls.open is not recording_open,
        "calls": calls,
        "token": config.EnterpriseGatewayApp.auth_token,
        "list_kernels": config.EnterpriseGatewayApp.list_kernels,
    }}))
    """
).format(name=CONFIG_NAME)


@pytest.fixture(scope="module")
def eg_python():
    try:
        return eg_executable().parent / "python"
    except GatewayError as exc:
        pytest.skip(str(exc))


def write_config(tmp_path, *, nodelay: bool):
    for name in (CONFIG_NAME, "bedside_eg_tuning.py"):
        (tmp_path / name).write_text((CONFIG_TEMPLATE_DIR / name).read_text())
    (tmp_path / "token").write_text("a-token-of-enough-length\n")
    (tmp_path / "bedside-eg.json").write_text(
        json.dumps(
            {
                "ip": "127.0.0.1",
                "port": 8888,
                "token_file": str(tmp_path / "token"),
                "authorized_users": ["alice"],
                "default_kernel": "bedside",
                "kernelspecs": ["bedside"],
                "nodelay": nodelay,
            }
        )
    )


def probe(eg_python, config_dir, script: str = "") -> subprocess.CompletedProcess[str]:
    """`script` (default PROBE) in the gateway's own Python, on the config written to
    config_dir."""
    return subprocess.run(
        [str(eg_python), "-c", script or PROBE, str(config_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def probe_report(eg_python, config_dir, script: str = "") -> Any:
    """What `probe` printed last, as JSON, once the probe has run to its end."""
    result = probe(eg_python, config_dir, script)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("nodelay", [True, False])
def test_config_patches_websockets_to_nodelay(eg_python, tmp_path, nodelay):
    write_config(tmp_path, nodelay=nodelay)
    report = probe_report(eg_python, tmp_path)
    assert report["token"] == "a-token-of-enough-length"
    assert report["list_kernels"] is False
    assert report["patched"] is nodelay
    expected = [["set_nodelay", True]] if nodelay else []
    assert report["calls"] == [*expected, ["open", ["kernel-id"]]]


def test_empty_token_file_stops_the_gateway(eg_python, tmp_path):
    write_config(tmp_path, nodelay=True)
    (tmp_path / "token").write_text("\n")
    result = probe(eg_python, tmp_path)
    assert result.returncode != 0
    assert "is empty" in result.stderr


# EG's `_on_zmq_reply`, stock and as the config left it, and a handler to drive it whose websocket
# is a list: the start of the message probes below (`tracebacks` is the kernel manager's
# allow_tracebacks).
HANDLER_HARNESS = """
    import json, sys
    from jupyter_client.session import Session
    from traitlets.config.loader import PyFileConfigLoader
    from enterprise_gateway.services.kernels import handlers

    cls = handlers.ZMQChannelsHandler
    stock = cls._on_zmq_reply
    PyFileConfigLoader("{name}", path=sys.argv[1]).load_config()
    tuned = cls._on_zmq_reply
    key = b"k" * 32

    class Stream:
        channel = "iopub"
        def closed(self):
            return False

    class KM:
        allow_tracebacks = {tracebacks}
        traceback_replacement_message = "masked"

    class Connection:
        selected_subprotocol = None  # the legacy JSON protocol, as jupyter_server 2 asks

    class App:
        settings = {{"kernel_manager": KM()}}

    def handler():
        h = object.__new__(cls)
        h.__dict__.update(
            session=Session(key=key), ws_connection=Connection(),
            application=App(), sent=[], _iopub_window_byte_queue=[],
            _iopub_window_msg_count=0, _iopub_window_byte_count=0,
            _iopub_msgs_exceeded=False, _iopub_data_exceeded=False,
        )
        h.write_message = lambda m, binary=False: h.sent.append((m, binary))
        return h

"""

# The same ZMQ messages through EG's stock `_on_zmq_reply` and through the tuned one, on a
# handler whose websocket is a list: the client must receive the same messages (same JSON
# values, same frames kind), large or small, ASCII or not, with buffers or an error.
SPLICE_PROBE = textwrap.dedent(
    HANDLER_HARNESS
    + """
    def counting(h):
        reserialize = h._reserialize_reply
        def counted(*args, **kwargs):
            h.reserialized = True
            return reserialize(*args, **kwargs)
        h._reserialize_reply = counted
        h.reserialized = False
        return h

    kernel = Session(key=key, username="k")
    big = "x" * 300_000 + "\\n"
    cases = [
        ("stream", {{"name": "stdout", "text": big}}, []),
        ("stream", {{"name": "stdout", "text": "small\\n"}}, []),
        ("stream", {{"name": "stdout", "text": ("é€😀\\u007f\\t\\"\\\\" * 30000)}}, []),
        ("display_data", {{"data": {{"text/plain": big, "n": 1.5, "z": None}},
                           "metadata": {{}}, "transient": {{}}}}, []),
        ("display_data", {{"data": {{"text/plain": big}}, "metadata": {{}}}}, [b"\\0" * 10]),
        ("error", {{"ename": "E", "evalue": big, "traceback": [big]}}, []),
    ]
    out = []
    for msg_type, content, buffers in cases:
        msg = kernel.msg(msg_type, content=content, metadata={{"bedside": {{"a": 1}}}})
        wire = kernel.serialize(msg)
        wire += buffers
        got = {{}}
        for label, fn in (("stock", stock), ("tuned", tuned)):
            h = counting(handler())
            fn(h, Stream(), [b"ident"] + list(wire))
            (data, binary), = h.sent
            if not binary:
                data = json.loads(data)
            else:
                data = data.hex()
            got[label] = (data, binary)
            spliced = not h.reserialized
        out.append({{"type": msg_type, "same": got["stock"] == got["tuned"], "spliced": spliced}})
    print(json.dumps({{"spliced": getattr(tuned, "_bedside_splice", False), "cases": out}}))
    """
).format(name=CONFIG_NAME, tracebacks=False)


def test_large_messages_reach_the_client_unchanged(eg_python, tmp_path):
    write_config(tmp_path, nodelay=True)
    report = probe_report(eg_python, tmp_path, SPLICE_PROBE)
    assert report["spliced"] is True
    cases = report["cases"]
    assert all(case["same"] for case in cases), cases
    # the large stream and display_data went through the splice; small, buffers, error did not
    assert [case["spliced"] for case in cases] == [True, False, True, True, False, False]


DATES_PROBE = textwrap.dedent(
    """
    import json, sys
    from jupyter_client import jsonutil
    from traitlets.config.loader import PyFileConfigLoader

    stock = jsonutil.parse_date
    PyFileConfigLoader("{name}", path=sys.argv[1]).load_config()
    tuned = jsonutil.parse_date
    samples = [
        "2026-11-30T01:02:03.123456Z", "2026-11-30T01:02:03Z", "2026-11-30T01:02:03.1Z",
        "2026-11-30T01:02:03.123+00:00", "2026-11-30T01:02:03.5-05:30", "2026-11-30T01:02:03+0100",
        "2026-11-30T01:02:03.123456", "2026-02-30T01:02:03Z", "not a date", None, 3,
    ]
    def show(parse, s):
        try:
            v = parse(s)
        except Exception as exc:
            return "error " + type(exc).__name__
        return jsonutil.date_default(v) if hasattr(v, "isoformat") else repr(v)
    import warnings
    warnings.simplefilter("ignore")
    print(json.dumps({{"fast": tuned is not stock,
                      "diff": [s for s in samples if show(stock, s) != show(tuned, s)]}}))
    """
).format(name=CONFIG_NAME)


def test_header_dates_parse_as_stock(eg_python, tmp_path):
    write_config(tmp_path, nodelay=True)
    report = probe_report(eg_python, tmp_path, DATES_PROBE)
    assert report == {"fast": True, "diff": []}


# The content check of a large message (orjson in the tuned path, the stock parser on anything it
# refuses): the same wire frames, signed by the kernel's key, through the stock and the tuned
# handler. Content the stock parser accepts and orjson refuses (NaN, an integer beyond 64 bits, a
# lone surrogate) must still reach the client as stock sends it; content neither accepts (bad
# UTF-8, not JSON), a bad signature and a replayed message must fail as stock fails.
CHECK_PROBE = textwrap.dedent(
    HANDLER_HARNESS
    + """
    kernel = Session(key=key, username="k")
    pad = "x" * 100_000
    contents = [
        b'{{"name": "stdout", "text": "' + pad.encode() + b'"}}',
        b'{{"name": "stdout", "n": NaN, "text": "' + pad.encode() + b'"}}',
        b'{{"name": "stdout", "n": ' + str(2**70).encode() + b', "text": "' + pad.encode() + b'"}}',
        b'{{"name": "stdout", "text": "\\\\ud800' + pad.encode() + b'"}}',
        b'{{"name": "stdout", "text": "\\xff' + pad.encode() + b'"}}',
        b'{{"name": "stdout", "text": "' + pad.encode() + b'"',
    ]
    def wire(raw, good=True):
        parts = kernel.serialize(kernel.msg("stream", content={{}}))
        parts[-1] = raw  # parts: delimiter, signature, header, parent, metadata, content
        parts[1] = kernel.sign(parts[2:6]) if good else b"0" * 64
        return parts
    def run(fn, h, parts):
        try:
            fn(h, Stream(), [b"ident"] + list(parts))
        except Exception as exc:
            return "error " + type(exc).__name__
        (data, binary), = h.sent
        h.sent.clear()
        return json.dumps([json.loads(data), binary], sort_keys=True)
    out = []
    for raw in contents:
        for good in (True, False):
            parts = wire(raw, good)
            got = {{label: run(fn, handler(), parts) for label, fn in
                   (("stock", stock), ("tuned", tuned))}}
            out.append({{"same": got["stock"] == got["tuned"], "stock": got["stock"][:40]}})
    # replay: the second delivery of one message is refused by both
    parts = wire(contents[0])
    for label, fn in (("stock", stock), ("tuned", tuned)):
        h = handler()
        out.append({{"replay": label, "first": run(fn, h, parts)[:5],
                     "second": run(fn, h, parts)}})
    print(json.dumps(out))
    """
).format(name=CONFIG_NAME, tracebacks=True)


def test_large_content_is_checked_as_stock(eg_python, tmp_path):
    write_config(tmp_path, nodelay=True)
    report = probe_report(eg_python, tmp_path, CHECK_PROBE)
    cases, replays = report[:-2], report[-2:]
    assert all(case["same"] for case in cases), cases
    accepted = [not case["stock"].startswith("error") for case in cases]
    # valid, NaN, big int, lone surrogate pass (signed); bad UTF-8, not JSON, bad signature fail
    assert accepted == [True, False, True, False, True, False, True, False] + [False] * 4
    for replay in replays:
        assert replay["first"] != "error"
        assert replay["second"] == "error ValueError"


# Server websocket frames as tornado writes them, stock and tuned: the bytes handed to the
# stream, joined, must be the same for every size and opcode (frames of 256 KiB or more only are
# split).
FRAME_PROBE = textwrap.dedent(
    """
    import json, sys
    from tornado.websocket import WebSocketProtocol13
    from traitlets.config.loader import PyFileConfigLoader

    stock = WebSocketProtocol13._write_frame
    PyFileConfigLoader("{name}", path=sys.argv[1]).load_config()
    tuned = WebSocketProtocol13._write_frame

    class Stream:
        def __init__(self):
            self.chunks = []
        def write(self, data):
            self.chunks.append(bytes(data))
            return len(self.chunks)

    def frames(fn, fin, opcode, data, mask):
        p = object.__new__(WebSocketProtocol13)
        p.stream, p.mask_outgoing, p._wire_bytes_out = Stream(), mask, 0
        fn(p, fin, opcode, data)
        return b"".join(p.stream.chunks), p._wire_bytes_out, len(p.stream.chunks)

    out = []
    for size in (0, 125, 126, 65535, 65536, 262143, 262144, 262145, 1_000_000):
        for opcode in (0x1, 0x2):
            for fin in (True, False):
                data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
                s = frames(stock, fin, opcode, data, False)
                t = frames(tuned, fin, opcode, data, False)
                out.append({{"size": size, "same": s[:2] == t[:2], "writes": t[2]}})
    data = b"y" * 100_000
    masked = frames(tuned, True, 0x1, data, True)
    out.append({{"masked": True, "writes": masked[2], "len": masked[1]}})
    print(json.dumps({{"patched": tuned is not stock, "cases": out}}))
    """
).format(name=CONFIG_NAME)


def test_large_frames_reach_the_wire_unchanged(eg_python, tmp_path):
    write_config(tmp_path, nodelay=True)
    report = probe_report(eg_python, tmp_path, FRAME_PROBE)
    assert report["patched"] is True
    *cases, masked = report["cases"]
    assert all(case["same"] for case in cases), cases
    assert {case["size"] for case in cases if case["writes"] == 2} == {262144, 262145, 1_000_000}
    # a masked (client side) frame takes the stock join, masked: 4 mask bytes more
    assert masked == {"masked": True, "writes": 1, "len": 100_000 + 10 + 4}


# On any other version of what the patches copy from, only nodelay (public API) is applied.
GUARD_PROBE = textwrap.dedent(
    """
    import json, sys
    import jupyter_client
    from jupyter_client import jsonutil
    from tornado.websocket import WebSocketProtocol13
    from traitlets.config.loader import PyFileConfigLoader
    from enterprise_gateway.services.kernels import handlers

    jupyter_client.__version__ = "6.1.13"
    cls = handlers.ZMQChannelsHandler
    before = (cls.open, cls._on_zmq_reply, jsonutil.parse_date, WebSocketProtocol13._write_frame)
    PyFileConfigLoader("{name}", path=sys.argv[1]).load_config()
    after = (cls.open, cls._on_zmq_reply, jsonutil.parse_date, WebSocketProtocol13._write_frame)
    print(json.dumps([a is not b for a, b in zip(before, after)]))
    """
).format(name=CONFIG_NAME)


def test_other_versions_stay_stock(eg_python, tmp_path):
    write_config(tmp_path, nodelay=True)
    # only `open` (nodelay) is patched
    assert probe_report(eg_python, tmp_path, GUARD_PROBE) == [True, False, False, False]
