"""The sentry's guard: what may leave the hospital, decided per message, whatever the kernel did.

The in-kernel guard is cooperative; this one is not. It sees only messages, so it cannot count
the records behind an aggregate, but it reads ALL text of every message (content, every MIME
value, metadata, error tracebacks, widget state, and text hidden in base64, hex, big decimal
numbers and the other encodings `bedside.policy.scan_text` decodes), applies the MIME allowlist
and the per-output byte limit, and turns anything it will not release into a notice that names
the rule that fired and never the value that tripped it.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import html
import logging
import re
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bedside.policy.decision import Action, Decision, Layer

log = logging.getLogger("bedside.sentry")

# A finding of the text scanner: (rule, kind), e.g. ("identifier", "mrn") or ("phi", "email").
# The value itself never travels further than the scanner.
Finding = tuple[str, str]
Scan = Callable[[str], Finding | None]
# The scanner asked only for what crosses a position of the text: (text, seam) -> finding.
SeamScan = Callable[[str, int], Finding | None]


class PolicyScan(Protocol):
    """A policy's scanner (`policy_scanner`): a `Scan` that can also be given a seam."""

    def __call__(self, text: str, seam: int | None = None) -> Finding | None: ...


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


# A kernel-claimed rule name is recorded in the ledger as is, so keep it short.
MAX_CLAIMED_RULE = 64
# What a name the kernel chose must look like to be repeated in a notice or an entry.
_PLAIN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.+/:-]{0,63}$")
# The largest execution count a notice repeats (the scanner skips counts below it).
MAX_EXECUTION_COUNT = 1_000_000


def kernel_claim(metadata: Any) -> Decision | None:
    """The in-kernel guard's decision carried by a kernel message, or None if it made none.

    Everything in a kernel message is the kernel's word, so the claim is the kernel layer's
    whatever layer it names; the ledger records it beside the sentry's own verdict.
    """
    said = metadata.get("bedside") if isinstance(metadata, dict) else None
    if not isinstance(said, dict):
        return None
    try:
        action = Action(said.get("decision"))
    except ValueError:
        return None
    rule = said.get("rule")
    rule = rule[:MAX_CLAIMED_RULE] if isinstance(rule, str) and rule else "unnamed"
    return Decision(action, rule, layer=Layer.KERNEL)


def _small_count(count: Any) -> bool:
    return type(count) is int and 0 <= count < MAX_EXECUTION_COUNT


def _count(count: Any) -> int | None:
    """An execution count a notice may repeat (a larger one could carry a phone number)."""
    return count if _small_count(count) else None


def iter_text(obj: Any, images: list[str] | None = None) -> Iterator[str]:
    """Every string, key and number in a JSON value and the short items of its arrays and
    objects joined (`message_texts`)."""
    return iter(message_texts((obj,), images))


def message_texts(values: tuple[Any, ...], images: list[str] | None = None) -> list[str]:
    """Every string, key and number of `values` (a message's content, its metadata) and what a
    client may show joined (`MessageTexts`)."""
    texts = MessageTexts.read(values, images)
    return texts.parts + texts.joins()


