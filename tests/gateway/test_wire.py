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
