"""The sentry's wire layer signs and checks exactly as jupyter_client's Session does (it no
longer uses Session itself, so that importing the sentry stays fast)."""

from __future__ import annotations

import pytest
from jupyter_client.session import Session

from bedside.errors import GatewayError
from bedside.gateway._wire import MalformedMessage, Wire


@pytest.mark.parametrize("scheme", ["hmac-sha256", "hmac-sha512", "hmac-md5"])
def test_signatures_match_jupyter_client(scheme):
    key = b"0123456789abcdef"
    session = Session(key=key, signature_scheme=scheme)
    msg = session.msg("execute_request", {"code": "1 + 1"})
    frames = session.serialize(msg, ident=[b"client"])
    wire = Wire(key, scheme, name="client")
    parsed = wire.parse(frames)
    assert parsed.msg_type == "execute_request"
    assert parsed.content == {"code": "1 + 1"}
    out = wire.frames(
        parsed.idents, parsed.raw_header, parsed.raw_parent, parsed.raw_metadata, parsed.raw_content
    )
    assert out == frames
    # ... and what the wire signs, jupyter_client accepts.
    idents, rest = session.feed_identities(out)
    assert session.deserialize(rest)["content"] == {"code": "1 + 1"}


def test_wrong_key_and_replay_are_rejected():
    session = Session(key=b"right", signature_scheme="hmac-sha256")
    frames = session.serialize(session.msg("kernel_info_request", {}))
    with pytest.raises(MalformedMessage, match="bad HMAC"):
        Wire(b"wrong", name="client").parse(frames)
    wire = Wire(b"right", name="client")
    wire.parse(frames)
    with pytest.raises(MalformedMessage, match="replayed"):
        wire.parse(frames)


def test_empty_key_means_unsigned():
    session = Session(key=b"", signature_scheme="hmac-sha256")
    frames = session.serialize(session.msg("kernel_info_request", {}))
    wire = Wire(b"", name="client")
    assert wire.parse(frames).msg_type == "kernel_info_request"
    assert wire.sign([b"a"]) == b""


@pytest.mark.parametrize("scheme", ["sha256", "hmac-nosuchhash", "rsa-sha256"])
def test_unknown_signature_scheme_is_a_clear_error(scheme):
    with pytest.raises(GatewayError, match="signature_scheme"):
        Wire(b"key", scheme, name="client")


def _signed_with_content(raw: bytes) -> list[bytes]:
    """A kernel message whose content frame is `raw`, signed as the kernel would sign it."""
    session = Session(key=b"k", signature_scheme="hmac-sha256")
    frames = session.serialize(session.msg("stream", {}))
    cut = frames.index(b"<IDS|MSG>")
    parts = frames[cut + 1 :]
    parts[4] = raw
    parts[0] = Wire(b"k", name="kernel").sign(parts[1:5])
    return [*frames[: cut + 1], *parts]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # What orjson refuses, json reads: the wire accepts exactly what it accepted before.
        (b'{"x": NaN}', None),
        (b'{"n": 123456789012345678901234567890}', {"n": 123456789012345678901234567890}),
        (b'{"s": "\\ud800"}', {"s": "\ud800"}),
        (
            b'{"t": "\\u00e9 \xc3\xa9", "d": {"a": [1, 2.5, null, true]}}',
            {"t": "é é", "d": {"a": [1, 2.5, None, True]}},
        ),  # fmt: skip
        (b'{"k": 1, "k": 2}', {"k": 2}),
    ],
)
def test_content_reads_as_json_reads_it(raw, expected):
    msg = Wire(b"k", name="kernel").parse(_signed_with_content(raw))
    if expected is None:
        assert msg.content["x"] != msg.content["x"]  # NaN
    else:
        assert msg.content == expected


@pytest.mark.parametrize("raw", [b'{"x": 1', b"[1, 2]", b'{"s": "\xff"}', b"[" * 2000])
def test_content_that_is_not_a_json_object_is_malformed(raw):
    with pytest.raises(MalformedMessage, match="content is not"):
        Wire(b"k", name="kernel").parse(_signed_with_content(raw))