@dataclass(slots=True)
class MessageTexts:
    """The texts of a message the scanner reads: `parts`, every string, key and number, depth
    first; and `joins()`, what a client may show joined, so that a value split over fields,
    keys or list items is read whole: all short values of the message in the order the client
    receives them (also with the execution count, shown beside an output, before and after
    them), joined with nothing and with a space between (`_joined_runs`); the keys of each
    nested object joined; an object whose keys are whole numbers in numeric order (a
    browser's); three whole numbers of an array as a date (`y-m-d`).

    A top-level `execution_count` below 1,000,000 is structure: not in `parts`. With `images`,
    base64 PNG values of MIME bundles are set aside there (read by `png_text`) instead of
    being scanned as text.
    """

    values: tuple[Any, ...]
    parts: list[str]
    # Joins of single containers (keys, numeric-key order, dates), without repeats.
    containers: dict[str, None]
    # Short values other than protocol words, and the top-level execution count.
    shorts: int
    count: int | None
    # Whether a short value holds a date's separator (`-`, `/`, `.`).
    dated: bool

    @classmethod
    def read(cls, values: tuple[Any, ...], images: list[str] | None = None) -> MessageTexts:
        parts: list[str] = []
        containers: dict[str, None] = {}
        count = None
        stack: list[Any] = []
        for root in values:
            if not isinstance(root, dict):
                stack.append(root)
                continue
            # The top level: the protocol's fields, whose keys are not joined.
            for key, item in root.items():
                if key == "execution_count" and _small_count(item):
                    count = item
                    continue
                if key == "image/png" and images is not None and isinstance(item, str):
                    images.append(item)
                    continue
                parts.append(str(key))
                stack.append(item)
        shorts = count is not None
        dated = False
        while stack:
            value = stack.pop()
            if isinstance(value, str):
                parts.append(value)
                if len(value) <= JOIN_ITEM_CHARS and value not in _PROTOCOL_WORDS:
                    shorts += 1
                    dated = dated or "-" in value or "/" in value or "." in value
            elif isinstance(value, dict):
                if 1 < len(value) <= JOIN_ITEMS:
                    containers.update(dict.fromkeys(_joined_runs(list(value))))
                    if all(isinstance(key, str) and key.isdigit() for key in value):
                        # A browser walks keys that are whole numbers in numeric order.
                        order = sorted(value, key=int)
                        containers.update(dict.fromkeys(_joined_runs([value[k] for k in order])))
                for key, item in value.items():
                    if key == "image/png" and images is not None and isinstance(item, str):
                        images.append(item)
                        continue
                    parts.append(str(key))
                    stack.append(item)
            elif isinstance(value, list | tuple):
                if len(value) == 3 and all(_whole(item) for item in value):
                    containers["-".join(map(str, value))] = None
                stack.extend(value)
            elif isinstance(value, bool) or value is None:
                continue
            elif isinstance(value, int | float):
                parts.append(str(value))
                shorts += 1
        return cls(values, parts, containers, shorts, count, dated)

    def joins(self) -> list[str]:
        """The joined texts (made only when asked: a message whose parts are trivially clean
        cannot spell an identifier by joining them, `BoundaryGuard.scan_value`)."""
        joins = list(self.containers)
        if self.shorts < 2:
            return joins
        ordered: list[Any] = list(_short_values(self.values, self.count is not None))
        if self.count is None:
            return joins + _joined_runs(ordered)
        # JupyterLab shows `[count]:` before an output; a terminal may print it after.
        return joins + _joined_runs([self.count, *ordered]) + _joined_runs([*ordered, self.count])


def _whole(item: Any) -> bool:
    """A whole number, or a short run of digits (a part of a date)."""
    return type(item) is int or (isinstance(item, str) and len(item) <= 4 and item.isdigit())


def _short_values(values: tuple[Any, ...], skip_count: bool = False) -> Iterator[Any]:
    """The strings and numbers of `values` (content, metadata), keys left out, in the order a
    client receives them: the sentry sends content with its keys sorted (RFC 8785) and the
    rest as the kernel ordered it. Long strings (read whole anyway) and protocol words are left
    out, and with `skip_count` the top-level execution counts. Iterative: the nesting is the
    kernel's to choose."""
    for number, root in enumerate(values):
        stack: list[Iterator[Any]] = [iter((root,))]
        while stack:
            for value in stack[-1]:
                if isinstance(value, str):
                    if len(value) <= JOIN_ITEM_CHARS and value not in _PROTOCOL_WORDS:
                        yield value
                elif isinstance(value, dict):
                    keys = sorted(value, key=str) if number == 0 else list(value)
                    if skip_count and value is root:
                        keys = [k for k in keys if k != "execution_count"]
                    stack.append(iter([value[key] for key in keys]))
                    break
                elif isinstance(value, list | tuple):
                    stack.append(iter(value))
                    break
                elif isinstance(value, int | float) and not isinstance(value, bool):
                    yield value
            else:
                stack.pop()


