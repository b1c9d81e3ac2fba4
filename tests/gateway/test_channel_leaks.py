"""Every place a hostile kernel can put a patient's identifier, from the attacker's side.

A plain ipykernel sits behind the sentry (no in-kernel guard: what hostile code that switched it
off amounts to). Cells reach into the kernel (`get_ipython().kernel`) and send what a hostile
kernel can send: chosen header and parent-header fields, metadata, `transient`, display ids,
binary buffers, comm traffic, stdin prompts, replies to real requests (completion, inspection,
history, is_complete, kernel_info, comm_info, usage, debug, interrupt) with identifier values in
any field, execute-reply payloads, errors, unknown message types, duplicated keys, numbers,
lists of characters, values split over fields or beside an execution count, deep nesting and
many tiny messages. Everything the client receives, on every channel, in any part of any
message (header, parent header, metadata with its receipt, content, buffers), is judged by
`ChannelOracle`, written for this test and independent of `bedside.policy`. The heartbeat is
probed on a sentry run in-process (what it sends is what the client gets).

The second half checks that honest use of the same channels still works: completion,
inspection, widgets' comm traffic, input(), history and the debugger (its variable explorer
with the patient table loaded), and that an honest reply keeps its `started` time.
"""

from __future__ import annotations

import re
import sys
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import ahocorasick
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _sentry_support import Client, LeakOracle, make_patients, notices  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return make_patients(300, seed=41)


# -- the oracle ---------------------------------------------------------------------------------


def _leaves(obj: Any, part: str = "all") -> Iterator[str]:
    """Every string, key and number of a message in document order, bytes as text; `part`
    "values" or "keys" for those alone."""
    if isinstance(obj, str):
        if part != "keys":
            yield obj
    elif isinstance(obj, bool) or obj is None:
        return
    elif isinstance(obj, int | float):
        if part != "keys":
            yield str(obj)
    elif isinstance(obj, bytes | bytearray | memoryview):
        if part != "keys":
            yield bytes(obj).decode("utf-8", errors="ignore")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if part != "values":
                yield str(key)
            yield from _leaves(value, part)
    elif isinstance(obj, list | tuple):
        for value in obj:
            yield from _leaves(value, part)


_INVISIBLE = re.compile(r"[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")


def _seen(text: str) -> str:
    """A text roughly as shown: compatibility forms folded, invisible characters dropped."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).lower()


class ChannelOracle:
    """Which identifier columns a client received, in any part of any message.

    Beyond `LeakOracle` (each message's JSON, base64 and big-number views, a cell's streams
    joined), a message also counts when its leaves (strings, keys, numbers, buffers), in
    document order, hold a value once joined with nothing or a space between (all of them, the
    values alone, the keys alone): a value split over fields, keys or list items, or written
    as a list of characters. Besides each value
    it looks for a name or postcode without its spaces, a phone's digits (also as a JSON
    number, which drops the leading zero) and a date of birth as three numbers.
    A message with an execution count is also read with the count first, as JupyterLab shows
    it. A record number's digits alone are not looked for (a documented limit of the sentry).
    Long random-looking tokens (signatures, salts, digests, ids) are left out of the joins;
    `LeakOracle` still reads them, and their base64.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.base = LeakOracle(frame)
        self.words = ahocorasick.Automaton()
        for column in ("mrn", "name", "dob", "postcode", "phone"):
            for value in frame[column].astype(str):
                for form in self._forms(column, value.strip()):
                    if len(form) >= 6:
                        self.words.add_word(form.lower(), column)
        self.words.make_automaton()

    @staticmethod
    def _forms(column: str, value: str) -> list[str]:
        forms = [value, value.replace(" ", "")]
        if column == "phone":
            digits = re.sub(r"\D", "", value)
            forms += [digits, digits.lstrip("0")]
        if column == "dob":
            y, m, d = (int(p) for p in value.split("-"))
            forms += [f"{y} {m} {d}", f"{d} {m} {y}", f"{m} {d} {y}"]
        return forms

    def _find(self, text: str) -> set[str]:
        return {column for _, column in self.words.iter(_seen(text))}

    def leaks(self, received: list[tuple[str, dict[str, Any]]]) -> list[str]:
        messages = [msg for _, msg in received]
        found = set(self.base.leaks_shown(messages))
        for msg in messages:
            parts = {k: msg.get(k) for k in _PARTS}
            found |= self._find("\n".join(t for t in _leaves(parts) if not _TOKEN.match(t)))
            count = (msg.get("content") or {}).get("execution_count")
            for part in ("all", "values", "keys"):
                leaves = [t for t in _leaves(parts, part) if not _TOKEN.match(t)]
                found |= self._find("".join(leaves))
                found |= self._find(" ".join(leaves))
                if isinstance(count, int) and part == "values":
                    # JupyterLab shows `[count]:` right before the output.
                    content = [t for t in _leaves(msg.get("content"), part) if t != str(count)]
                    found |= self._find(f"{count}" + "".join(content))
                    found |= self._find(f"{count} " + " ".join(content))
        return sorted(found)


