"""Decoders for the encodings an attacker tries after base64 and hex, for `scan.scan_text`.

`scan` finds candidate spans and decodes base64, hex, percent-encoding, big integers, lists of
character codes and reversed text; this module adds what the standard library makes a one-liner:

- base32, base85, Ascii85 and uuencode, on the dense runs of a text (runs of
  printable non-space ASCII with a capital letter, `dense_spans`, found by the compiled core);
- quoted-printable and backslash escapes written out as text (`\\u0054`, `\\x54`, `\\124`,
  `repr` of bytes), on windows around their escapes (found by regexes with a literal prefix);
- bit strings (`01001010 01101111 ...`), around the runs of digits `scan` already has;
- what decoded bytes hold when they are not text as a whole (`bytes_readings`): zlib, gzip,
  bz2, lzma/xz and zip data inflated up to a bound, UTF-16/UTF-32 text, and the printable runs
  of any other binary (a pickled DataFrame or an `np.save` of an object array keeps its
  strings raw).

Every decoder is total: garbage gives None (or nothing), never an exception. Decompression stops
at `inflate_bound(span)` bytes (max(64 KiB, 10 x the encoded span)); data that would inflate
further is reported as `OVER_LIMIT` (a finding that blocks), since what lies past the bound is
unread and an attacker could pad a value past it with compressible filler.
"""

from __future__ import annotations

import array
import base64
import binascii
import bz2
import io
import lzma
import quopri
import re
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np

from bedside.policy._tokens import _scanner

# A reading of decoded bytes: (what it is, e.g. "zlib+" or "" for plain text, its text). A
# reading named OVER_LIMIT (no "+") is a finding of its own: its text is empty. A reading
# whose name ends in STRINGS is the printable runs of binary data: only the identifier index
# reads it (no PHI patterns, no further decoding: runs of random bytes are noise).
STRINGS = "strings+"
Reading = tuple[str, str]
OVER_LIMIT = "over-limit"
OVER_LIMIT_WHAT = "compressed data inflating past the scan bound"  # its Finding's column

INFLATE_MIN = 64 * 1024
INFLATE_FACTOR = 10
LZMA_MEMLIMIT = 128 * 1024 * 1024  # preset 9 (extreme) needs 65 MiB
MIN_STRING = 5  # printable runs of binary data shorter than this are noise
DENSE_MIN = 12  # the shortest dense run looked at (base85 of a 10-character value is 13)


def inflate_bound(span_len: int) -> int:
    """The most bytes a compressed span of `span_len` characters may inflate to."""
    return max(INFLATE_MIN, INFLATE_FACTOR * span_len)


def printable(data: bytes) -> str | None:
    """The UTF-8 text of `data` if it reads as text (90 % printable), else None."""
    if len(data) < 3:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if reads_as_text(text) else None


def reads_as_text(text: str) -> bool:
    """Whether at least 90 % of `text` is printable characters, tabs and line breaks."""
    good = sum(1 for ch in text if ch.isprintable() or ch in "\n\r\t")
    return good >= 0.9 * len(text)


# ---------------------------------------------------------------- what decoded bytes hold


def _zlib_header(data: bytes) -> bool:
    cmf, flg = data[0], data[1]
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf * 256 + flg) % 31 == 0


def _inflate_stream(decompressor: object, data: bytes, bound: int) -> bytes | None:
    """Up to bound + 1 bytes of `data` inflated (None when it is not such data; more than
    bound bytes when it would need more memory than LZMA_MEMLIMIT, which is as unread)."""
    try:
        out: bytes = decompressor.decompress(data, bound + 1)  # type: ignore[attr-defined]
    except lzma.LZMAError as exc:
        return bytes(bound + 1) if "limit" in str(exc).lower() else None
    except (zlib.error, OSError, EOFError, ValueError):
        return None
    return out


