"""The sentry's relay loop mechanics (gateway/_loop.py) on real zmq sockets over ipc.

The loop waits on the sockets' zmq.FD descriptors, which signal arriving commands rather than
waiting messages: these tests check that no message is left waiting unannounced, when a
handler sends on a socket that has messages arriving, when a burst exceeds one drain, and that
a handler's failure drops only its own message.
"""

from __future__ import annotations

import select
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from bedside.gateway._loop import DRAIN_MAX, Relay, recv_frames, send_frames


@pytest.fixture
def pairs(tmp_path: Path) -> Any:
    """Two (relay side, peer side) DEALER pairs over ipc."""
    ctx = zmq.Context()
    socks = []
    out = []
    for name in ("a", "b"):
        mine, peer = ctx.socket(zmq.DEALER), ctx.socket(zmq.DEALER)
        for s in (mine, peer):
            s.linger = 0
            socks.append(s)
        mine.bind(f"ipc://{tmp_path}/{name}")
        peer.connect(f"ipc://{tmp_path}/{name}")
        out.append((mine, peer))
    yield out
    for s in socks:
        s.close()
    ctx.term()


def run_until(relay: Relay, done: Any, limit: float = 10.0) -> int:
    """Run the loop until `done()`; the number of wake-ups that handled nothing."""
    idle = 0
    deadline = time.monotonic() + limit
    while not done():
        assert time.monotonic() < deadline, "a message was left waiting"
        handled = sum(relay.drain(s, lambda: None) for s in relay.wait(50))
        idle += handled == 0
    return idle


def test_frames_round_trip_small_and_large(pairs: Any) -> None:
    (a, peer), _ = pairs
    big = bytes(range(256)) * 1024  # above the copy threshold: sent without a copy
    frames = [b"", b"<IDS|MSG>", b"x" * 10, big, memoryview(b"view")]
    send_frames(a, frames)
    assert peer.poll(5000)
    assert peer.recv_multipart() == [bytes(f) for f in frames]
    peer.send_multipart([b"one", b"two", b"three"])
    assert a.poll(5000)
    assert recv_frames(a) == [b"one", b"two", b"three"]
    with pytest.raises(zmq.Again):
        recv_frames(a)


def test_messages_arriving_on_a_socket_that_is_sent_on_are_not_missed(pairs: Any) -> None:
    # The handler of `b` answers on `a` while `a` has messages arriving: a send can take in
    # `a`'s arrival signal, so the loop must ask `a` before it sleeps.
    (a, a_peer), (b, b_peer) = pairs
    got: list[bytes] = []
    asked: list[bytes] = []
    relay: Relay

    def on_b(frames: list[bytes]) -> None:
        asked.append(frames[0])
        send_frames(a, [b"answer", frames[0]])
        relay.sent_on.add(a)

    relay = Relay({a: lambda f: got.append(f[0]), b: on_b})
    n = 300
    for i in range(n):
        b_peer.send(b"q%d" % i)
        a_peer.send(b"m%d" % i)
    # Until both sockets are drained: `a` may well be done before every question on `b` has been
    # answered (in CI it once was, and the answers below then never came).
    run_until(relay, lambda: len(got) == n and len(asked) == n)
    assert got == [b"m%d" % i for i in range(n)]
    answers = []
    while len(answers) < n:
        assert a_peer.poll(5000)
        answers.append(a_peer.recv_multipart())
    assert answers == [[b"answer", b"q%d" % i] for i in range(n)]
    relay.close()


def test_a_socket_sent_on_is_asked_before_the_loop_sleeps(pairs: Any) -> None:
    # A message has arrived on `a` and its signal is pending; then a send on `a` takes the
    # signal in (libzmq's send may process the socket's commands; asking for its events, as
    # here, certainly does). The descriptor is quiet while the message waits: the loop must
    # find it by asking `a`, without sleeping on the descriptors at all.
    (a, peer), (b, _) = pairs
    relay = Relay({a: lambda f: None, b: lambda f: None})
    relay.wait(0)  # the first wait asks every socket
    peer.send(b"waiting")
    deadline = time.monotonic() + 10
    while not select.select([a.getsockopt(zmq.FD)], [], [], 0.05)[0]:
        assert time.monotonic() < deadline, "the message never signalled"
    send_frames(a, [b"reply"])
    a.getsockopt(zmq.EVENTS)
    assert not select.select([a.getsockopt(zmq.FD)], [], [], 0)[0]
    relay.sent_on.add(a)  # as Sentry._send does

    class NoSleep:
        def poll(self, timeout: float) -> list[tuple[int, int]]:
            raise AssertionError("slept with a message waiting")

        def close(self) -> None:
            pass

    epoll, relay._epoll = relay._epoll, NoSleep()  # type: ignore[assignment]
    assert relay.wait(5000) == [a]
    assert recv_frames(a) == [b"waiting"]
    relay._epoll = epoll
    relay.close()


def test_a_burst_longer_than_one_drain_is_handled_without_sleeping(pairs: Any) -> None:
    (a, peer), (b, _) = pairs
    got: list[bytes] = []
    relay = Relay({a: lambda f: got.append(f[0]), b: lambda f: None})
    n = DRAIN_MAX * 3 + 5
    for i in range(n):
        peer.send(b"%d" % i)
    deadline = time.monotonic() + 10
    while not a.poll(0) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the whole burst has reached `a`
    run_until(relay, lambda: len(got) == n)
    assert got == [b"%d" % i for i in range(n)]
    relay.close()


def test_a_failing_handler_drops_only_its_message(pairs: Any) -> None:
    (a, peer), (b, _) = pairs
    got: list[bytes] = []
    errors: list[str] = []

    def handle(frames: list[bytes]) -> None:
        if frames[0] == b"bad":
            raise ValueError("bad message")
        got.append(frames[0])

    relay = Relay({a: handle, b: lambda f: None})
    for word in (b"one", b"bad", b"two"):
        peer.send(word)
    deadline = time.monotonic() + 10
    while len(got) < 2:
        assert time.monotonic() < deadline
        for s in relay.wait(50):
            relay.drain(s, lambda: errors.append("failed"))
    assert got == [b"one", b"two"]
    assert errors == ["failed"]
    relay.close()


def test_a_quiet_wait_returns_nothing_after_its_timeout(pairs: Any) -> None:
    (a, _), (b, _) = pairs
    relay = Relay({a: lambda f: None, b: lambda f: None})
    relay.wait(10)  # the first wait asks every socket
    assert relay.wait(20) == []
    relay.close()
