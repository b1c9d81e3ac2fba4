"""The top-level column names of a Parquet file, read from its footer without pyarrow.

Validating a policy checks that its identifier columns exist. Importing pyarrow for that costs
about 0.2 s of CPU, on the start path of every kernel and sentry; the names are in the file's
footer (Thrift compact protocol, `FileMetaData.schema`), a few hundred bytes read here with the
standard library. Anything unexpected raises `ValueError` and the caller asks pyarrow instead.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

_MAGIC = b"PAR1"
_MAX_FOOTER = 64 * 2**20

# Thrift compact protocol type ids.
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY = 1, 2, 3, 4, 5, 6, 7, 8
_LIST, _SET, _MAP, _STRUCT = 9, 10, 11, 12


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ValueError("parquet footer: truncated")
        value = self.data[self.pos]
        self.pos += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise ValueError("parquet footer: bad varint")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def binary(self) -> bytes:
        size = self.varint()
        end = self.pos + size
        if end > len(self.data):
            raise ValueError("parquet footer: truncated string")
        value = self.data[self.pos : end]
        self.pos = end
        return value

    def field(self, last: int) -> tuple[int, int]:
        """(field id, type) of the next field of a struct; type 0 ends the struct."""
        header = self.byte()
        kind = header & 0x0F
        if kind == 0:
            return 0, 0
        delta = header >> 4
        return (last + delta if delta else self.zigzag()), kind

    def list_header(self) -> tuple[int, int]:
        header = self.byte()
        size = header >> 4
        if size == 15:
            size = self.varint()
        return size, header & 0x0F

    def skip(self, kind: int, depth: int = 0) -> None:
        if depth > 64:
            raise ValueError("parquet footer: nested too deeply")
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self.byte()
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.pos += 8
        elif kind == _BINARY:
            self.binary()
        elif kind in (_LIST, _SET):
            size, elem = self.list_header()
            for _ in range(size):
                if elem in (_TRUE, _FALSE):
                    self.byte()  # booleans in a list take a byte each
                else:
                    self.skip(elem, depth + 1)
        elif kind == _MAP:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4, depth + 1)
                    self.skip(types & 0x0F, depth + 1)
        elif kind == _STRUCT:
            last = 0
            while True:
                last, sub = self.field(last)
                if sub == 0:
                    return
                self.skip(sub, depth + 1)
        else:
            raise ValueError(f"parquet footer: unknown type {kind}")


def _schema_element(reader: _Reader) -> tuple[str, int]:
    """(name, num_children) of one SchemaElement."""
    name: str | None = None
    children = 0
    last = 0
    while True:
        last, kind = reader.field(last)
        if kind == 0:
            break
        if last == 4 and kind == _BINARY:
            name = reader.binary().decode("utf-8")
        elif last == 5 and kind == _I32:
            children = reader.zigzag()
        else:
            reader.skip(kind)
    if name is None or children < 0:
        raise ValueError("parquet footer: schema element without a name")
    return name, children


def column_names(path: Path) -> list[str]:
    """The names of the top-level columns of the Parquet file `path` (pyarrow's
    `read_schema(path).names`); raises ValueError when the footer is not as expected."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size < 12:
            raise ValueError("not a parquet file")
        handle.seek(size - 8)
        tail = handle.read(8)
        (length,) = struct.unpack("<I", tail[:4])
        if tail[4:] != _MAGIC or not 0 < length <= min(_MAX_FOOTER, size - 12):
            raise ValueError("not a parquet file (or an encrypted footer)")
        handle.seek(size - 8 - length)
        reader = _Reader(handle.read(length))
    last = 0
    while True:
        last, kind = reader.field(last)
        if kind == 0:
            raise ValueError("parquet footer: no schema")
        if last == 2 and kind == _LIST:
            break
        reader.skip(kind)
    count, elem = reader.list_header()
    if elem != _STRUCT or count < 1:
        raise ValueError("parquet footer: bad schema list")
    elements = [_schema_element(reader) for _ in range(count)]
    # Depth-first: the root, then each top-level column followed by its descendants.
    names: list[str] = []
    pending = [elements[0][1]]
    for name, children in elements[1:]:
        if not pending:
            raise ValueError("parquet footer: schema longer than its tree")
        if len(pending) == 1:
            names.append(name)
        pending[-1] -= 1
        if children:
            pending.append(children)
        while pending and pending[-1] == 0 and len(pending) > 1:
            pending.pop()
    if pending != [0]:
        raise ValueError("parquet footer: schema shorter than its tree")
    return names