def _unzip(data: bytes, bound: int) -> bytes | None:
    """The members of a zip archive, joined by newlines, up to bound + 1 bytes."""
    out = bytearray()
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for info in zf.infolist()[:64]:
                with zf.open(info) as member:
                    out += member.read(bound + 1 - len(out)) + b"\n"
                if len(out) > bound:
                    break
    # zipfile raises many kinds on a damaged or encrypted archive (BadZipFile, RuntimeError,
    # NotImplementedError, EOFError, zlib.error, struct.error ...): whatever it read is kept.
    except Exception:  # noqa: BLE001, S110 - a decoder never raises on garbage
        pass
    return bytes(out) if out else None


def _inflate(data: bytes, bound: int) -> tuple[str, bytes] | None:
    """(codec name, inflated bytes up to bound + 1) when `data` starts like compressed data."""
    if len(data) < 8:
        return None
    head = data[:6]
    if head[:2] == b"\x1f\x8b":
        return "gzip", _inflate_stream(zlib.decompressobj(31), data, bound) or b""
    if _zlib_header(data):
        return "zlib", _inflate_stream(zlib.decompressobj(15), data, bound) or b""
    if head[:3] == b"BZh" and 0x31 <= head[3] <= 0x39:
        return "bz2", _inflate_stream(bz2.BZ2Decompressor(), data, bound) or b""
    if head == b"\xfd7zXZ\x00" or head[:3] == b"\x5d\x00\x00":
        # (A stream's header names its dictionary size, up to 1.5 GiB: the limit refuses it.)
        lzma_d = lzma.LZMADecompressor(memlimit=LZMA_MEMLIMIT)
        return "lzma", _inflate_stream(lzma_d, data, bound) or b""
    if head[:4] == b"PK\x03\x04":
        return "zip", _unzip(data, bound) or b""
    return None