# A signature, salt, digest, root or id: joined to its neighbours, random text of that length
# (hundreds of them in a cell's receipts) spells a six-character value by chance now and then.
_TOKEN = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9+/=_:.-]{20,}$")

_PARTS = ("header", "parent_header", "msg_type", "metadata", "content", "buffers")


# -- driving the hostile kernel ---------------------------------------------------------------

# What the hostile cells use: the kernel's own session and sockets, and a way to answer the
# next request of a type with any message (the handler is put back after one use).
KIT = r"""
import asyncio, getpass, json as _json
_k = get_ipython().kernel
_S = _k.session
_SHELL, _CONTROL = dict(_k.shell_handlers), dict(_k.control_handlers)

def _row(i):
    r = df.iloc[i]
    return str(r.mrn), str(r["name"]), str(r.dob), str(r.postcode), str(r.phone)

def _iopub(msg_type, content, metadata=None, buffers=None, header=None, parent=None):
    parent = _k.get_parent("shell") if parent is None else parent
    msg = _S.msg(msg_type, content, parent=parent, metadata=metadata, header=header)
    if header is not None:
        msg["msg_type"] = header["msg_type"]
    _S.send(_k.iopub_socket, msg, ident=b"kernel.hostile", buffers=buffers)

def _stdin(content):
    _S.send(_k.stdin_socket, "input_request", content, parent=_k.get_parent("shell"),
            ident=_k._parent_ident["shell"])

def _answer(request_type, reply_type, content, metadata=None, buffers=None, header=None):
    async def handler(stream, ident, parent):
        _k.shell_handlers.update(_SHELL)
        _k.control_handlers.update(_CONTROL)
        msg = _S.msg(reply_type, content, parent=parent, metadata=metadata, header=header)
        _S.send(stream, msg, ident=ident, buffers=buffers)
    _k.shell_handlers[request_type] = handler
    _k.control_handlers[request_type] = handler
"""


@pytest.fixture(scope="module")
def kit(hostile: tuple[Client, LeakOracle, pd.DataFrame]) -> tuple[Client, ChannelOracle]:
    client, _, frame = hostile
    reply, _ = client.execute(KIT)
    assert reply["content"]["status"] == "ok", reply["content"]
    return client, ChannelOracle(frame)


def _collect(client: Client, seconds: float = 0.3) -> None:
    """What else arrives on any channel within `seconds` of quiet."""
    kc = client.kc
    channels = (
        ("iopub", kc.iopub_channel),
        ("shell", kc.shell_channel),
        ("stdin", kc.stdin_channel),
        ("control", kc.control_channel),
    )
    quiet_until = time.monotonic() + seconds
    while time.monotonic() < quiet_until:
        got = False
        for name, channel in channels:
            try:
                client.received.append((name, channel.get_msg(timeout=0.02)))
                got = True
            except Empty:
                pass
        if got:
            quiet_until = time.monotonic() + seconds