def test_big_integers_keep_their_digits_anywhere_in_the_content():
    # orjson would read them as floats, and the digits (which the guard scans) would be lost.
    big = 10**40 + 7
    session = Session(key=b"k", signature_scheme="hmac-sha256")
    content = {"data": {"text/plain": [1, {"v": -big}]}, "n": big}
    frames = session.serialize(session.msg("display_data", content))
    msg = Wire(b"k", name="kernel").parse(frames)
    assert msg.content == content
    assert type(msg.content["n"]) is int and msg.content["data"]["text/plain"][1]["v"] == -big


def test_the_random_pool_hands_out_each_byte_once():
    from bedside.gateway._wire import RandomPool

    pool = RandomPool(chunk=64)
    taken = [pool.take(16) for _ in range(40)] + [pool.take(100)]
    assert [len(t) for t in taken] == [16] * 40 + [100]
    # Distinct draws (a repeated 128-bit value would mean bytes were handed out twice).
    assert len(set(taken)) == len(taken)


def test_a_large_message_checked_beside_its_parse_reads_as_inline():
    """With a pool, a large message's content is read in it while its signature is checked: the
    same message, the same refusals (a bad signature wins over bad JSON), the same replays."""
    from concurrent.futures import ThreadPoolExecutor

    from bedside.gateway._wire import CHECK_APART_BYTES

    big = "cohort analysis " * (CHECK_APART_BYTES // 16 + 1)
    session = Session(key=b"k", signature_scheme="hmac-sha256")
    frames = session.serialize(session.msg("stream", {"name": "stdout", "text": big}))
    with ThreadPoolExecutor(1) as pool:
        wire = Wire(b"k", name="kernel")
        assert wire.parse(frames, pool=pool).content == {"name": "stdout", "text": big}
        with pytest.raises(MalformedMessage, match="replayed"):
            wire.parse(frames, pool=pool)
        with pytest.raises(MalformedMessage, match="bad HMAC"):
            Wire(b"other", name="kernel").parse(frames, pool=pool)
        broken = _signed_with_content(b'{"text": "' + big.encode() + b'"')
        with pytest.raises(MalformedMessage, match="content is not"):
            Wire(b"k", name="kernel").parse(broken, pool=pool)
        with pytest.raises(MalformedMessage, match="bad HMAC"):
            Wire(b"other", name="kernel").parse(broken, pool=pool)
    # A pool that is shut down (the sentry closing) checks in the caller's thread.
    wire = Wire(b"k", name="kernel")
    assert wire.parse(frames, pool=pool).content["text"] == big
    with pytest.raises(MalformedMessage, match="bad HMAC"):
        Wire(b"other", name="kernel").parse(frames, pool=pool)


def test_work_on_a_large_content_starts_in_the_pool_and_counts_only_once_signed():
    """`ahead(header, content, size)` runs in the pool on the content read there; the future of
    its result is in `extra["ahead"]` (None if it raised), and a message whose signature fails
    returns nothing at all."""
    from concurrent.futures import ThreadPoolExecutor

    from bedside.gateway._wire import CHECK_APART_BYTES

    big = "cohort analysis " * (CHECK_APART_BYTES // 16 + 1)
    session = Session(key=b"k", signature_scheme="hmac-sha256")
    seen: list[tuple[str, int, int]] = []

    def ahead(header: dict, content: dict, size: int) -> str:
        seen.append((header["msg_type"], len(content["text"]), size))
        return "made ahead"

    def broken(header: dict, content: dict, size: int) -> str:
        raise ValueError("cannot")

    with ThreadPoolExecutor(1) as pool:
        frames = session.serialize(session.msg("stream", {"name": "stdout", "text": big}))
        msg = Wire(b"k", name="kernel").parse(frames, pool=pool, ahead=ahead)
        assert msg.extra["ahead"].result() == "made ahead"
        assert seen == [("stream", len(big), len(frames[-1]))]
        frames = session.serialize(session.msg("stream", {"name": "stdout", "text": big}))
        msg = Wire(b"k", name="kernel").parse(frames, pool=pool, ahead=broken)
        assert msg.extra["ahead"].result() is None
        with pytest.raises(MalformedMessage, match="bad HMAC"):
            Wire(b"other", name="kernel").parse(frames, pool=pool, ahead=ahead)
        # A small message is read here, and nothing runs ahead.
        small = session.serialize(session.msg("stream", {"name": "stdout", "text": "x"}))
        assert Wire(b"k", name="kernel").parse(small, pool=pool, ahead=ahead).extra == {}
