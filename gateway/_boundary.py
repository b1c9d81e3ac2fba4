"""The sentry's guard: what may leave the hospital, decided per message, whatever the kernel did.

The in-kernel guard is cooperative; this one is not. It sees only messages, so it cannot count
the records behind an aggregate, but it reads ALL text of every message (content, every MIME
value, metadata, error tracebacks, widget state, and text hidden in base64, hex, big decimal
numbers and the other encodings `bedside.policy.scan_text` decodes), applies the MIME allowlist
and the per-output byte limit, and turns anything it will not release into a notice that names
the rule that fired and never the value that tripped it.
"""

from __future__ import annotations

import fnmatch
import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bedside.policy.decision import Action, Decision, Layer

# A finding of the text scanner: (rule, kind), e.g. ("identifier", "mrn") or ("phi", "email").
# The value itself never travels further than the scanner.
Finding = tuple[str, str]
Scan = Callable[[str], Finding | None]

# Messages whose content the guard rebuilds from a fixed shape instead of scanning.
STATUS_STATES = frozenset({"busy", "idle", "starting"})
DISPLAY_TYPES = frozenset({"display_data", "execute_result", "update_display_data"})
IOPUB_TYPES = frozenset(
    {
        "stream",
        "display_data",
        "update_display_data",
        "execute_result",
        "execute_input",
        "error",
        "status",
        "clear_output",
        "comm_open",
        "comm_msg",
        "comm_close",
        "debug_event",
        "shutdown_reply",
    }
)
REPLY_TYPES = frozenset(
    {
        "execute_reply",
        "inspect_reply",
        "complete_reply",
        "history_reply",
        "is_complete_reply",
        "kernel_info_reply",
        "comm_info_reply",
        "shutdown_reply",
        "interrupt_reply",
        "debug_reply",
        "usage_reply",
        "create_subshell_reply",
        "delete_subshell_reply",
        "list_subshell_reply",
    }
)
STDIN_TYPES = frozenset({"input_request"})

# Binary buffers may leave only when they are small text that scans clean.
MAX_TEXT_BUFFER = 64 * 1024


@dataclass
class Verdict:
    """What leaves for one kernel message: its (possibly rewritten) type, content and buffers."""

    decision: Decision
    msg_type: str
    content: dict[str, Any]
    metadata: dict[str, Any]
    buffers: list[bytes]
    changed: bool = False
    original_type: str = ""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def blocked(self) -> bool:
        return self.decision.action is Action.BLOCKED


def iter_text(obj: Any) -> Iterator[str]:
    """Every string, key and number in a JSON value, depth first."""
    stack = [obj]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield str(key)
                stack.append(item)
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int | float):
            yield str(value)


# Protocol metadata ipykernel puts on replies, kept only in its strict shape and not scanned:
# a timestamp's microseconds or a UUID would otherwise trip the date matcher by chance.
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?$")
_REPLY_STATUS = frozenset({"ok", "error", "aborted"})


