"""Types of the compiled core of the identifier scan (policy/_scanner.c)."""

from collections.abc import Sequence

from _typeshed import ReadableBuffer as Buffer

class Matcher:
    def __init__(
        self,
        entries: Buffer,
        bits: Buffer,
        shift: int,
        pair_bits: Buffer,
        pair_shift: int,
        lengths: Sequence[int],
        min_digits: int,
        need: int,
    ) -> None: ...
    def find(self, buf: Buffer, /) -> bytes: ...

def tokens(buf: Buffer, /) -> bytes: ...
def text_spans(
    text: str, /
) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes, bytes, bytes, bool]: ...
def alnum_table() -> bytes: ...
def keep_spans(text: str, starts: Buffer, ends: Buffer, date: Buffer, /) -> bytes: ...
def dates_in_text(text: str, /) -> tuple[bytes, bytes]: ...
def label_words(text: str, words: tuple[str, ...], /) -> int: ...