def _wide_text(data: bytes) -> Reading | None:
    """UTF-16 or UTF-32 text (`v.encode("utf-16-be")`), told by its zero bytes or BOM."""
    n = len(data)
    if n < 6 or n % 2:
        return None
    candidates: list[str] = []
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        candidates.append("utf-16")
    if n % 4 == 0 and data[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        candidates.insert(0, "utf-32")
    zeros = data.count(0)
    if zeros >= n // 4:
        even, odd = data[0::2].count(0), data[1::2].count(0)
        if n % 4 == 0:
            candidates += ["utf-32-le", "utf-32-be"]
        candidates.append("utf-16-be" if even > odd else "utf-16-le")
    for codec in candidates:
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        if len(text) >= 3 and reads_as_text(text):
            return "utf16+" if codec.startswith("utf-16") else "utf32+", text
    return None


# Printable ASCII and UTF-8 Latin-1 letters (names with accents stay whole), MIN_STRING or
# more: in random bytes (a digest, weights) a run of five turns up once in ~200 positions.
_STRINGS = re.compile(rb"(?:[\x20-\x7e]|\xc3[\x80-\xbf]){5,}")


_STRINGS_NUMPY = 4096  # from this size on, the runs are found with numpy (3x faster)


def _strings(data: bytes) -> str | None:
    """The printable runs of binary data, one a line (`strings`): a pickle or an `np.save` of
    objects keeps its strings raw among the bytes. None when there are none."""
    if len(data) < _STRINGS_NUMPY:
        runs = _STRINGS.findall(data)
    else:
        # The same runs (measured in bytes rather than characters) without a regex step per
        # byte: a megabyte of base64 weights decodes to 750 KB of binary.
        b = np.frombuffer(data, dtype=np.uint8)
        ok = (b >= 0x20) & (b <= 0x7E)
        pair = (b[:-1] == 0xC3) & (b[1:] >= 0x80) & (b[1:] <= 0xBF)
        ok[:-1] |= pair
        ok[1:] |= pair
        edges = np.flatnonzero(np.diff(np.concatenate(([False], ok, [False])).view(np.int8)))
        starts, ends = edges[0::2], edges[1::2]
        keep = ends - starts >= MIN_STRING
        runs = [data[a:e] for a, e in zip(starts[keep].tolist(), ends[keep].tolist(), strict=True)]
    if not runs:
        return None
    return b"\n".join(runs).decode("utf-8", "replace")


def bytes_readings(data: bytes, span_len: int, *, inflate: bool = True) -> list[Reading]:
    """What decoded bytes hold: their text, or what they inflate to, or UTF-16/32 text, or
    their printable runs; an `OVER_LIMIT` reading when they inflate past the bound."""
    text = printable(data)
    if text is not None:
        return [("", text)]
    if inflate:
        bound = inflate_bound(span_len)
        inflated = _inflate(data, bound)
        if inflated is not None:
            codec, out = inflated
            if len(out) > bound:
                return [(codec + "+" + OVER_LIMIT, "")]
            if out:
                inner = bytes_readings(out, span_len, inflate=False)
                return [(codec + "+" + name, t) for name, t in inner]
    wide = _wide_text(data)
    if wide is not None:
        return [wide]
    strings = _strings(data)
    return [(STRINGS, strings)] if strings else []


# ---------------------------------------------------------------- dense runs


def dense_spans(text: str, *, native: bool = True) -> list[tuple[int, int]]:
    """Runs of printable non-space ASCII, at least DENSE_MIN long, holding a capital letter
    (`native=False`: without the compiled core, as when it is not built)."""
    if native and _scanner is not None:
        flat = array.array("q", _scanner.dense_runs(text, DENSE_MIN))
        return list(zip(flat[0::2], flat[1::2], strict=True))
    return list(_dense_reference(text))


_DENSE_RUN = re.compile(rf"[!-~]{{{DENSE_MIN},}}")
_CAPITAL = re.compile(r"[A-Z]")


_WORD = re.compile(r"[^A-Za-z]*[A-Za-z]+[^A-Za-z]*")
_LOWER = re.compile(r"[a-z]")


_UU_ONLY = re.compile(r"[!\"#$%&'(),;<>?@\[\\\]^`]")
_UU_CHARS = re.compile(r"[ -`]+")
_ADOBE = re.compile(r"<~.*~>", re.DOTALL)


def _digits(run: str) -> int:
    return sum(map(run.count, "0123456789"))


def _numbers(run: str, digits: int) -> bool:
    """Whether `run` (holding `digits` digits) reads as numbers: over 40 % digits, with a '.'."""
    return "." in run and digits * 5 > len(run) * 2


def a85_body(span: str) -> str:
    """An Ascii85 span without its Adobe "<~ ~>"."""
    return span[2:-2] if len(span) >= 4 and _ADOBE.fullmatch(span) else span


def dense_kept(run: str) -> bool:
    """Whether a dense run can be an encoding (the compiled core's `dense_kept`): not a word
    (letters, one of them lower-case, other characters only before and after them); not
    numbers (digits over 40 % with a '.'); and in the alphabet of a decoder that can read it:
    base32; base85, or Ascii85 with no group of five starting with a lower-case letter, with a
    lower-case letter; uuencode (no lower case) with a character only it would have."""
    digits = _digits(run)
    lower = _LOWER.search(run) is not None
    if not digits and lower and _WORD.fullmatch(run):
        return False
    if _numbers(run, digits):
        return False
    if _B32.fullmatch(run):
        return True
    if lower:
        body = a85_body(run)
        return bool(_B85.fullmatch(run)) or bool(
            _A85.fullmatch(body) and not _LOWER.search(body[0::5])
        )
    return bool(_UU_CHARS.fullmatch(run) and _UU_ONLY.search(run))


def _dense_reference(text: str) -> Iterator[tuple[int, int]]:
    """`dense_spans` without the compiled core (and what it is tested against)."""
    for m in _DENSE_RUN.finditer(text):
        if _CAPITAL.search(m.group()) and dense_kept(m.group()):
            yield m.start(), m.end()


_B32 = re.compile(r"[A-Z2-7]+=*")
_B85 = re.compile(r"[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]+")
_A85 = re.compile(r"[!-uyz]+")
_EDGE_PUNCT = ".,;:!?\"'()[]{}<>"


def decode_dense(span: str) -> list[Reading]:
    """base32 / base85 / Ascii85 / uuencode readings of a dense run (see
    `dense_spans`), or uuencode readings of the wider window around one (it has spaces)."""
    if " " in span:
        return decode_uu(span)
    return _decode_dense(span) or decode_uu(span)


def _decode_dense(span: str) -> list[Reading]:
    core = span.strip(_EDGE_PUNCT)
    if core.isalpha() and not core.isupper():
        return []  # a word (possibly capitalised, with punctuation around it)
    out: list[Reading] = []
    n = len(span)
    if len(span) >= 16 and _B32.fullmatch(span):
        out += _try(lambda s: base64.b32decode(s + "=" * (-len(s) % 8)), "base32+", span, n)
    if any(not name.startswith("strings") for name, _ in out[:1]):
        return out
    # base85 and Ascii85 of text mix both cases (a 13-character span lacks lower case with
    # probability about 1 %): upper-case ids and hex ("UUID=9F3A...") are left out, since
    # their decoders are pure Python. Every alphabet that fits is tried: a span of one can
    # decode as garbage in another.
    if not _LOWER.search(span):
        return out
    # (A regex fails at the first character outside the alphabet: a megabyte of base64 has
    # a '/' or a 'v' within a few dozen.)
    if _B85.fullmatch(span):
        out += _try(base64.b85decode, "base85+", span, n)
    inner = a85_body(span)
    if _A85.fullmatch(inner) and not _LOWER.search(inner[0::5]):
        out += _try(base64.a85decode, "ascii85+", inner, n)
    return out


def _try(decode: object, name: str, span: str, n: int) -> list[Reading]:
    try:
        data: bytes = decode(span)  # type: ignore[operator]
    except (ValueError, binascii.Error, TypeError, OverflowError):
        return []
    return [(name + sub, t) for sub, t in bytes_readings(data, n)]


# uuencoded lines: a length character (' ' + n, n <= 45), then 4 characters per 3 bytes, all in
# ' '..'`' (`_UU_CHARS`). They can hold spaces, so a dense run is widened to the characters of
# that class around it on its line, and a line is tried from each place a length character can
# start.


_UU_SHORT = re.compile(r"[ -`]{12,}")
UU_SHORT_TEXT = 2048


def uu_short_spans(text: str) -> Iterator[tuple[int, int]]:
    """In a short text, runs of uuencode characters of 12 or more with a capital letter: a
    short value's uuencoded line can be split by spaces into pieces shorter than a dense run.
    (Longer texts rely on the dense runs, to keep a megabyte's scan cheap.)"""
    if len(text) <= UU_SHORT_TEXT:
        for m in _UU_SHORT.finditer(text):
            run = m.group()
            if " " in run.strip() and _CAPITAL.search(run) and run.count(" ") * 3 < len(run):
                yield m.start(), m.end()


def uu_window(text: str, start: int, end: int) -> tuple[int, int]:
    """The run of uuencode characters (on its line) around the dense run [start, end)."""
    line_start = text.rfind("\n", 0, start) + 1
    a = start
    while a > line_start and " " <= text[a - 1] <= "`":
        a -= 1
    m = _UU_CHARS.match(text, start)
    b = m.end() if m else end
    return a, max(b, end)


_UU_START = re.compile(r"(?:^|(?<= ))[!-M]")


def decode_uu(chunk: str) -> list[Reading]:
    """uuencoded lines in `chunk` (one line's run of uuencode characters)."""
    out: list[Reading] = []
    if _LOWER.search(chunk) or _numbers(chunk, _digits(chunk)):
        return out  # not uuencode characters; or numbers
    for tried, m in enumerate(_UU_START.finditer(chunk)):
        if tried >= 8:
            break
        i = m.start()
        size = ord(chunk[i]) - 32
        body = (size + 2) // 3 * 4
        if i + 1 + body > len(chunk):
            continue
        try:
            data = binascii.a2b_uu(chunk[i : i + 1 + body])
        except (binascii.Error, ValueError):
            continue
        readings = bytes_readings(data, len(chunk))
        if readings:
            out += [("uu+" + sub, t) for sub, t in readings]
            break
    return out


# ---------------------------------------------------------------- escapes written out as text

_ESCAPE = re.compile(r"\\(?:x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-7]{3})")
_WINDOW_PAD = 64  # characters of context kept on each side of a cluster of escapes
_CLUSTER_GAP = 32


def _clusters(text: str, pattern: re.Pattern[str], gap: int, pad: int) -> Iterator[tuple[int, int]]:
    """Windows around clusters of matches of `pattern`, padded and kept within their lines."""
    first = last = -1
    for m in pattern.finditer(text):
        if first >= 0 and m.start() - last > gap:
            yield _padded(text, first, last, pad)
            first = -1
        if first < 0:
            first = m.start()
        last = m.end()
    if first >= 0:
        yield _padded(text, first, last, pad)


def _padded(text: str, first: int, last: int, pad: int) -> tuple[int, int]:
    line_start = text.rfind("\n", 0, first) + 1
    line_end = text.find("\n", last)
    if line_end < 0:
        line_end = len(text)
    return max(line_start, first - pad), min(line_end, last + pad)


def escape_spans(text: str) -> Iterator[tuple[int, int]]:
    if "\\" in text:
        yield from _clusters(text, _ESCAPE, _CLUSTER_GAP, _WINDOW_PAD)


def _unescape_one(m: re.Match[str]) -> str:
    s = m.group()
    code = int(s[1:], 8) if s[1] not in "xuU" else int(s[2:], 16)
    return chr(code) if code <= 0x10FFFF else s


def decode_escapes(chunk: str) -> list[Reading]:
    text = _ESCAPE.sub(_unescape_one, chunk)
    if text == chunk:
        return []
    # `repr(bytes)` writes UTF-8 bytes as \x escapes: read them back as UTF-8 when they are.
    if any("\x80" <= ch <= "\xff" for ch in text):
        try:
            text = text.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
    return [("", text)]


# ---------------------------------------------------------------- quoted-printable

# Only the escapes of a whole UTF-8 character (`=C3=A9`) and soft line breaks: `n=10`,
# `x=FF` and `UUID=AB12...` are everyday output.
_QP = re.compile(
    r"=(?:(?:C[2-9A-F]|D[0-9A-F])|E[0-9A-F]=[89AB][0-9A-F]|F[0-4](?:=[89AB][0-9A-F]){2})=[89AB][0-9A-F]|=\r?\n"
)


def qp_spans(text: str) -> Iterator[tuple[int, int]]:
    if "=" in text:
        for a, b in _clusters(text, _QP, 160, 0):
            # Whole lines: a soft break joins a line to the next one.
            a = text.rfind("\n", 0, a) + 1
            nl = text.find("\n", b + 1)
            yield a, len(text) if nl < 0 else nl


def decode_qp(chunk: str) -> list[Reading]:
    try:
        data = quopri.decodestring(chunk.encode("utf-8", "surrogatepass"))
    except (ValueError, binascii.Error):
        return []
    text = data.decode("utf-8", "replace")
    return [("", text)] if text != chunk else []


# ---------------------------------------------------------------- bit strings

_BITS_RUN = re.compile(r"[01]{6,}(?:[ ,]{1,2}[01]{6,})*")


def bit_spans(text: str, digit_runs: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Runs of 6- to 8-bit groups (or long unbroken bit runs) around `digit_runs` (runs of
    seven digits or more) that are all 0 and 1."""
    done = -1
    for start, end in digit_runs:
        if text[start] not in "01" or start < done:
            continue
        if text.count("0", start, end) + text.count("1", start, end) != end - start:
            continue
        a = start
        while a > 0 and text[a - 1] in "01 ,":
            a -= 1
        limit = min(len(text), end + (1 << 16))
        m = _BITS_RUN.search(text, a, limit)
        while m is not None and m.end() <= start:
            m = _BITS_RUN.search(text, m.end(), limit)
        if m is None:
            continue
        done = m.end()
        yield m.start(), m.end()


def decode_bits(chunk: str) -> list[Reading]:
    groups = re.findall(r"[01]+", chunk)
    if len(groups) == 1 and len(groups[0]) % 8 == 0:
        g = groups[0]
        groups = [g[i : i + 8] for i in range(0, len(g), 8)]
    if len(groups) < 3 or any(len(g) > 21 for g in groups):
        return []
    codes = [int(g, 2) for g in groups]
    # Bits of UTF-8 bytes (`v.encode()`), else of code points (`ord(c)`, above 255 too).
    text = printable(bytes(codes)) if max(codes) < 256 else None
    if text is None and max(codes) <= 0x10FFFF:
        text = "".join(map(chr, codes))
        if not reads_as_text(text):
            return []
    return [("", text)] if text is not None else []


def has_lower(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] holds an ASCII lower-case letter (uuencode has none)."""
    return _LOWER.search(text, start, end) is not None


# -- digests ------------------------------------------------------------------------------------

DIGESTS = ("md5", "sha1", "sha256")
DIGEST_HEX = 10  # leading hex digits of a digest compared: 40 bits, a `hexdigest()[:10]` too
# Every ASCII hex digit as `h`, every other ASCII character as a space: a run of `DIGEST_HEX`
# digits is then a substring search, ten times as fast as the regex on a text that has none.
_HEX_MARKS = {c: "h" if chr(c) in "0123456789abcdefABCDEF" else " " for c in range(128)}
_HEX_MARK_RUN = "h" * DIGEST_HEX
_HEX_RUN = re.compile(rf"(?<![0-9A-Za-z])[0-9A-Fa-f]{{{DIGEST_HEX},128}}(?![0-9A-Za-z])")


class DigestIndex:
    """Unkeyed digests of identifier values (`hashlib.md5(mrn.encode()).hexdigest()`).

    An identifier has few enough possible values (a record number's range, the surnames of a
    country) that its unkeyed digest is a dictionary attack away from it, so a printed digest,
    or its first `DIGEST_HEX` or more hex digits (a "pseudonym" `sha256(...)[:12]`), is the
    value. The digests (md5, sha1, sha256 of each distinct value as stored and lower-cased,
    UTF-8) are computed on the first text that holds a run of `DIGEST_HEX` or more hex digits,
    not when the index is built: most sessions print none, and at a million patients they take
    seconds. Only their first 40 bits are kept (a sorted array, 8 bytes a digest); a run of hex
    digits matches by chance with probability about (digests) / 2^40, 1e-5 at a million
    patients. Shorter prefixes are not recognised.
    """

    def __init__(self, frames: list[tuple[object, list[str]]]) -> None:
        self._frames = frames
        self._keys: np.ndarray | None = None
        self._codes: np.ndarray | None = None
        self._columns: list[str] = []

    def _build(self) -> None:
        import hashlib

        keys: list[int] = []
        codes: list[int] = []
        for frame, identifiers in self._frames:
            for column in identifiers:
                if column not in self._columns:
                    self._columns.append(column)
                code = self._columns.index(column)
                values = frame[column].dropna().astype(str).unique()  # type: ignore[index]
                forms = set(values.tolist()) | {v.lower() for v in values.tolist()}
                for form in forms:
                    raw = form.encode("utf-8", "surrogatepass")
                    for algo in DIGESTS:
                        keys.append(int(hashlib.new(algo, raw).hexdigest()[:DIGEST_HEX], 16))
                        codes.append(code)
        key_arr = np.array(keys, dtype=np.uint64)
        order = np.argsort(key_arr, kind="stable")
        self._keys = key_arr[order]
        self._codes = np.array(codes, dtype=np.uint16)[order]

    def find(self, text: str) -> str | None:
        """The column of the first identifier whose digest (or its leading hex digits) `text`
        holds, or None."""
        if _HEX_MARK_RUN not in text.translate(_HEX_MARKS):
            return None
        runs = _HEX_RUN.findall(text)
        if not runs:
            return None
        if self._keys is None:
            self._build()
        assert self._keys is not None and self._codes is not None
        if not len(self._keys):
            return None
        q = np.array([int(r[:DIGEST_HEX], 16) for r in runs], dtype=np.uint64)
        at = np.minimum(np.searchsorted(self._keys, q), len(self._keys) - 1)
        hit = np.flatnonzero(self._keys[at] == q)
        return self._columns[int(self._codes[at[hit[0]]])] if len(hit) else None