def _control(client: Client, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    msg = client.kc.session.msg(msg_type, content)
    client.kc.control_channel.send(msg)
    deadline = time.monotonic() + 30
    while True:
        reply = client.kc.control_channel.get_msg(timeout=max(0.1, deadline - time.monotonic()))
        client.received.append(("control", reply))
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply


def probe(
    client: Client,
    code: str,
    request: tuple[str, str, dict[str, Any]] | None = None,
    *,
    stdin_reply: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Run a hostile cell (and then send `request`: channel, type, content); all received."""
    before = len(client.received)
    reply, _ = client.execute(code, stdin_reply=stdin_reply)
    assert reply["msg_type"] == "execute_reply"
    if request is not None:
        channel, msg_type, content = request
        if channel == "control":
            _control(client, msg_type, content)
        else:
            client.request(msg_type, content)
    _collect(client)
    return client.received[before:]


def _execute_one(user_expressions: dict[str, str] | None = None) -> tuple[str, str, dict[str, Any]]:
    """A client's `execute_request` of `1`, for probes that answer it themselves."""
    content = {"code": "1", "silent": False, "store_history": True, "allow_stdin": False}
    return "shell", "execute_request", {**content, "user_expressions": user_expressions or {}}


_EXECUTE_ONE = _execute_one()


# (id, hostile cell; `mrn, name, dob, pc, phone = _row(i)` comes first, request or None)
PROBES: list[tuple[str, str, tuple[str, str, dict[str, Any]] | None]] = [
    # -- header, parent header, metadata, transient, buffers (iopub)
    (
        "header fields",
        "h = _S.msg_header('stream'); h.update(msg_id=mrn, username=name, session=phone,"
        " date=dob, version=pc)\n_iopub('stream', {'name': 'stdout', 'text': 'hi\\n'}, header=h)",
        None,
    ),
    (
        "parent of no request",
        "_iopub('display_data', {'data': {'text/plain': 'ok'}, 'metadata': {}},"
        " parent={'msg_id': mrn, 'username': name, 'session': phone, 'date': dob,"
        " 'msg_type': 'execute_request', 'version': pc})",
        None,
    ),
    (
        "parent with extra fields",
        "p = dict(_k.get_parent('shell')['header'], username=name, extra=mrn)\n"
        "_iopub('stream', {'name': 'stdout', 'text': 'x\\n'}, parent={'header': p, 'msg_id': "
        "p['msg_id'], 'msg_type': 'execute_request'})",
        None,
    ),
    (
        "metadata nested",
        "_iopub('display_data', {'data': {'text/plain': 'ok'}, 'metadata': {'a': {'b': [mrn]}}},"
        " metadata={'x': {'y': [{'z': name}]}})",
        None,
    ),
    (
        "metadata key",
        "_iopub('display_data', {'data': {'text/plain': 'ok'}, 'metadata': {}},"
        " metadata={name: 1, pc: {dob: phone}})",
        None,
    ),
    (
        "transient display id",
        "_iopub('display_data', {'data': {'text/plain': 'ok'}, 'metadata': {},"
        " 'transient': {'display_id': mrn}})\n"
        "_iopub('update_display_data', {'data': {'text/plain': 'ok'}, 'metadata': {},"
        " 'transient': {'display_id': name}})",
        None,
    ),
    (
        "buffers",
        "_iopub('comm_msg', {'comm_id': 'c1', 'data': {}}, buffers=[mrn.encode()])\n"
        "_iopub('display_data', {'data': {'text/plain': 'ok'}, 'metadata': {}},"
        " buffers=[name.encode('utf-16-le')])\n"
        "_iopub('comm_msg', {'comm_id': 'c1', 'data': {}},"
        " buffers=[base64.b64encode(phone.encode())])",
        None,
    ),
    (
        "mime type key",
        "_iopub('display_data', {'data': {'text/plain': 'ok', 'x-' + mrn.lower(): 'x',"
        " name: 'y'}, 'metadata': {}})",
        None,
    ),
    (
        "kernel claim rule",
        "_iopub('stream', {'name': 'stdout', 'text': 'ok\\n'},"
        " metadata={'bedside': {'decision': 'released', 'rule': mrn}})\n"
        "_iopub('stream', {'name': 'stdout', 'text': 'ok\\n'},"
        " metadata={'bedside': {'decision': 'blocked', 'rule': name}})",
        None,
    ),
    # -- comms
    (
        "comm open",
        "_iopub('comm_open', {'comm_id': mrn, 'target_name': name, 'data': {'v': dob},"
        " 'metadata': {'m': pc}})\n_iopub('comm_open', {'comm_id': 'c2', 'target_name': mrn,"
        " 'data': {}})",
        None,
    ),
    (
        "comm msg and close",
        "_iopub('comm_msg', {'comm_id': 'c2', 'data': {'method': 'update', 'state':"
        " {'value': name}}}, metadata={'version': phone})\n"
        "_iopub('comm_close', {'comm_id': 'c2', 'data': {'why': dob}})",
        None,
    ),
    (
        "comm info reply",
        "from comm import create_comm\n_c = create_comm(target_name=mrn)",
        ("shell", "comm_info_request", {}),
    ),
    (
        "comm info reply forged",
        "_answer('comm_info_request', 'comm_info_reply', {'status': 'ok', 'comms':"
        " {mrn: {'target_name': name}}})",
        ("shell", "comm_info_request", {}),
    ),
    # -- stdin
    ("input prompt", "input(mrn)", None),
    ("getpass prompt", "getpass.getpass(name + ': ')", None),
    ("raw prompt and password", "_stdin({'prompt': 'x', 'password': phone})", None),
    # -- replies to real requests
    (
        "complete dict keys",
        "d = {m: 1 for m in df.mrn.head(30)}",
        ("shell", "complete_request", {"code": 'd["', "cursor_pos": 3}),
    ),
    (
        "complete metadata",
        "_answer('complete_request', 'complete_reply', {'status': 'ok', 'matches': ['abc'],"
        " 'cursor_start': 0, 'cursor_end': 1, 'metadata': {'_jupyter_types_experimental':"
        " [{'text': mrn, 'type': 'instance', 'signature': name, 'start': 0, 'end': 1}]}})",
        ("shell", "complete_request", {"code": "a", "cursor_pos": 1}),
    ),
    (
        "inspect repr",
        "class Obj:\n    '''Patient ''' \n    def __repr__(self): return name\n"
        "obj = Obj(); Obj.__doc__ = 'about ' + mrn",
        ("shell", "inspect_request", {"code": "obj", "cursor_pos": 3, "detail_level": 0}),
    ),
    (
        "inspect a table",
        "t = df.head(3)",
        ("shell", "inspect_request", {"code": "t", "cursor_pos": 1, "detail_level": 0}),
    ),
    (
        "inspect source",
        "exec(f'def secret():\\n    return {pc!r}\\n', globals())",
        ("shell", "inspect_request", {"code": "secret", "cursor_pos": 6, "detail_level": 1}),
    ),
    (
        "history stored",
        "get_ipython().history_manager.store_inputs(9999, f'x = {name!r}')",
        (
            "shell",
            "history_request",
            {"hist_access_type": "tail", "n": 5, "output": False, "raw": True},
        ),
    ),
    (
        "history forged",
        "_answer('history_request', 'history_reply', {'status': 'ok', 'history':"
        " [[0, 1, dob], [0, 2, [mrn, phone]]]})",
        (
            "shell",
            "history_request",
            {"hist_access_type": "tail", "n": 5, "output": True, "raw": True},
        ),
    ),
    (
        "is complete indent",
        "_answer('is_complete_request', 'is_complete_reply', {'status': 'incomplete',"
        " 'indent': name})",
        ("shell", "is_complete_request", {"code": "if x:"}),
    ),
    (
        "kernel info",
        "_answer('kernel_info_request', 'kernel_info_reply', {'status': 'ok',"
        " 'protocol_version': '5.3', 'implementation': 'ipython', 'banner': 'hi ' + name,"
        " 'help_links': [{'text': mrn, 'url': 'https://x.org/' + pc.replace(' ', '')}],"
        " 'language_info': {'name': 'python', 'version': dob, 'mimetype': phone}})",
        ("shell", "kernel_info_request", {}),
    ),
    (
        "usage reply",
        "_answer('usage_request', 'usage_reply', {'hostname': name, 'pid': 1, 'x': {'y': mrn}})",
        ("control", "usage_request", {}),
    ),
    (
        "debug reply",
        "_answer('debug_request', 'debug_reply', {'type': 'response', 'success': True, 'seq': 1,"
        " 'command': 'variables', 'body': {'variables': [{'name': 'x', 'value': mrn,"
        " 'type': name, 'evaluateName': pc}]}})",
        (
            "control",
            "debug_request",
            {
                "type": "request",
                "seq": 1,
                "command": "variables",
                "arguments": {"variablesReference": 1},
            },
        ),
    ),
    (
        "debug event",
        "_iopub('debug_event', {'type': 'event', 'event': 'output', 'seq': 3,"
        " 'body': {'output': dob, 'category': name}})",
        None,
    ),
    (
        "interrupt reply",
        "_answer('interrupt_request', 'interrupt_reply', {'status': 'ok', 'why': mrn})",
        ("control", "interrupt_request", {}),
    ),
    (
        "shutdown reply on iopub",
        "_iopub('shutdown_reply', {'status': 'ok', 'restart': False, 'who': name})",
        None,
    ),
    (
        "reply error fields",
        "_answer('inspect_request', 'inspect_reply', {'status': 'error', 'ename': mrn,"
        " 'evalue': name, 'traceback': [dob]})",
        ("shell", "inspect_request", {"code": "x", "cursor_pos": 1, "detail_level": 0}),
    ),
    # -- execute replies
    ("set next input", "get_ipython().set_next_input(mrn)", None),
    (
        "page and edit payloads",
        "pm = get_ipython().payload_manager\n"
        "pm.write_payload({'source': 'page', 'data': {'text/plain': name}, 'start': 0})\n"
        "pm.write_payload({'source': 'edit_magic', 'filename': pc, 'line_number': 1})",
        None,
    ),
    (
        "execute reply started",
        "_answer('execute_request', 'execute_reply', {'status': 'ok', 'execution_count': 5,"
        " 'user_expressions': {}, 'payload': []}, metadata={'started': dob + 'T00:00:00Z',"
        " 'dependencies_met': True, 'status': 'ok'})",
        _EXECUTE_ONE,
    ),
    (
        "user expressions",
        "pass",
        _execute_one(user_expressions={"a": "mrn", "b": "list(name)", "c": "{pc: phone}"}),
    ),
    (
        "error names",
        "E = type('E' + mrn[3:], (Exception,), {})\nraise E(name)",
        None,
    ),
    (
        "error reply forged",
        "_answer('execute_request', 'execute_reply', {'status': 'error', 'execution_count': 6,"
        " 'ename': mrn, 'evalue': name, 'traceback': [dob], 'user_expressions': {pc: 1}})",
        _EXECUTE_ONE,
    ),
    # -- unusual shapes
    (
        "unknown types",
        "_iopub(mrn, {'x': 1})\n_iopub('custom_thing', {'x': name})\n"
        "_iopub('status', {'execution_state': 'busy', 'who': phone})",
        None,
    ),
    (
        "unknown reply type",
        "_answer('is_complete_request', 'x_' + mrn.lower(), {'status': 'ok'})",
        ("shell", "is_complete_request", {"code": "x"}),
    ),
    (
        "duplicated keys",
        'raw = (\'{"name": "stdout", "text": \' + _json.dumps(mrn) + \', "text": "ok\\\\n",'
        " \"Text\": ' + _json.dumps(name) + '}').encode()\n"
        "_S.send(_k.iopub_socket, 'stream', raw, parent=_k.get_parent('shell'), ident=b'k')",
        None,
    ),
    (
        "numbers",
        "y, m, d = map(int, dob.split('-'))\n"
        "_iopub('display_data', {'data': {'text/plain': 'ok', 'application/json': {'p':"
        " int(''.join(c for c in phone if c.isdigit()))}}, 'metadata': {}})\n"
        "_iopub('display_data', {'data': {'text/plain': 'ok'}, 'metadata': {}},"
        " metadata={'p': float(''.join(c for c in phone if c.isdigit()))})\n"
        "_iopub('comm_msg', {'comm_id': 'c3', 'data': {'dob': [y, m, d]}})\n"
        "_iopub('comm_msg', {'comm_id': 'c3', 'data': {'dob': [d, m, y]}})",
        None,
    ),
    (
        "split and spelled out",
        "_iopub('comm_msg', {'comm_id': 'c4', 'data': {'v': list(mrn)}})\n"
        "_iopub('comm_msg', {'comm_id': 'c4', 'data': {'v': list(name)}})\n"
        "_iopub('comm_msg', {'comm_id': 'c4', 'data': {'v': name.split()}})\n"
        "_iopub('comm_msg', {'comm_id': 'c4', 'data': {'a': mrn[:6], 'b': mrn[6:]}})\n"
        "_iopub('display_data', {'data': {'text/plain': 'ok', 'application/json':"
        " list(dob)}, 'metadata': {}})",
        None,
    ),
    (
        "split across fields",
        "_iopub('comm_open', {'comm_id': mrn[:6], 'target_name': mrn[6:], 'data': {}})\n"
        "_iopub('stream', {'name': 'stdout', 'text': name[:5]}, metadata={'x': name[5:]})\n"
        "_iopub('comm_msg', {'comm_id': 'c5', 'data': {'a': {'x': pc[:3]}, 'b': {'y': pc[3:]}}})\n"
        "_iopub('comm_msg', {'comm_id': 'c5', 'data': {phone[:6]: 1, phone[6:]: 2}})\n"
        "_iopub('display_data', {'data': {'text/plain': dob[:5], 'text/html': dob[5:]},"
        " 'metadata': {}})\n"
        "_iopub('stream', {'name': mrn, 'text': 'x'})",
        None,
    ),
    (
        "execution counts",
        "_iopub('execute_result', {'data': {'text/plain': mrn[:5]}, 'metadata': {},"
        " 'execution_count': int(mrn[5:])})\n"
        "_iopub('execute_result', {'data': {'text/plain': dob[4:]}, 'metadata': {},"
        " 'execution_count': int(dob[:4])})\n"
        "_iopub('comm_msg', {'comm_id': 'c6', 'data': {'a': mrn[:5],"
        " 'execution_count': int(mrn[5:])}})",
        None,
    ),
    (
        "deep nesting",
        'n = 100_000\nraw = (\'{"data": {"text/plain": "ok"}, "metadata": {}, "x": \''
        " + '[' * n + _json.dumps(mrn) + ']' * n + '}').encode()\n"
        "_S.send(_k.iopub_socket, 'display_data', raw, parent=_k.get_parent('shell'),"
        " ident=b'k')\n"
        "_iopub('display_data', {'data': {'text/plain': 'ok'}, 'metadata': {}}, metadata="
        "_json.loads('{\"a\": ' + '[' * 800 + _json.dumps(name) + ']' * 800 + '}'))",
        None,
    ),
    (
        "many tiny messages",
        "for i in range(1500):\n"
        "    _iopub('stream', {'name': 'stdout', 'text': name[i % len(name)]})",
        None,
    ),
]


@pytest.mark.parametrize(("name", "code", "request_"), PROBES, ids=[p[0] for p in PROBES])
def test_no_identifier_reaches_the_client(kit, name, code, request_):
    client, oracle = kit
    number = [p[0] for p in PROBES].index(name) + 10
    cell = f"mrn, name, dob, pc, phone = _row({number})\n{code}"
    stdin = "x" if ("input(" in code or "getpass" in code) else None
    received = probe(client, cell, request_, stdin_reply=stdin)
    assert received, "nothing came back"
    assert not oracle.leaks(received), [
        (ch, m["msg_type"]) for ch, m in received if oracle.leaks([(ch, m)])
    ]


# -- honest use of the same channels ------------------------------------------------------------


def _blocked(received: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [n for n in notices([m for _, m in received]) if n.get("decision") == "blocked"]


def test_completion_and_inspection_work(kit):
    client, _ = kit
    _collect(client)  # what an earlier probe still sends is not this test's
    before = len(client.received)
    client.execute("honest = {'alpha': 1, 'beta': 2}")
    reply = client.request("complete_request", {"code": "honest['", "cursor_pos": 8})
    assert reply["content"]["status"] == "ok"
    assert any("alpha" in m for m in reply["content"]["matches"]), reply["content"]
    reply = client.request("complete_request", {"code": "df.ag", "cursor_pos": 5})
    assert "age" in [m.rsplit(".", 1)[-1] for m in reply["content"]["matches"]]
    typed = reply["content"]["metadata"].get("_jupyter_types_experimental")
    assert typed, "the kernel's typed completions reach the client"
    reply = client.request("inspect_request", {"code": "len", "cursor_pos": 3, "detail_level": 0})
    assert reply["content"]["found"] and "len" in reply["content"]["data"]["text/plain"]
    assert not _blocked(client.received[before:])


def test_an_honest_execute_reply_keeps_its_started_time(kit):
    client, _ = kit
    reply, _ = client.execute("x = 1")
    assert re.match(r"\d{4}-\d{2}-\d{2}T", reply["metadata"]["started"])


def test_widget_comm_traffic_works(kit):
    client, _ = kit
    _collect(client)  # what an earlier probe still sends is not this test's
    before = len(client.received)
    _, outputs = client.execute(
        "import ipywidgets as widgets\n"
        "slider = widgets.IntSlider(value=3, min=0, max=10, description='age band')\n"
        "display(slider)"
    )
    opened = [m for m in outputs if m["msg_type"] == "comm_open"]
    assert opened and all(m["content"]["target_name"] == "jupyter.widget" for m in opened)
    model = next(
        m for m in opened if m["content"]["data"]["state"]["_model_name"] == "IntSliderModel"
    )
    comm_id = model["content"]["comm_id"]
    assert model["content"]["data"]["state"]["value"] == 3
    # The front end moves the slider; the kernel sees it and echoes the state back.
    update = {"method": "update", "state": {"value": 7}, "buffer_paths": []}
    msg = client.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": update})
    client.kc.shell_channel.send(msg)
    _, outputs = client.execute("print(slider.value)")
    assert "7" in "".join(m["content"].get("text", "") for m in outputs)
    reply = client.request("comm_info_request", {"target_name": "jupyter.widget"})
    assert comm_id in reply["content"]["comms"]
    assert not _blocked(client.received[before:])


def test_input_and_getpass_work(kit):
    client, _ = kit
    _collect(client)  # what an earlier probe still sends is not this test's
    before = len(client.received)
    _, outputs = client.execute(
        "answer = input('Your answer: ')\nsecret = getpass.getpass('Password: ')\n"
        "print(answer, len(secret))",
        stdin_reply="42",
    )
    prompts = [m["content"] for ch, m in client.received[before:] if ch == "stdin"]
    assert prompts == [
        {"prompt": "Your answer: ", "password": False},
        {"prompt": "Password: ", "password": True},
    ]
    assert "42 2" in "".join(m["content"].get("text", "") for m in outputs)
    assert not _blocked(client.received[before:])


def test_history_works(kit):
    client, _ = kit
    client.execute("history_marker = 'ward totals'")
    # (a search: the tail may hold a hostile probe's entry, which the sentry rightly blocks)
    reply = client.request(
        "history_request",
        {
            "hist_access_type": "search",
            "pattern": "history_marker*",
            "n": 5,
            "unique": True,
            "output": False,
            "raw": True,
        },
    )
    assert reply["content"]["status"] == "ok", reply["content"]
    assert any("history_marker" in item[2] for item in reply["content"]["history"])


def test_the_debugger_answers(kit):
    client, _ = kit
    _collect(client)  # what an earlier probe still sends is not this test's
    before = len(client.received)
    seq = iter(range(1, 100))

    def debug(command: str, arguments: dict[str, Any]) -> dict[str, Any]:
        request = {"type": "request", "seq": next(seq), "command": command, "arguments": arguments}
        return _control(client, "debug_request", request)["content"]

    reply = debug(
        "initialize",
        {
            "clientID": "test",
            "adapterID": "python",
            "pathFormat": "path",
            "linesStartAt1": True,
            "columnsStartAt1": True,
            "supportsVariableType": True,
        },
    )
    assert reply.get("success"), reply
    assert reply["body"].get("supportsConditionalBreakpoints")
    reply = debug("attach", {})
    assert reply.get("success"), reply
    info = debug("debugInfo", {})
    assert info.get("success") and "tmpFilePrefix" in info["body"], info
    # The variable explorer: the patient table's entry is withheld, the rest is shown.
    client.execute("honest_total = 42")
    reply = debug("inspectVariables", {})
    assert reply.get("success"), reply
    shown = {v["name"]: v for v in reply["body"]["variables"]}
    assert shown["honest_total"]["value"] == "42"
    assert shown["df"]["value"].startswith("[bedside] withheld")
    reply = debug("disconnect", {"restart": False, "terminateDebuggee": False})
    assert reply.get("success"), reply
    _collect(client)
    assert not _blocked(client.received[before:])


def test_a_blocked_debug_reply_is_a_failed_dap_response():
    from bedside.gateway._boundary import BoundaryGuard

    guard = BoundaryGuard(
        lambda text: ("identifier", "mrn") if "MRN123" in text else None,
        mime_allow=["text/plain"],
        max_output_bytes=10**6,
    )
    reply = {
        "type": "response",
        "request_seq": 7,
        "success": True,
        "command": "evaluate",
        "body": {"result": "MRN12345678"},
    }
    verdict = guard.check("control", "debug_reply", reply, {}, [], 100)
    assert verdict.blocked
    assert verdict.content["type"] == "response" and verdict.content["success"] is False
    assert verdict.content["command"] == "evaluate" and verdict.content["request_seq"] == 7
    assert "MRN123" not in str(verdict.content)


def test_started_times_keep_only_days_around_now_that_name_no_patient():
    from datetime import UTC, datetime, timedelta

    from bedside.gateway._boundary import BoundaryGuard

    today = datetime.now(UTC)
    born = (today - timedelta(days=1)).strftime("%Y-%m-%d")
    guard = BoundaryGuard(
        lambda text: ("identifier", "dob") if born in text else None,
        mime_allow=["text/plain"],
        max_output_bytes=10**6,
    )
    reply = {"status": "ok", "execution_count": 1, "user_expressions": {}, "payload": []}

    def started(value: str) -> str | None:
        verdict = guard.check("shell", "execute_reply", reply, {"started": value}, [], 10)
        assert not verdict.blocked
        return verdict.metadata.get("started")

    now = today.isoformat().replace("+00:00", "Z")
    assert started(now) == now
    assert started((today - timedelta(days=3)).isoformat()) is None
    assert started(born + "T10:00:00Z") is None


def test_the_heartbeat_lets_out_only_echoes_of_pings(tmp_path, frame):
    """What the kernel writes on its heartbeat socket reaches the client only as the exact
    echo of a ping the client sent (the sentry as its relay runs it, sockets captured)."""
    from _sentry_support import in_process_sentry, make_hospital

    hospital = make_hospital(tmp_path / "hospital", frame=frame.head(50))
    sentry, _, _ = in_process_sentry(hospital, tmp_path, guard=False)
    try:
        value = str(frame.mrn.iloc[3]).encode()
        sentry._hb_from_kernel([value])
        sentry._hb_from_client([b"ping-1"])
        sentry._hb_from_kernel([b"ping-1", value])
        sentry._hb_from_kernel([b"ping-1"])
        sentry._hb_from_kernel([b"ping-1"])
        assert sentry._sockets["outer_hb"].sent == [[b"ping-1"]]
    finally:
        sentry.ledger.close()


def test_a_shutdown_reply_with_extra_fields_leaks_nothing(tmp_path, frame):
    """On a sentry of its own: the shutdown request ends the session of the one it reaches."""
    from _sentry_support import make_hospital, start_sentry

    hospital = make_hospital(tmp_path / "hospital", frame=frame)
    sentry = start_sentry(hospital, tmp_path / "run")
    client = None
    try:
        client = Client.connect(sentry)
        setup = f"import pandas as pd\ndf = pd.read_parquet({str(hospital.data)!r})\n{KIT}"
        reply, _ = client.execute(setup)
        assert reply["content"]["status"] == "ok", reply["content"]
        cell = (
            "mrn, name, dob, pc, phone = _row(5)\n"
            "_answer('shutdown_request', 'shutdown_reply', {'status': 'ok', 'restart': False,"
            " 'who': mrn, 'when': {'born': dob}})"
        )
        received = probe(client, cell, ("control", "shutdown_request", {"restart": False}))
        replies = [m for ch, m in received if ch == "control"]
        assert replies and replies[-1]["msg_type"] == "shutdown_reply"
        assert not ChannelOracle(frame).leaks(received)
    finally:
        if client is not None:
            client.close()
        sentry.stop()


def test_long_honest_arrays_are_not_blocked(kit):
    """Joined, 10,000 class labels would make one run of 10,000 digits (more than the decoders
    convert: the scanner failed, and failing closed blocked the output); runs are bounded."""
    client, _ = kit
    _collect(client)
    code = (
        "labels = np.random.default_rng(0).integers(0, 10, 10_000).tolist()\n"
        "costs = np.random.default_rng(1).normal(5000, 900, 2_000).round(2).tolist()\n"
        "display({'text/plain': 'arrays', 'application/json': {'labels': labels,"
        " 'costs': costs}}, raw=True)"
    )
    _, outputs = client.execute(code)
    shown = [m for m in outputs if m["msg_type"] == "display_data"]
    assert shown and shown[0]["content"]["data"]["application/json"]["labels"][:3]
    assert not notices(outputs), notices(outputs)