# What an execution count joined to at most two short numbers can spell that could be an
# identifier (nine digits however separated; dates as the scanner reads them: one separator of
# `-`, `/` or `.`, used twice).
_COUNTED = re.compile(r"(?:\d\D*){9}|\d{4}([-/.])\d{1,2}\1\d{1,2}|\d{1,2}([-/.])\d{1,2}\2\d{4}")

# Items up to this long are read joined to their neighbours (`_joined_runs`).
JOIN_ITEM_CHARS = 64
# A joined text holds at most this many items; the next begins `JOIN_OVERLAP` items before
# its end, so that any value of up to that many pieces lies whole in one of them. (A value
# split into more pieces than that is a value spread out, which the index does not match.)
JOIN_ITEMS = 64
JOIN_OVERLAP = 16


def _joined_runs(items: list[Any]) -> list[str]:
    """Short strings and numbers in order, joined as a client may show them: with nothing and
    with a space between, in runs of `JOIN_ITEMS` overlapping by `JOIN_OVERLAP` (a joined run
    of digits stays within what the decoders convert; a long array costs about twice its text).

    A value written as a list of characters (`list(mrn)` as JSON), a name as a list of its
    parts, a record number split over two fields or two keys is then read whole.
    """
    texts = [
        item if isinstance(item, str) else str(item)
        for item in items
        if (isinstance(item, str) and len(item) <= JOIN_ITEM_CHARS)
        or (isinstance(item, int | float) and not isinstance(item, bool))
    ]
    if len(texts) < 2:
        return []
    joins = []
    step = JOIN_ITEMS - JOIN_OVERLAP
    for start in range(0, max(1, len(texts) - JOIN_OVERLAP), step):
        run = texts[start : start + JOIN_ITEMS]
        joins += ["".join(run), " ".join(run)]
    return joins


# Words of the Jupyter protocol's own field names and values (split at "_" and "/").
_PROTOCOL_WORDS = frozenset(
    "status ok error aborted execution count user expressions payload name stdout stderr "
    "text plain html data metadata transient code silent wait".split()
)
# At most 16 characters a match: a longer word is no protocol word and no short number either,
# so the verdict is that of whole words, without reading a megabyte-long run character by
# character (`\w` is Unicode's, a lookup per character).
_WORD = re.compile(r"[^\W_]{1,16}")


def trivially_clean(text: str) -> bool:
    """True when `text` cannot hold an identifier value, a PHI pattern or an encoding of one.

    Holds when, besides protocol words, the text has at most two numbers of at most two digits
    and no letters: an identifier of the index has three characters or more and a date needs
    three numbers. This keeps the per-message cost of trivial cells (`1+1`) near zero; every
    other text goes through the full scanner.
    """
    numbers = 0
    for match in _WORD.finditer(text):
        word = match.group(0)
        if word in _PROTOCOL_WORDS:
            continue
        if len(word) <= 2 and word.isdigit():
            numbers += 1
            if numbers <= 2:
                continue
        return False
    return True


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_text(value: str) -> str | None:
    """The text a base64 PNG carries (tEXt, zTXt, iTXt chunks); None if it is not a PNG.

    Pixels are not read (no OCR): text drawn into an image is the in-kernel guard's to stop.
    """
    try:
        raw = base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(_PNG_SIGNATURE):
        return None
    texts: list[str] = []
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(raw):
        length = int.from_bytes(raw[pos : pos + 4], "big")
        kind = raw[pos + 4 : pos + 8]
        body = raw[pos + 8 : pos + 8 + length]
        if len(body) < length:
            return None
        if kind == b"tEXt":
            texts.append(body.decode("latin-1"))
        elif kind in (b"zTXt", b"iTXt"):
            try:
                texts.append(_png_compressed_text(kind, body))
            except (zlib.error, ValueError):
                return None
        elif kind not in _PNG_KNOWN_CHUNKS:
            # Unknown chunks could carry anything: read them as text too.
            texts.append(body.decode("latin-1"))
        pos += 12 + length
        if kind == b"IEND":
            break
    # Bytes after IEND are not part of the image.
    texts.append(raw[pos:].decode("latin-1"))
    return "\n".join(texts)


