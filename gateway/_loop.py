"""The sentry's relay loop mechanics: wait on its ten zmq sockets, receive and send frames.

A trivial cell is six messages through the sentry, each one wake-up of its relay thread. With
`zmq.Poller` every wake-up polled all ten sockets twice (libzmq's `zmq_poll` asks each socket for
its events before and after it sleeps: twenty system calls), and each socket's drain ended in a
`zmq.Again` exception; pyzmq's `send_multipart` and `recv_multipart` add a Python call and enum
arithmetic per frame. Here one `epoll` waits on the sockets' notification descriptors
(`zmq.FD`), only the sockets that woke it or were sent on are asked for their events, and frames
go through pyzmq's compiled `send` and `recv` directly.

The notification descriptor of a zmq socket is edge-like: it signals that commands arrived, and
any operation on the socket (a send too) may consume the signal of a message that is then
waiting unannounced. So before the loop sleeps it asks every socket it sent on since it last
asked (`Relay.sent_on`) whether a message waits, and drains every socket it reads until the
socket reports none. On a timeout it asks all sockets, so that nothing could wait longer than one
quiet interval even if a signal were missed.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable, Iterable
from typing import Any

import zmq

# pyzmq's compiled socket methods, under the Python `zmq.Socket` class that wraps them.
_BaseSocket: Any = zmq.backend.Socket
_send = _BaseSocket.send
_recv = _BaseSocket.recv
_get = _BaseSocket.get

_SNDMORE = int(zmq.SNDMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
# Frames from this size on are handed to zmq without a copy (pyzmq's own copy threshold, which
# `send_multipart(copy=False)` applied): a big cell or a large output is not copied again.
_COPY_BELOW = zmq.COPY_THRESHOLD
# Messages read from one socket in a row before the others get their turn.
DRAIN_MAX = 64

Handler = Callable[[list[bytes]], None]


def send_frames(sock: Any, frames: list[Any]) -> None:
    """`sock.send_multipart(frames, copy=False)`, through pyzmq's compiled `send`.

    Anything that is not a zmq socket (the tests' capturing stand-ins) gets `send_multipart`.
    """
    if not isinstance(sock, _BaseSocket):
        sock.send_multipart(frames, copy=False)
        return
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        _send(sock, frame, _SNDMORE if i < last else 0, len(frame) < _COPY_BELOW, False)


def recv_frames(sock: Any) -> list[bytes]:
    """One multipart message without waiting (`zmq.Again` when there is none), as bytes.

    Each frame is received as a `zmq.Frame`, whose `more` flag pyzmq reads in C while receiving
    it: asking the socket (`get(RCVMORE)`) builds a `SocketOption` enum in Python every time,
    about a microsecond per frame, seven frames a message.
    """
    frame = _recv(sock, _NOBLOCK, False, False)
    parts = [frame.bytes]
    while frame.more:
        frame = _recv(sock, 0, False, False)
        parts.append(frame.bytes)
    return parts


def readable(sock: Any) -> bool:
    """Whether a message waits on `sock` (this also takes in its pending zmq commands)."""
    return bool(_get(sock, _EVENTS) & _POLLIN)


class Relay:
    """Waits until sockets have messages and hands each message to its socket's handler."""

    def __init__(self, handlers: dict[Any, Handler]) -> None:
        self.handlers = handlers
        self.sent_on: set[Any] = set()
        self._epoll = select.epoll()
        self._by_fd: dict[int, Any] = {}
        for sock in handlers:
            fd = _get(sock, int(zmq.FD))
            self._by_fd[fd] = sock
            self._epoll.register(fd, select.EPOLLIN)
        # Sockets to ask before sleeping: all of them at first.
        self._check: set[Any] = set(handlers)

    def close(self) -> None:
        self._epoll.close()

    def _waiting(self, socks: Iterable[Any]) -> list[Any]:
        return [sock for sock in socks if readable(sock)]

    def wait(self, timeout_ms: int) -> list[Any]:
        """The sockets that may have messages: at once if some are known to, else after
        sleeping until one signals or `timeout_ms` passes (then every socket is asked)."""
        check = self._check | self.sent_on
        self._check = set()
        self.sent_on.clear()
        ready = self._waiting(check)
        if ready:
            return ready
        by_fd = self._by_fd
        deadline = time.monotonic() + timeout_ms / 1000
        while True:
            remaining = deadline - time.monotonic()
            events = self._epoll.poll(remaining) if remaining > 0 else []
            if not events:
                return self._waiting(self.handlers)
            # A descriptor also signals zmq's other commands (a peer attached, a pipe
            # writable again): sleep on unless a message waits, as zmq_poll does.
            ready = self._waiting(by_fd[fd] for fd, _ in events if fd in by_fd)
            if ready:
                return ready

    def drain(self, sock: Any, on_error: Callable[[], None]) -> int:
        """Hand the messages waiting on `sock` to its handler (at most `DRAIN_MAX`; the socket is
        asked again before the loop sleeps if it may hold more); the number handled.
        `on_error` runs, inside the except clause, when a handler raises."""
        handler = self.handlers[sock]
        count = 0
        while readable(sock):
            if count == DRAIN_MAX:
                self._check.add(sock)
                break
            try:
                frames = recv_frames(sock)
            except zmq.Again:  # pragma: no cover - readable() said a message waits
                break
            count += 1
            try:
                handler(frames)
            except Exception:
                on_error()
        return count