def split_protocol_metadata(metadata: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the protocol fields in their strict shape, everything else, which gets scanned).

    The kernel's `engine` id is dropped: 122 free bits per message are a covert channel and no
    client needs it.
    """
    safe: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in metadata.items():
        if key == "started" and isinstance(value, str) and _ISO_TIME.match(value):
            safe[key] = value
        elif key == "dependencies_met" and isinstance(value, bool):
            safe[key] = value
        elif key == "status" and value in _REPLY_STATUS:
            safe[key] = value
        elif key == "engine":
            continue
        else:
            rest[key] = value
    return safe, rest


def _mime_allowed(mime: str, patterns: list[str]) -> bool:
    return any(mime == pat or fnmatch.fnmatchcase(mime, pat) for pat in patterns)


class BoundaryGuard:
    """Decides, for each message leaving the hospital, what of it may leave.

    `scan` is the text scanner (identifier index + PHI patterns of the policy); `mime_allow` the
    policy's MIME allowlist; `max_output_bytes` the per-output limit. `notice_suffix` is added to
    every notice (the no-sandbox warning, when the sandbox is off).
    """

    def __init__(
        self,
        scan: Scan,
        *,
        mime_allow: list[str],
        max_output_bytes: int,
        notice_suffix: str = "",
    ) -> None:
        self.scan = scan
        self.mime_allow = list(mime_allow)
        self.max_output_bytes = int(max_output_bytes)
        self.notice_suffix = notice_suffix

    # -- scanning -----------------------------------------------------------------------------

    def scan_value(self, *values: Any) -> Finding | None:
        """The first finding in all text of `values` (the scanner also reads encoded text)."""
        text = "\n".join(t for v in values for t in iter_text(v))
        if not text:
            return None
        return self.scan(text)

    def _scan_buffers(self, buffers: list[bytes]) -> Decision | None:
        for number, buf in enumerate(buffers):
            data = bytes(buf)
            if len(data) > MAX_TEXT_BUFFER:
                return Decision.block(
                    "binary_buffer",
                    f"binary buffer {number} ({len(data)} bytes) cannot be inspected",
                    "Return results as text or an allowed MIME type; binary buffers above "
                    f"{MAX_TEXT_BUFFER} bytes do not leave the hospital.",
                    layer=Layer.SENTRY,
                )
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                return Decision.block(
                    "binary_buffer",
                    f"binary buffer {number} is not text and cannot be inspected",
                    "Return results as text or an allowed MIME type.",
                    layer=Layer.SENTRY,
                )
            hit = self.scan_value(text)
            if hit is not None:
                return self._finding_decision(hit)
        return None

    def _finding_decision(self, hit: Finding) -> Decision:
        rule, kind = hit
        if rule == "identifier":
            reason = f"the output contains a patient identifier value ({kind})"
            advice = (
                "Aggregate before displaying (counts, means, models); identifier values of the "
                "protected datasets never leave the hospital."
            )
        else:
            reason = f"the output contains a personal-data pattern ({kind})"
            advice = "Remove personal data (e-mail, phone, national numbers) from the output."
        return Decision.block(rule, reason, advice, layer=Layer.SENTRY, details={"kind": kind})

    # -- the decision -------------------------------------------------------------------------

    def check(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any],
        buffers: list[bytes],
        size: int,
    ) -> Verdict:
        """The verdict for one message coming from the kernel on `channel`."""
        if msg_type == "status":
            state = content.get("execution_state")
            if state in STATUS_STATES and not buffers:
                return Verdict(
                    Decision.release(layer=Layer.SENTRY),
                    msg_type,
                    {"execution_state": state},
                    {},
                    [],
                )
            return self._blocked(
                channel,
                msg_type,
                content,
                Decision.block(
                    "malformed",
                    "a status message with unexpected content",
                    layer=Layer.SENTRY,
                ),
            )

        known = {"iopub": IOPUB_TYPES, "stdin": STDIN_TYPES}.get(channel, REPLY_TYPES)
        if msg_type not in known:
            return self._blocked(
                channel,
                msg_type,
                content,
                Decision.block(
                    "unknown_msg_type",
                    f"message type {msg_type!r} is not expected on the {channel} channel",
                    "Only standard Jupyter messages leave the hospital.",
                    layer=Layer.SENTRY,
                ),
            )

        if size > self.max_output_bytes:
            return self._blocked(
                channel,
                msg_type,
                content,
                Decision.block(
                    "max_output_bytes",
                    f"the output is {size} bytes, above the policy's limit of "
                    f"{self.max_output_bytes} bytes per output",
                    "Summarise the result or write it to a file for a reviewed release.",
                    layer=Layer.SENTRY,
                ),
            )

        decision = Decision.release(layer=Layer.SENTRY)
        dropped: list[str] = []
        if msg_type in DISPLAY_TYPES or msg_type == "inspect_reply":
            content, dropped = self._filter_bundle(content)
            if msg_type in DISPLAY_TYPES and not content.get("data"):
                return self._blocked(
                    channel,
                    msg_type,
                    content,
                    Decision.block(
                        "mime_allow",
                        "none of the output's MIME types is allowed by the policy",
                        f"Allowed types: {', '.join(self.mime_allow)}.",
                        layer=Layer.SENTRY,
                        details={"dropped": dropped},
                    ),
                )
        if msg_type == "execute_reply" and content.get("payload"):
            content, more = self._filter_payload(content)
            dropped.extend(more)

        safe_meta, metadata = split_protocol_metadata(metadata)
        hit = self.scan_value(content, metadata)
        if safe_meta:
            metadata = {**safe_meta, **metadata}
        if hit is not None:
            return self._blocked(channel, msg_type, content, self._finding_decision(hit))
        if buffers:
            buffer_block = self._scan_buffers(buffers)
            if buffer_block is not None:
                return self._blocked(channel, msg_type, content, buffer_block)

        if dropped:
            decision = Decision.redact(
                "mime_allow",
                f"dropped MIME types not allowed by the policy: {', '.join(sorted(set(dropped)))}",
                f"Allowed types: {', '.join(self.mime_allow)}.",
                layer=Layer.SENTRY,
                details={"dropped": sorted(set(dropped))},
            )
        return Verdict(decision, msg_type, content, metadata, list(buffers), changed=bool(dropped))

    def _filter_bundle(self, content: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        data = content.get("data")
        if not isinstance(data, dict):
            return content, []
        dropped = [mime for mime in data if not _mime_allowed(mime, self.mime_allow)]
        if not dropped:
            return content, []
        new = dict(content)
        new["data"] = {k: v for k, v in data.items() if k not in dropped}
        meta = content.get("metadata")
        if isinstance(meta, dict):
            new["metadata"] = {k: v for k, v in meta.items() if k not in dropped}
        return new, dropped

    def _filter_payload(self, content: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        payload = content.get("payload")
        if not isinstance(payload, list):
            return content, []
        dropped: list[str] = []
        items = []
        for item in payload:
            if isinstance(item, dict) and isinstance(item.get("data"), dict):
                item, gone = self._filter_bundle(item)
                dropped.extend(gone)
            items.append(item)
        new = dict(content)
        new["payload"] = items
        return new, dropped

    # -- notices ------------------------------------------------------------------------------

    def notice_text(self, decision: Decision) -> str:
        text = f"[bedside] Output blocked by the hospital sentry (rule: {decision.rule})"
        if decision.reason:
            text += f": {decision.reason}."
        if decision.advice:
            text += f" {decision.advice}"
        return text + self.notice_suffix

    def notice_bundle(self, decision: Decision) -> dict[str, str]:
        text = self.notice_text(decision)
        return {
            "text/plain": text,
            "text/html": (
                '<div class="bedside-notice" style="border-left:4px solid #b00;'
                'padding:4px 8px;background:#fff4f4">' + html.escape(text) + "</div>"
            ),
        }

    def _safe_ename(self, content: dict[str, Any]) -> str:
        ename = content.get("ename")
        if isinstance(ename, str) and ename.isidentifier() and len(ename) <= 64:
            if self.scan_value(ename) is None:
                return ename
        return "BedsideBlocked"

    def _blocked(
        self, channel: str, msg_type: str, content: dict[str, Any], decision: Decision
    ) -> Verdict:
        """A notice in place of a blocked message, shaped so every client shows it."""
        notice = self.notice_text(decision)
        meta = {"bedside": decision.to_metadata()}
        new_type = msg_type
        new: dict[str, Any]
        if msg_type == "stream":
            name = content.get("name") if content.get("name") in ("stdout", "stderr") else "stderr"
            new = {"name": name, "text": notice + "\n"}
        elif msg_type == "error":
            new = {"ename": self._safe_ename(content), "evalue": notice, "traceback": [notice]}
        elif msg_type in DISPLAY_TYPES:
            new = {"data": self.notice_bundle(decision), "metadata": {}}
            if msg_type == "execute_result":
                count = content.get("execution_count")
                new["execution_count"] = count if isinstance(count, int) else None
            else:
                new["transient"] = {}
                if msg_type == "update_display_data":
                    # An update needs a display id we can no longer trust: show a new notice.
                    new_type = "display_data"
        elif msg_type == "input_request":
            new = {"prompt": notice + "\n", "password": bool(content.get("password", False))}
        elif channel == "iopub":
            # comm traffic, execute_input, unknown types: a display notice in the cell instead.
            new_type = "display_data"
            new = {"data": self.notice_bundle(decision), "metadata": {}, "transient": {}}
        else:
            new = self._blocked_reply(msg_type, content, notice)
        return Verdict(
            decision,
            new_type,
            new,
            meta,
            [],
            changed=True,
            original_type=msg_type,
        )

    def _blocked_reply(self, msg_type: str, content: dict[str, Any], notice: str) -> dict[str, Any]:
        status = content.get("status")
        if msg_type != "execute_reply" or status not in ("ok", "error", "aborted"):
            status = "error"
        new: dict[str, Any] = {"status": status}
        if status == "error":
            ename = self._safe_ename(content) if content.get("status") == "error" else ""
            new.update(ename=ename or "BedsideBlocked", evalue=notice, traceback=[notice])
        if msg_type == "execute_reply":
            count = content.get("execution_count")
            new["execution_count"] = count if isinstance(count, int) else None
            new["payload"] = []
            expressions = content.get("user_expressions")
            new["user_expressions"] = {
                key: {
                    "status": "error",
                    "ename": "BedsideBlocked",
                    "evalue": notice,
                    "traceback": [],
                }
                for key in (expressions if isinstance(expressions, dict) else {})
                if isinstance(key, str) and self.scan_value(key) is None
            }
        elif msg_type == "complete_reply":
            new.update(matches=[], cursor_start=0, cursor_end=0, metadata={})
        elif msg_type == "inspect_reply":
            new.update(found=False, data={}, metadata={})
        elif msg_type == "history_reply":
            new["history"] = []
        return new
