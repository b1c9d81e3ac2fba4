"""The compiled scanner core switched off, for tests that compare it with the reference path."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from bedside.policy import IdentifierIndex, _tokens


@contextlib.contextmanager
def reference(*indexes: IdentifierIndex) -> Iterator[None]:
    """Run with the compiled core switched off (numpy, the regexes and the pure-Python rules)."""
    saved = [ix._matcher for ix in indexes]
    scanner = _tokens._scanner
    try:
        for ix in indexes:
            ix._matcher = None
        _tokens._scanner = None
        yield
    finally:
        _tokens._scanner = scanner
        for ix, m in zip(indexes, saved, strict=True):
            ix._matcher = m