_PNG_KNOWN_CHUNKS = frozenset(
    {
        b"IHDR",
        b"PLTE",
        b"IDAT",
        b"IEND",
        b"pHYs",
        b"gAMA",
        b"cHRM",
        b"sRGB",
        b"bKGD",
        b"tIME",
        b"tRNS",
        b"sBIT",
        b"iCCP",
        b"hIST",
        b"sPLT",
    }
)


def _png_compressed_text(kind: bytes, body: bytes) -> str:
    keyword, _, rest = body.partition(b"\x00")
    if kind == b"zTXt":
        return keyword.decode("latin-1") + " " + zlib.decompress(rest[1:]).decode("latin-1")
    flag, method, rest = rest[0], rest[1], rest[2:]
    lang, _, rest = rest.partition(b"\x00")
    translated, _, text = rest.partition(b"\x00")
    data = zlib.decompress(text) if flag == 1 and method == 0 else text
    return " ".join(
        part.decode("utf-8", errors="replace") for part in (keyword, lang, translated, data)
    )


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


_RUN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/_=-"


def _lines_join_runs(text: str) -> bool:
    """Whether a line break sits inside a long run of base64 characters (linear time)."""
    # Only the last and first 12 characters of each line matter (runs of 12 or more): the
    # breaks are found in place, so a megabyte of text is neither split nor copied (splitting
    # it cost half a millisecond on the relay's path).
    start, brk, n = 0, text.find("\n"), len(text)
    while brk != -1:
        following = text.find("\n", brk + 1)
        end = brk
        while end > start and text[end - 1] == "\r":
            end -= 1
        upper = text[max(start, end - 12) : end]
        tail = len(upper) - len(upper.rstrip(_RUN_CHARS))
        if tail:
            lower = text[brk + 1 : min(brk + 13, n if following == -1 else following)]
            head = len(lower) - len(lower.lstrip(_RUN_CHARS))
            if head and max(tail, head) >= 12:
                return True
        start, brk = brk + 1, following
    return False


# Between fields and lines: a break no base64, hex or digit run reads across.
_LINE_BREAK = "\n\t\n"


