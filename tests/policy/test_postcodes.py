"""Postcodes match with and without their space, whichever way the table stores them."""

from __future__ import annotations

from bedside.policy import IdentifierIndex


def test_postcodes_with_and_without_space() -> None:
    index = IdentifierIndex.build(["BL88 3LF", "SW1A1AA", "M1 1AE"], kind="post_code")
    for text in ("bl883lf", "BL88 3LF", "sw1a 1aa", "SW1A1AA", "m11ae", "to M1 1AE today"):
        assert [m.value_kind for m in index.find(text)] == ["post_code"], text
    for text in ("ward 88 3", "BL88", "M1", "sw1a 1ab"):
        assert index.find(text) == [], text