_DIGITS_AND_SEPARATORS = re.compile(r"^[\d\s./:-]+$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _date_columns(frames: list[tuple[Any, list[str]]]) -> set[str]:
    """Identifier columns holding dates (load_dataset writes them as ISO text)."""
    out = set()
    for frame, columns in frames:
        for column in columns:
            values = frame[column].dropna().astype(str).head(200)
            if len(values) and values.map(lambda v: bool(_ISO_DATE.match(v))).mean() > 0.9:
                out.add(column)
    return out


def policy_scanner(policy: Any) -> tuple[PolicyScan, int]:
    """The text scanner of a policy and the number of identifier values it knows.

    It reads the policy's datasets itself (the sentry is trusted and may), so rows that escaped
    the kernel guard are recognised here: identifier values through the policy's identifier
    index and the enabled PHI patterns, also inside encoded text (`scan_text`).
    """
    from bedside.policy import IdentifierIndex, load_dataset, scan_text

    frames = [(load_dataset(ds), list(ds.identifiers)) for ds in policy.datasets.values()]
    index = IdentifierIndex.from_frames(frames) if frames else None
    kinds = list(policy.enabled_phi_patterns)
    dates = _date_columns(frames)

    def plausible(finding: Any, scanned: str) -> bool:
        # A date column matched by a bare run of digits ("6242000" as 6/24/2000) or by digits
        # read backwards is how statistics, sums and timestamps trip the date matcher; a date
        # written with separators ("2000-06-24", "24/06/2000") is still caught.
        if finding.column not in dates:
            return True
        span = scanned[finding.start : finding.end]
        if finding.kind == "identifier":
            return not span.isdigit()
        if finding.kind == "encoded:reversed+identifier":
            return not _DIGITS_AND_SEPARATORS.match(span)
        return True

    def across(finding: Any, seam: int | None) -> bool:
        return seam is None or finding.start < seam < finding.end

    def scan(text: str, seam: int | None = None) -> Finding | None:
        """The first finding in `text`; with `seam`, only one that spans that position (a
        value that neither side of it holds alone: see `StreamSeams`)."""
        scanned = text
        found = [
            f
            for f in scan_text(text, index, phi_kinds=kinds)
            if plausible(f, scanned) and across(f, seam)
        ]
        if not found and _lines_join_runs(text):
            # scan_text reads a base64 run across line breaks (wrapped base64), so a run next
            # to a line of ordinary words decodes to nothing. Read each line on its own too.
            scanned = text.replace("\n", _LINE_BREAK)
            moved = None if seam is None else len(text[:seam].replace("\n", _LINE_BREAK))
            found = [
                f
                for f in scan_text(scanned, index, phi_kinds=kinds)
                if plausible(f, scanned) and across(f, moved)
            ]
        if not found:
            return None
        first = found[0]
        kind = first.kind
        how = ""
        if kind.startswith("encoded:"):
            how, _, kind = kind[len("encoded:") :].partition("+")
        if kind.startswith("phi:"):
            rule, what = "phi", kind[len("phi:") :]
        else:
            rule, what = "identifier", first.column or "identifier"
        return rule, f"{what}, {how}-encoded" if how else what

    return scan, len(index) if index is not None else 0


# Characters of a stream's released text kept to scan across its next message: more than any
# identifier value written out, even encoded (hex doubles it, a list of character codes makes
# five characters of one) — longer values are cut at `SEAM_CHARS // 6` characters (below).
SEAM_CHARS = 1536
# Cells whose streams are remembered (output may still come after a cell's idle status, from
# a thread the cell started, and is shown in that cell).
SEAM_CELLS = 64


class StreamSeams:
    """What a client shows joined: consecutive stream messages of one cell and stream name.

    JupyterLab merges them into one output and a terminal prints them in a row, so code that
    writes a value in pieces, flushing between them, shows it whole although no message holds
    it, and the in-kernel guard that would look at the seam can be switched off. The sentry
    therefore scans each stream message once more, joined to the end of the text it released
    before on the same stream of the same cell (`check`), and takes only a finding that spans
    the join: whatever lies on either side alone was scanned with its own message, in full.

    What was released is what the client holds: after a blocked message, its notice.
    """

    def __init__(self, scan: SeamScan, *, width: int = SEAM_CHARS, cells: int = SEAM_CELLS):
        self.scan = scan
        self.width = width
        self.cells = cells
        self._tails: OrderedDict[tuple[str, str], str] = OrderedDict()

    def check(self, parent: str, name: str, text: str) -> Finding | None:
        """A finding across the join of `text` to what was released before it, or None."""
        tail = self._tails.get((parent, name))
        if not tail or not text:
            return None
        try:
            return self.scan(tail + text[: self.width], len(tail))
        except Exception as exc:  # noqa: BLE001 - fail closed, as `scan_value` does
            log.exception("the text scanner failed on a stream seam; the message is blocked")
            return ("scanner_error", type(exc).__name__)

    def released(self, parent: str, name: str, text: str) -> None:
        """Note `text` as shown on that stream (the last `SEAM_CELLS` cells are kept)."""
        key = (parent, name)
        tail = self._tails.pop(key, "") + text
        self._tails[key] = tail[-self.width :]
        while len(self._tails) > self.cells:
            self._tails.popitem(last=False)


def _mime_allowed(mime: str, patterns: list[str]) -> bool:
    return any(mime == pat or fnmatch.fnmatchcase(mime, pat) for pat in patterns)


def status_verdict(content: dict[str, Any]) -> Verdict | None:
    """A status message rebuilt from its state alone (nothing else of it is read), or None
    when its content is not of that fixed shape."""
    state = content.get("execution_state")
    if state not in STATUS_STATES:
        return None
    return Verdict(
        Decision.release(layer=Layer.SENTRY), "status", {"execution_state": state}, {}, []
    )


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
        scan_seam: SeamScan | None = None,
    ) -> None:
        self.scan = scan
        self.mime_allow = list(mime_allow)
        self.max_output_bytes = int(max_output_bytes)
        self.notice_suffix = notice_suffix
        # Without a scanner that reports positions, any finding in the joined text counts.
        self.seams = StreamSeams(scan_seam or (lambda text, _seam: scan(text)))
        # Kernel-chosen names (and `started` days) already judged: name -> may leave.
        self._names: dict[str, bool] = {}
        # The days a `started` time may name, and until when (epoch seconds) they hold.
        self._days: set[str] = set()
        self._days_until = 0.0

    # -- scanning -----------------------------------------------------------------------------

    def kernel_claim(self, metadata: Any) -> Decision | None:
        """`kernel_claim` with a rule name that may leave: the ledger entry that records the
        claim reaches the researcher in receipts, so a name the scanner does not pass (or that
        is not a plain rule name) is recorded as `withheld`."""
        claim = kernel_claim(metadata)
        if claim is None or claim.rule == "unnamed" or self._plain_name(claim.rule):
            return claim
        return Decision(claim.action, "withheld", layer=claim.layer)

    def _plain_name(self, name: str) -> bool:
        """Whether a name the kernel chose (a rule, a MIME type) may be repeated to the client:
        a plain name in which the scanner finds nothing. Verdicts are remembered (the same few
        names come again and again)."""
        known = self._names.get(name)
        if known is None:
            known = bool(_PLAIN_NAME.match(name)) and self.scan_value(name) is None
            if len(self._names) >= 1024:
                self._names.clear()
            self._names[name] = known
        return known

    def _shown_time(self, value: str) -> bool:
        """Whether a reply's `started` time may leave as the kernel wrote it: one of the days
        around the sentry's own (yesterday, today, tomorrow in UTC, so any time zone's today
        passes) whose date is no identifier value (a patient born that day). Otherwise it is
        dropped, not blocked: a date of birth must not ride in a timestamp."""
        day = value[:10]
        now = time.time()
        if now >= self._days_until:
            today = datetime.fromtimestamp(now, UTC).date()
            self._days = {str(today + timedelta(days=d)) for d in (-1, 0, 1)}
            self._days_until = (now // 86400 + 1) * 86400
        if day not in self._days:
            return False
        known = self._names.get(day)
        if known is None:
            known = self._names[day] = self.scan_value(day) is None
        return known

    def scan_value(self, *values: Any) -> Finding | None:
        """The first finding in all text of `values` (the scanner also reads encoded text).

        PNG images are read for the text they carry rather than scanned as base64; a value
        under image/png that is not a PNG is scanned as text.
        """
        images: list[str] = []
        texts = MessageTexts.read(values, images)
        parts = texts.parts
        for image in images:
            carried = png_text(image)
            parts.append(image if carried is None else carried)
        # A break between fields, so no decoder joins the end of one with the next.
        text = _LINE_BREAK.join(parts)
        if not text:
            return None
        if trivially_clean(text):
            # Joined, protocol words and at most two numbers of two digits make no identifier
            # either; with an execution count of four to six digits beside them, they can
            # spell nine digits or a date (`[2007]: -07-23`), which is then scanned.
            count = texts.count
            if count is None or texts.shorts < 2:
                return None
            # Nine digits need a count of five (the text holds four at most); a date a count
            # of four and a separator in the text.
            if count < 10_000 and not (count >= 1000 and texts.dated):
                return None
            joins = texts.joins()
            if not any(_COUNTED.search(join) for join in joins):
                return None
            text = ""
        else:
            joins = texts.joins()
        if joins:
            text = _LINE_BREAK.join([text, *joins]) if text else _LINE_BREAK.join(joins)
        try:
            return self.scan(text)
        except Exception as exc:  # noqa: BLE001 - fail closed: a scanner fault blocks
            log.exception("the text scanner failed; the message is blocked")
            return ("scanner_error", type(exc).__name__)

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

    def joined(self, channel: str, parent: str, verdict: Verdict) -> Verdict:
        """`verdict` on a message about to leave, for a stream message checked once more
        joined to the text released before it on its stream and cell (`StreamSeams`); what
        it lets out is noted there. Anything else is returned as it is."""
        if channel != "iopub" or verdict.msg_type != "stream":
            return verdict
        text = verdict.content.get("text")
        if not isinstance(text, str):
            return verdict
        name = str(verdict.content.get("name", ""))
        if not verdict.blocked:
            hit = self.seams.check(parent, name, text)
            if hit is not None:
                decision = self._finding_decision(hit, joined=True)
                verdict = self.notice(channel, "stream", verdict.content, decision)
                text = verdict.content["text"]
                name = str(verdict.content.get("name", ""))
        self.seams.released(parent, name, text)
        return verdict

    def _finding_decision(self, hit: Finding, *, joined: bool = False) -> Decision:
        rule, kind = hit
        if rule == "scanner_error":
            return Decision.block(
                rule,
                "the hospital's scanner could not read this output",
                "Try a simpler output; the custodian finds the fault in the sentry log.",
                layer=Layer.SENTRY,
                details={"kind": kind},
            )
        # A value written in pieces is shown whole where the client joins the pieces.
        where = "the output, joined to the stream output before it," if joined else "the output"
        if rule == "identifier":
            reason = f"{where} contains a patient identifier value ({kind})"
            advice = (
                "Aggregate before displaying (counts, means, models); identifier values of the "
                "protected datasets never leave the hospital."
            )
        else:
            reason = f"{where} contains a personal-data pattern ({kind})"
            advice = "Remove personal data (e-mail, phone, national numbers) from the output."
        details = {"kind": kind, "joined": "stream"} if joined else {"kind": kind}
        return Decision.block(rule, reason, advice, layer=Layer.SENTRY, details=details)

    # -- the decision -------------------------------------------------------------------------

    def check(
        self,
        channel: str,
        msg_type: str,
        content: dict[str, Any],
        metadata: dict[str, Any],
        buffers: list[bytes],
        size: int,
        *,
        reply_type: str = "",
    ) -> Verdict:
        """The verdict for one message coming from the kernel on `channel`.

        `reply_type` is the type of a reply to the request this message answers: a reply of a
        type not expected on its channel leaves as a notice of that type, since the kernel's
        own type name could carry anything.
        """
        if msg_type == "status":
            verdict = None if buffers else status_verdict(content)
            if verdict is not None:
                return verdict
            return self.notice(
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
            # Neither the notice nor its type repeats the kernel's type name.
            # On stdin it becomes a prompt showing the notice; a reply, one to its request.
            if channel == "stdin":
                msg_type = "input_request"
            elif channel != "iopub":
                msg_type = reply_type or "execute_reply"
            return self.notice(
                channel,
                msg_type,
                {},
                Decision.block(
                    "unknown_msg_type",
                    f"a message of a type not expected on the {channel} channel",
                    "Only standard Jupyter messages leave the hospital.",
                    layer=Layer.SENTRY,
                ),
            )

        if size > self.max_output_bytes:
            return self.notice(
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
                dropped = self._names_shown(dropped)
                return self.notice(
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
        withheld: Decision | None = None
        if msg_type == "debug_reply":
            content, withheld = self._withhold_variables(content)

        safe_meta, metadata = split_protocol_metadata(metadata)
        if "started" in safe_meta and not self._shown_time(safe_meta["started"]):
            del safe_meta["started"]
        hit = self.scan_value(content, metadata)
        if safe_meta:
            metadata = {**safe_meta, **metadata}
        if hit is not None:
            return self.notice(channel, msg_type, content, self._finding_decision(hit))
        if buffers:
            buffer_block = self._scan_buffers(buffers)
            if buffer_block is not None:
                return self.notice(channel, msg_type, content, buffer_block)

        if withheld is not None:
            decision = withheld
        elif dropped:
            dropped = self._names_shown(dropped)
            decision = Decision.redact(
                "mime_allow",
                f"dropped MIME types not allowed by the policy: {', '.join(dropped)}",
                f"Allowed types: {', '.join(self.mime_allow)}.",
                layer=Layer.SENTRY,
                details={"dropped": dropped},
            )
        marked = self._mark_kernel_notice(msg_type, content, metadata)
        if marked is not None:
            content = marked
        return Verdict(
            decision,
            msg_type,
            content,
            metadata,
            list(buffers),
            changed=bool(dropped) or withheld is not None or marked is not None,
        )

    def _withhold_variables(
        self, content: dict[str, Any]
    ) -> tuple[dict[str, Any], Decision | None]:
        """A debugger's variables reply with each variable that holds an identifier value
        replaced by a notice entry, and the decision that says so (None if none was).

        A researcher's namespace almost always holds the patient table, whose value the
        variable explorer shows: blocking the whole reply would leave the debugger with no
        variables at all. The rest of the reply is scanned as a whole afterwards, so values
        split over several variables still block it.
        """
        body = content.get("body")
        variables = body.get("variables") if isinstance(body, dict) else None
        if not isinstance(variables, list):
            return content, None
        kept: list[Any] = []
        first: Finding | None = None
        for item in variables:
            hit = self.scan_value(item)
            if hit is None:
                kept.append(item)
                continue
            first = first or hit
            name = item.get("name") if isinstance(item, dict) else None
            kept.append(
                {
                    "name": name if isinstance(name, str) and self._plain_name(name) else "?",
                    "value": f"[bedside] withheld by the hospital sentry (rule: {hit[0]})",
                    "type": "",
                    "variablesReference": 0,
                }
            )
        if first is None:
            return content, None
        found = self._finding_decision(first)
        decision = Decision.redact(
            found.rule,
            "variables holding patient identifier values or personal data were withheld",
            found.advice,
            layer=Layer.SENTRY,
            details=found.details,
        )
        return {**content, "body": {**body, "variables": kept}}, decision

    def _names_shown(self, names: list[str]) -> list[str]:
        """Kernel-chosen names (dropped MIME types) as a notice may list them, sorted and once:
        one that is not a plain name, or in which the scanner finds something, is withheld."""
        return sorted({n if self._plain_name(n) else "[withheld]" for n in names})

    def _mark_kernel_notice(
        self, msg_type: str, content: dict[str, Any], metadata: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The in-kernel guard's notice with `notice_suffix` added, or None to leave it alone.

        The sentry's own notices carry the suffix already; a notice the kernel made (a blocked or
        redacted output) must say it too, so that no notice reaches the researcher without the
        no-sandbox warning when the sandbox is off.
        """
        if not self.notice_suffix:
            return None
        said = metadata.get("bedside")
        if not isinstance(said, dict) or said.get("decision") not in ("blocked", "redacted"):
            return None
        new = dict(content)
        if msg_type in DISPLAY_TYPES and isinstance(content.get("data"), dict):
            data = dict(content["data"])
            if isinstance(data.get("text/plain"), str):
                data["text/plain"] += self.notice_suffix
            if isinstance(data.get("text/html"), str):
                data["text/html"] += "<p>" + html.escape(self.notice_suffix.strip()) + "</p>"
            new["data"] = data
        elif msg_type == "stream" and isinstance(content.get("text"), str):
            new["text"] = content["text"].rstrip("\n") + self.notice_suffix + "\n"
        elif msg_type == "error" and isinstance(content.get("evalue"), str):
            new["evalue"] = content["evalue"] + self.notice_suffix
        else:
            return None
        return new

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

    def notice(
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
                new["execution_count"] = _count(content.get("execution_count"))
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
            new["execution_count"] = _count(content.get("execution_count"))
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
        elif msg_type == "debug_reply":
            # The debugger reads a DAP response: a failed one with the notice as its message.
            command = content.get("command")
            seq = content.get("request_seq")
            new.update(
                type="response",
                success=False,
                command=command if isinstance(command, str) and self._plain_name(command) else "",
                request_seq=seq if _small_count(seq) else 0,
                message=notice,
                body={},
            )
        return new
