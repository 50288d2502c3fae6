"""One TCP connection to one endpoint: handshake, streams, flow control, GOAWAY, keepalive.

Written from ``Protocol/PROTOCOL.md``. Whoever holds a connection's *read role* reads its
socket and applies the server's frames to the connection state under the connection's lock (a
``_ConnSignal``), notifying it. Callers write their own frames (under a separate write lock, so
a frame is never split), and wait for what is delivered by yielding ``Wait`` operations (see
``_drive``): the same methods serve the blocking and the asyncio client.

The read role (leader/followers): a blocking caller that waits on a connection whose role is
free takes it and reads the socket itself until what it waits for has happened, then hands the
role on (to another waiting caller, if any). So a call's reply wakes the very thread that waits
for it, with no hand-over from another thread. Each connection also has a reader thread that
takes the role whenever no blocking caller has used it for ``IDLE_HANDOVER`` (an idle
connection still sees GOAWAY, PING and the server's FIN at once), while asyncio tasks wait on
it, and to linger after the connection ended. A leader blocked in ``select`` is woken through a
socket pair when another thread changes the connection's state (cancellation, teardown).

Failures of a call's attempt are ``_Failure``: *provably not processed* (retry anywhere) or *may
have been processed* (retry only if idempotent), as PROTOCOL.md section 14 classifies them.
"""

from __future__ import annotations

import math
import os
import select
import socket
import threading
import time
from threading import get_ident
from collections import deque
from typing import Any, Callable, Sequence

from . import wire
from ._drive import MAX_SLICE, Gen, Signal, Wait, slice_until
from .errors import RPCError
from .wire import (MAX_STREAM_ID, MAX_WINDOW, PREFACE, Checkpoint, Data, ErrorCode, Frame, FrameDecoder, GoAway,
                   Headers, Open, Ping, Reset, Settings, SettingsFrame, Status, Trailers, WindowUpdate,
                   WireError)

Endpoint = tuple[str, int]

LINGER = 2.0  # section 16.2: longest wait for the peer's FIN after sending ours
WRITE_TIMEOUT = 10.0  # a socket write blocked this long means the connection is dead
_POLL = 0.5  # longest single wait on select, so flags are rechecked
SLOT_WAIT_LIMIT = 30.0  # longest wait for a stream slot of a call without deadline (as Swift's)
IDLE_HANDOVER = 0.05  # the reader thread leaves the socket to blocking callers that used it this recently


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


class _Failure(Exception):
    """An attempt ended without a usable result. ``processed`` False means *provably not
    processed* (retry anywhere); True means *may have been processed* (retry only if idempotent
    and ``retry_if_idempotent``); the caller sees ``error`` when no retry happens."""

    def __init__(self, error: RPCError, processed: bool, retry_if_idempotent: bool = True,
                 resumable: bool = False) -> None:
        super().__init__(str(error))
        self.error = error
        self.processed = processed
        self.retry_if_idempotent = retry_if_idempotent
        self.refused_by: _Connection | None = None  # RESET REFUSED_STREAM on this connection
        # the server ended the stream at a checkpoint, to be continued elsewhere (section 18.3)
        self.resumable = resumable

    def retryable(self, idempotent: bool) -> bool:
        return not self.processed or (idempotent and self.retry_if_idempotent)


def _not_processed(message: str) -> _Failure:
    return _Failure(RPCError(Status.UNAVAILABLE, message), processed=False)


_RESET_STATUS = {  # section 12.2: RESET received from the server
    ErrorCode.CANCEL: Status.CANCELLED,
    ErrorCode.MESSAGE_TOO_LARGE: Status.RESOURCE_EXHAUSTED,
    ErrorCode.ENHANCE_YOUR_CALM: Status.RESOURCE_EXHAUSTED,
}


def _reset_failure(code: ErrorCode, deadline_passed: bool) -> _Failure:
    """A RESET received from the server, as the caller sees it (section 12.2). A CANCEL once the
    call's deadline has passed is that deadline: a server whose deadline passes inside a response
    message resets with CANCEL (section 10), which may be read before the client notices."""
    if code is ErrorCode.REFUSED_STREAM:
        return _not_processed("stream refused by the server (REFUSED_STREAM)")
    if code is ErrorCode.CANCEL and deadline_passed:
        return _Failure(RPCError(Status.DEADLINE_EXCEEDED, "deadline exceeded (the server ended the call)"),
                        processed=True, retry_if_idempotent=False)
    status = _RESET_STATUS.get(code, Status.INTERNAL)
    return _Failure(RPCError(status, f"stream reset by the server ({code.name})"),
                    processed=True, retry_if_idempotent=False)


class _Stream:
    """One call's stream on one connection. Mutable fields are guarded by the connection's lock."""

    __slots__ = ("id", "send_window", "recv_window", "recv_unreturned", "events", "fragment",
                 "seen_first", "headers", "closed", "open_written", "first_sent", "half_closed",
                 "received", "checkpoint", "deadline")

    def __init__(self, sid: int, send_window: int, recv_window: int) -> None:
        self.id = sid
        self.send_window = send_window
        self.recv_window = recv_window
        self.recv_unreturned = 0  # consumed bytes whose stream credit is not yet returned
        # ("msg", (bytes, credit)), ("trailers", Trailers) or ("fail", _Failure)
        self.events: deque[tuple[str, Any]] = deque()
        self.fragment: bytearray | None = None  # reassembly of an incomplete response message
        self.seen_first = False  # HEADERS or DATA received
        self.headers: tuple[tuple[str, str], ...] = ()
        self.closed = False
        self.open_written = False  # OPEN handed to the socket (or being handed)
        self.first_sent = False  # the first message went out with the OPEN
        self.half_closed = False  # END_STREAM sent (or being sent)
        self.received = 0  # complete response messages received
        # the server's latest checkpoint (1.1): (messages it covers, requests consumed, token)
        self.checkpoint: tuple[int, int, bytes] | None = None
        self.deadline: float | None = None  # the call's (time.monotonic()), as sent in the OPEN


class _ConnSignal(Signal):
    """A connection's lock and signal. ``block`` lets a blocking caller read the socket while it
    waits (see the module's doc); ``notify_all`` from a thread other than the one reading also
    wakes that reader out of ``select``, so that it looks at the new state."""

    __slots__ = ("conn",)

    def __init__(self, conn: "_Connection") -> None:
        super().__init__()
        self.conn = conn

    def notify_all(self) -> None:
        Signal.notify_all(self)
        conn = self.conn
        if conn._selecting and not conn._wake_due and conn._reader_ident != get_ident():
            conn._wake_due = True
            try:
                conn._wake_w.send(b"w")  # type: ignore[union-attr]
            except (OSError, AttributeError):
                pass

    def block(self, epoch: int, until: float | None) -> None:
        self.conn._wait_blocking(epoch, until)

    def async_waiter_added(self) -> None:
        conn = self.conn
        if not conn._reading:
            conn._park.notify()  # the reader thread reads for asyncio waiters


class _Connection:
    """One TCP connection to one endpoint: handshake, stream bookkeeping, flow control, GOAWAY."""

    def __init__(self, address: Endpoint, local: Settings,
                 on_closed: Callable[["_Connection"], None],
                 keepalive: tuple[float, float] | None = None, callers_read: bool = False) -> None:
        self.address = address
        self.local = local
        self.peer = Settings()
        self._on_closed = on_closed
        self._keepalive = keepalive  # (interval, timeout) in seconds, or None: off
        self._sock: socket.socket | None = None
        self._cv = _ConnSignal(self)
        self._wlock = threading.Lock()
        self._reader: threading.Thread | None = None
        # the read role (see the module's doc); all under the connection's lock
        self._reading = False  # someone holds the role
        self._reader_ident: int | None = None  # the thread holding it
        self._selecting = False  # the holder is (about to be) blocked in select
        self._wake_due = False  # a byte is on its way through the wake socket pair
        self._followers = 0  # blocking callers waiting while someone else holds the role
        self._callers_read = callers_read  # the blocking client's: its callers read while they wait
        self._blocking_seen = 0.0  # when a blocking caller last opened a stream or waited here
        self._park = threading.Condition(self._cv.lock)  # where the reader thread waits its turn
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._fd = -1
        self._rbuf = bytearray(262144)  # what the read role reads into
        self._rview = memoryview(self._rbuf)
        self._poller: Any = None  # select.poll over the socket and the wake socket (read role)
        self.handshaken = False
        self.dead = False  # no stream can use this connection any more
        self.dead_reason = ""
        self.draining = False  # no new streams (GOAWAY received, ids used up, closing)
        self.goaway_last = MAX_STREAM_ID
        self.goaway_error = 0  # error code of the first GOAWAY that carried one
        self._next_id = 1
        self._highest = 0
        self._streams: dict[int, _Stream] = {}
        self._slots = 0  # streams not closed, plus reservations about to open one
        self._conn_send_window = 0
        self._conn_recv_window = local.connection_window_size
        self._conn_unreturned = 0
        self._closing_since: float | None = None  # our FIN sent: linger until the peer's
        self._close_when_idle = False
        self._pending = b""  # frames the reader owes the server, written once the lock is released
        self._decoder = FrameDecoder(local.max_frame_size, local.max_metadata_size)
        self._preface: bytearray | None = bytearray()
        self._last_recv = 0.0
        self._ping_sent: float | None = None  # our keepalive PING awaiting its ACK
        self._ping_data = b""
        self.connected_at = time.monotonic()
        self.reresolved = False  # the pool has re-resolved its name after this one's GOAWAY
        self.keepalive_failed = False  # ended because a keepalive PING went unanswered
        self.pings_refused = False  # ended by the server's GOAWAY ENHANCE_YOUR_CALM "too many pings"

    # --- life cycle ------------------------------------------------------------------------

    def connect(self, timeout: float) -> None:
        """Connects, exchanges preface and SETTINGS (section 3). Raises ``_Failure`` (not processed)."""
        end = time.monotonic() + timeout
        try:
            sock = socket.create_connection(self.address, timeout=max(timeout, 0.001))
        except OSError as e:
            self._on_closed(self)
            raise _not_processed(f"connect to {self.address[0]}:{self.address[1]} failed: {e}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(WRITE_TIMEOUT)
        try:
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
        except OSError as e:
            sock.close()
            self._on_closed(self)
            raise _not_processed(f"connect to {self.address[0]}:{self.address[1]} failed: {e}") from None
        self._sock = sock
        self._fd = sock.fileno()
        self._poller = select.poll()
        self._poller.register(self._fd, select.POLLIN)
        self._poller.register(self._wake_r, select.POLLIN)
        try:
            sock.sendall(PREFACE + wire.encode_frame(SettingsFrame(self.local.pairs())))
        except OSError as e:
            sock.close()
            self._close_wake()
            self._on_closed(self)
            raise _not_processed(f"handshake with {self.address[0]}:{self.address[1]} failed: {e}") from None
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"baton-reader-{self.address[0]}:{self.address[1]}")
        self._reader.start()
        with self._cv.lock:
            while not self.handshaken and not self.dead:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(min(left, _POLL))
            ok, reason = self.handshaken and not self.dead, self.dead_reason
        if not ok:
            if not reason:
                self._teardown(ErrorCode.PROTOCOL_ERROR, "handshake timeout")
                reason = "handshake timeout"
            raise _not_processed(f"handshake with {self.address[0]}:{self.address[1]} failed: {reason}")

    def usable(self) -> bool:
        """True while new streams may be opened here (a server announcing MAX_CONCURRENT_STREAMS
        0 takes none on this connection, section 6.4)."""
        return (self.handshaken and not self.dead and not self.draining
                and self.peer.max_concurrent_streams > 0)

    def takes_no_streams(self) -> bool:
        """An established connection whose server announced MAX_CONCURRENT_STREAMS 0."""
        return (self.handshaken and not self.dead and not self.draining
                and self.peer.max_concurrent_streams == 0)

    def close(self) -> None:
        """Fails open calls with CANCELLED (RESET CANCEL), sends GOAWAY(0, NO_ERROR) and closes
        as in section 13.4 (FIN, then the reader lingers for the server's FIN)."""
        with self._cv.lock:
            if self.dead:
                return
            self.draining = True
            open_streams = list(self._streams.values())
            for s in open_streams:
                self._close_stream(s, ("fail", _Failure(RPCError(Status.CANCELLED, "client closed"),
                                                        processed=True, retry_if_idempotent=False)))
        frames = b"".join(wire.encode_frame(Reset(s.id, ErrorCode.CANCEL)) for s in open_streams)
        self._teardown(ErrorCode.NO_ERROR, "client closed", prefix=frames)

    def pause(self, seconds: float) -> Gen[None]:
        """Waits ``seconds``, or until the
        connection stops taking streams (section 14: a pause before retrying on the connection
        that answered REFUSED_STREAM)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            with self._cv.lock:
                if not self.usable():
                    return
                epoch = self._cv.epoch
            yield Wait(self._cv, epoch, end)

    def join(self, timeout: float) -> None:
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout)

    def _teardown(self, code: ErrorCode | None, reason: str, prefix: bytes = b"") -> None:
        """Ends the connection: fails its streams (not processed when provably so, else UNAVAILABLE),
        sends ``prefix`` and GOAWAY(0, code) unless ``code`` is None, then our FIN; the reader
        thread lingers for the peer's FIN and closes the socket."""
        with self._cv.lock:
            if self.dead:
                return
            self.dead, self.draining, self.dead_reason = True, True, reason
            for s in list(self._streams.values()):
                if not s.open_written or s.id > self.goaway_last:
                    failure = _not_processed(f"not processed: {reason}")
                else:
                    failure = _Failure(RPCError(Status.UNAVAILABLE, f"connection lost: {reason}"),
                                       processed=True)
                self._close_stream(s, ("fail", failure))
            self._closing_since = time.monotonic()
            self._cv.notify_all()
            self._park.notify()  # the reader thread lingers (section 13.4)
        self._on_closed(self)  # the pool stops using it now; the reader still lingers (13.4)
        sock = self._sock
        if sock is None:
            return
        try:
            if code is not None:
                self._write(prefix + wire.encode_frame(GoAway(0, code, reason[:200])), teardown=False)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    # --- writing ---------------------------------------------------------------------------

    def _write(self, data: bytes, teardown: bool = True) -> bool:
        """Writes whole frames; False (and the connection torn down) if the socket failed."""
        sock = self._sock
        if not data or sock is None:
            return sock is not None
        try:
            with self._wlock:
                _send_all(sock, self._fd, data)
            return True
        except OSError as e:
            if teardown:
                self._teardown(None, f"write failed: {e}")
            return False

    # --- streams (caller threads) ------------------------------------------------------------

    def open_stream(self, method: str, metadata: tuple[tuple[str, str], ...], deadline: float | None,
                    first: bytes | None = None, end_stream: bool = False) -> Gen[_Stream]:
        """Sends OPEN on a new stream, and ``first`` (a whole request message) in the same write
        when it fits one frame and both windows; the caller checks ``stream.first_sent``.
        ``end_stream`` half-closes after ``first`` (or on the OPEN itself when ``first`` is None).

        Waits for a free slot under the server's MAX_CONCURRENT_STREAMS. Raises ``_Failure`` (not
        processed) if the connection cannot take it, ``RPCError`` for DEADLINE_EXCEEDED or
        RESOURCE_EXHAUSTED (nothing sent)."""
        limit = time.monotonic() + SLOT_WAIT_LIMIT if deadline is None else deadline
        while True:
            with self._wlock:  # the OPEN is written in turn with other frames, never split
                with self._cv.lock:
                    self._check_open_allowed()
                    if self._slots < self.peer.max_concurrent_streams:
                        self._slots += 1
                        try:
                            stream, frame = self._new_stream(method, metadata, deadline, first, end_stream)
                        except BaseException:
                            self._slots -= 1
                            self._cv.notify_all()
                            raise
                    else:
                        if _expired(deadline):
                            raise RPCError(Status.DEADLINE_EXCEEDED, "deadline passed waiting for a stream slot")
                        if _expired(limit):  # section 6.4: a queued call without deadline waits this long
                            raise RPCError(Status.UNAVAILABLE, f"no stream slot on {self.address[0]}:"
                                           f"{self.address[1]} within {SLOT_WAIT_LIMIT:g} s (not processed)")
                        stream, epoch = None, self._cv.epoch
                if stream is not None:
                    assert self._sock is not None
                    try:
                        _send_all(self._sock, self._fd, frame)
                    except OSError as e:
                        # sendall did not hand the whole frame to the kernel: the server cannot have
                        # read a complete OPEN, so the call is provably not processed.
                        with self._cv.lock:
                            if not stream.closed:
                                self._close_stream(stream, ("fail", _not_processed(str(e))))
                        self._teardown(None, f"write failed: {e}")
                        raise _not_processed(f"OPEN not written: {e}") from None
                    return stream
            yield Wait(self._cv, epoch, limit)

    def unary(self, method: str, metadata: tuple[tuple[str, str], ...], deadline: float | None,
              request: bytes) -> bytes | _Failure | None:
        """A blocking client's unary call in one piece, its usual case: a free slot, the request
        in the OPEN's write, the caller reading the reply itself (``_wait_blocking``). Returns
        the response; None if nothing was sent (no slot, the request does not fit one frame and
        the windows, the connection takes no streams, the deadline has passed: the call goes the
        general way); or the ``_Failure`` of this attempt when it may be retried (the caller
        decides). Raises ``RPCError`` for the call's end otherwise, as ``CallCore`` would."""
        n = len(request)
        with self._wlock:
            with self._cv.lock:
                peer = self.peer
                if (self.dead or self.draining or self._next_id > MAX_STREAM_ID
                        or self._slots >= peer.max_concurrent_streams or n > peer.max_message_size
                        or n > min(peer.max_frame_size, peer.initial_window_size, self._conn_send_window)
                        or (deadline is not None and time.monotonic() >= deadline)):
                    return None
                self._slots += 1
                try:
                    stream, frame = self._new_stream(method, metadata, deadline, request, True)
                except BaseException:
                    self._slots -= 1
                    self._cv.notify_all()
                    raise
            assert self._sock is not None and stream.first_sent
            try:
                _send_all(self._sock, self._fd, frame)
            except OSError as e:  # as in open_stream: provably not processed
                with self._cv.lock:
                    if not stream.closed:
                        self._close_stream(stream, ("fail", _not_processed(str(e))))
                self._teardown(None, f"write failed: {e}")
                return _not_processed(f"OPEN not written: {e}")
        message: bytes | None = None
        try:
            while True:
                with self._cv.lock:
                    if stream.events:
                        kind, value = stream.events.popleft()
                        updates = b""
                        if kind == "msg":
                            updates = self._consume(stream, value[1])
                            value = value[0]
                        epoch = -1
                    elif deadline is not None and time.monotonic() >= deadline:
                        raise RPCError(Status.DEADLINE_EXCEEDED, "deadline exceeded")
                    else:
                        epoch = self._cv.epoch
                if epoch >= 0:
                    self._wait_blocking(epoch, deadline)
                    continue
                if kind == "msg":
                    self._write(updates)
                    if message is not None:
                        raise RPCError(Status.INTERNAL, "a second response message on a unary call")
                    message = value
                elif kind == "trailers":
                    status = Status.of(value.status)
                    if status is not Status.OK:
                        raise RPCError(status, value.message, _public(value.metadata))
                    if message is None:
                        raise RPCError(Status.INTERNAL, "status OK without a response message on a unary call")
                    return message
                else:  # "fail": retried only if no response message was delivered (section 14)
                    if message is not None:
                        raise value.error
                    return value  # type: ignore[no-any-return]
        finally:
            self.finish(stream)  # RESET CANCEL if still open (deadline, interrupted, INTERNAL)

    def _new_stream(self, method: str, metadata: tuple[tuple[str, str], ...], deadline: float | None,
                    first: bytes | None, end_stream: bool) -> tuple[_Stream, bytes]:
        """Registers a new stream (its slot taken) and its OPEN (with ``first`` when it fits);
        both locks held. Raises, registering nothing, when the call cannot be sent."""
        rem = None if deadline is None else deadline - time.monotonic()
        if rem is not None and rem <= 0:
            raise RPCError(Status.DEADLINE_EXCEEDED, "deadline passed before the call was sent")
        timeout_us = 0 if rem is None else max(1, math.ceil(rem * 1_000_000))
        sid = self._next_id
        block = wire.encode_metadata_block(metadata)
        peer = self.peer
        if len(block) > peer.max_metadata_size:
            raise RPCError(Status.RESOURCE_EXHAUSTED,
                           f"metadata block of {len(block)} bytes > server's MAX_METADATA_SIZE "
                           f"{peer.max_metadata_size}")
        frame = wire.open_frame(sid, method.encode("utf-8"), timeout_us, block, end_stream and first is None)
        if len(frame) - wire.HEADER_LEN > peer.max_frame_size:
            raise RPCError(Status.RESOURCE_EXHAUSTED,
                           f"OPEN of {len(frame) - wire.HEADER_LEN} bytes > server's "
                           f"MAX_FRAME_SIZE {peer.max_frame_size}")
        self._next_id += 2
        self._highest = sid
        if self._callers_read:  # the reader thread leaves the socket to this caller
            self._blocking_seen = time.monotonic()
        stream = _Stream(sid, peer.initial_window_size, self.local.initial_window_size)
        stream.open_written = True  # from here on the server may see it
        stream.deadline = deadline
        stream.half_closed = end_stream and first is None
        n = len(first) if first is not None else -1
        if 0 <= n <= min(peer.max_frame_size, stream.send_window, self._conn_send_window):
            stream.send_window -= n
            self._conn_send_window -= n
            frame += wire.data_frame(sid, first, end_stream, True)  # type: ignore[arg-type]
            stream.first_sent = True
            stream.half_closed = end_stream
        self._streams[sid] = stream
        return stream, frame

    def _check_open_allowed(self) -> None:
        if self.dead or self.draining:
            raise _not_processed(f"connection to {self.address[0]}:{self.address[1]} is "
                                 + ("closed" if self.dead else "draining (GOAWAY)"))
        if self._next_id > MAX_STREAM_ID:  # section 6.1: continue on a new connection
            self.draining = self._close_when_idle = True
            raise _not_processed("stream ids used up")

    def send_message(self, stream: _Stream, message: bytes, end_stream: bool,
                     deadline: float | None) -> Gen[bool]:
        """Sends one message as DATA frames within MAX_FRAME_SIZE and both send windows (7.3, 9),
        waiting for credit. ``end_stream`` half-closes with its last frame.

        Returns False, without error, if the stream closed first (TRAILERS or RESET: the outcome
        is then in the stream's events) or the connection died; True once every byte is written.
        Raises DEADLINE_EXCEEDED if the deadline passes while it waits for credit.
        """
        view = memoryview(message)
        offset = 0
        while True:
            with self._cv.lock:
                if stream.closed or self.dead:
                    return False
                left = len(view) - offset
                n = min(left, self.peer.max_frame_size, stream.send_window, self._conn_send_window)
                if n <= 0 and left > 0:
                    if _expired(deadline):
                        raise RPCError(Status.DEADLINE_EXCEEDED, "deadline exceeded waiting for flow-control credit")
                    epoch = self._cv.epoch
                    wait: Wait | None = Wait(self._cv, epoch, deadline)
                else:
                    wait = None
                    n = max(n, 0)
                    stream.send_window -= n
                    self._conn_send_window -= n
                    last = offset + n == len(view)
                    if end_stream and last:
                        stream.half_closed = True
            if wait is not None:
                yield wait
                continue
            if not self._write(wire.data_frame(stream.id, view[offset:offset + n], end_stream and last, last)):
                return False
            offset += n
            if last:
                return True

    def send_end(self, stream: _Stream) -> None:
        """Half-closes: a zero-length DATA with END_STREAM only (section 7.1)."""
        with self._cv.lock:
            if stream.closed or self.dead or stream.half_closed:
                return
            stream.half_closed = True
        self._write(wire.data_frame(stream.id, b"", end_stream=True))

    def next_event(self, stream: _Stream, deadline: float | None,
                   abandoned: Callable[[], bool] | None = None) -> Gen[tuple[str, Any] | None]:
        """The stream's next event, or None once the deadline has passed; ("abandoned", None)
        as soon as ``abandoned()`` is true (another thread moved the call to a new attempt)."""
        while True:
            with self._cv.lock:
                if abandoned is not None and abandoned():
                    return "abandoned", None
                if stream.events:
                    kind, value = stream.events.popleft()
                    updates = b""
                    if kind == "msg":
                        updates = self._consume(stream, value[1])
                        value = value[0]
                    break
                if _expired(deadline):
                    return None
                epoch = self._cv.epoch
            yield Wait(self._cv, epoch, deadline)
        self._write(updates)
        return kind, value

    def take_trailers(self, stream: _Stream) -> Trailers | None:
        """The stream's TRAILERS if they are its next event (taken), else None."""
        with self._cv.lock:
            if stream.events and stream.events[0][0] == "trailers":
                return stream.events.popleft()[1]  # type: ignore[no-any-return]
            return None

    def cancel(self, stream: _Stream) -> None:
        """Sends RESET CANCEL if the stream is still open and closes it (deadline, abandon)."""
        with self._cv.lock:
            if stream.closed:
                return
            self._close_stream(stream, None)
        self._write(wire.encode_frame(Reset(stream.id, ErrorCode.CANCEL)))

    def finish(self, stream: _Stream) -> None:
        """Ends the caller's use of a stream: resets it if still open and returns the connection
        credit of response bytes never taken (they count as discarded, section 9.3)."""
        if stream.closed and not stream.events:  # the usual end (single reads: no lock needed;
            return                               # a closed stream gets no new events)
        self.cancel(stream)
        with self._cv.lock:
            if not stream.events:
                return
            credit = sum(v[1] for k, v in stream.events if k == "msg")
            stream.events.clear()
            updates = self._consume(stream, credit) if credit else b""
            self._cv.notify_all()  # a thread still waiting on this stream looks again
        self._write(updates)

    def last_event(self, stream: _Stream) -> tuple[tuple[str, Any] | None, bool]:
        """The stream's last queued event and whether a response message is queued before it."""
        with self._cv.lock:
            if not stream.events:
                return None, False
            return stream.events[-1], any(k == "msg" for k, _ in stream.events)

    # --- bookkeeping (connection lock held) --------------------------------------------------

    def _close_stream(self, stream: _Stream, event: tuple[str, Any] | None) -> None:
        if stream.closed:
            return
        stream.closed = True
        if event is not None:
            stream.events.append(event)
        if self._streams.pop(stream.id, None) is not None:
            self._slots -= 1
        self._cv.notify_all()
        if self._close_when_idle and not self._streams and not self.dead:
            threading.Thread(target=self._teardown, args=(ErrorCode.NO_ERROR, "stream ids used up"),
                             daemon=True).start()

    def _consume(self, stream: _Stream | None, n: int) -> bytes:
        """Marks ``n`` received DATA bytes consumed; the WINDOW_UPDATEs now due (section 9.3)."""
        out = b""
        self._conn_unreturned += n
        if self._conn_unreturned >= max(1, self.local.connection_window_size // 2) and not self.dead:
            out += wire.encode_frame(WindowUpdate(0, self._conn_unreturned))
            self._conn_recv_window += self._conn_unreturned
            self._conn_unreturned = 0
        if stream is not None and not stream.closed:
            stream.recv_unreturned += n
            if stream.recv_unreturned >= max(1, self.local.initial_window_size // 2):
                out += wire.encode_frame(WindowUpdate(stream.id, stream.recv_unreturned))
                stream.recv_window += stream.recv_unreturned
                stream.recv_unreturned = 0
        return out

    # --- reading (reader thread) ---------------------------------------------------------

    def _read_loop(self) -> None:
        """Reader thread: holds the read role while no blocking caller uses it (see the module's
        doc); after the connection ends it keeps reading and discarding until the server's FIN
        or the linger timeout, then closes the socket (13.4)."""
        sock = self._sock
        assert sock is not None
        me = get_ident()
        self._last_recv = time.monotonic()
        try:
            while True:
                with self._cv.lock:
                    now = time.monotonic()
                    if self._closing_since is not None and now - self._closing_since > LINGER:
                        break
                    if self._reading:
                        self._park.wait(_POLL)
                        continue
                    quiet = now - self._blocking_seen
                    if not (self.dead or not self.handshaken or self._cv._async or quiet >= IDLE_HANDOVER):
                        self._park.wait(IDLE_HANDOVER - quiet)
                        continue
                    self._reading, self._reader_ident = True, me
                try:
                    if not self._read_once(sock, self._keepalive_step()):
                        break
                finally:
                    self._release_role()
        finally:
            self._teardown(None, "connection closed")
            with self._cv.lock:  # a caller still reading must be done with the socket
                while self._reading:
                    self._park.wait(_POLL)
                self._reading, self._reader_ident = True, me
            sock.close()
            self._close_wake()
            self._on_closed(self)

    def _close_wake(self) -> None:
        for s in (self._wake_r, self._wake_w):
            if s is not None:
                s.close()

    def _read_once(self, sock: socket.socket, timeout: float, epoch: int | None = None) -> bool:
        """With the read role: waits up to ``timeout`` for input (or a wake-up), and applies what
        arrived. Returns immediately if ``epoch`` is given and the signal has moved past it.
        False once the connection is over (EOF or a failed read: it is torn down)."""
        with self._cv.lock:
            if epoch is not None and self._cv.epoch != epoch:
                return True
            self._selecting = True
        try:
            ready = self._poller.poll(max(timeout, 0.0) * 1000.0)
        except (OSError, ValueError) as e:
            self._teardown(None, f"read failed: {e}")
            return False
        finally:
            with self._cv.lock:
                self._selecting = False
                woken, self._wake_due = self._wake_due, False
            if woken:
                try:
                    self._wake_r.recv(64)  # type: ignore[union-attr]
                except OSError:
                    pass
        for fd, _ in ready:
            if fd == self._fd:
                return self._read_available(sock)
        return True

    def _release_role(self) -> None:
        with self._cv.lock:
            self._reading, self._reader_ident = False, None
            if self._followers:
                self._cv.notify()  # one of them reads next (no epoch change)
            if self.dead or self._cv._async:
                self._park.notify()

    def _wait_blocking(self, epoch: int, until: float | None) -> None:
        """A blocking caller's wait (``Wait.block``) until the signal moves past ``epoch``, or
        ``until``, or one slice: with the read role when it is free, else as a follower."""
        sock = self._sock
        with self._cv.lock:
            if self._cv.epoch != epoch:
                return
            self._blocking_seen = time.monotonic()
            if self._reading or self.dead or sock is None:
                self._followers += 1
                try:
                    self._cv.wait(slice_until(until))
                finally:
                    self._followers -= 1
                return
            self._reading, self._reader_ident = True, get_ident()
        try:
            # The reply is often in already (the server answered while this thread wrote and
            # got here): read before polling, a system call saved.
            if not self._read_available(sock) or self._cv.epoch != epoch or self.dead:
                return
            end = time.monotonic() + MAX_SLICE
            if until is not None:
                end = min(end, until)
            while True:
                timeout = min(self._keepalive_step(), end - time.monotonic())
                if timeout <= 0 or not self._read_once(sock, timeout, epoch):
                    return
                if self._cv.epoch != epoch or self.dead:  # single reads: no lock needed
                    return
        finally:
            self._release_role()

    def _read_available(self, sock: socket.socket) -> bool:
        """Reads what the socket holds and applies it (the socket is readable).
        False once the connection is over (EOF or a failed read: it is torn down)."""
        try:
            # into the connection's buffer (a fresh 256 KiB bytes per read costs an mmap);
            # the socket is non-blocking (it has a timeout), so no poll before the read
            n = os.readv(self._fd, (self._rbuf,))
        except (socket.timeout, InterruptedError, BlockingIOError):
            return True
        except (OSError, ValueError) as e:
            self._teardown(None, f"read failed: {e}")
            return False
        if not n:
            self._teardown(None, "connection closed by the server")
            return False
        data: bytes | memoryview = self._rview[:n]
        self._last_recv = time.monotonic()
        if self.dead:
            return True  # no longer processing: read and discard
        try:
            if self._preface is not None:
                self._preface += data
                if wire.check_preface(self._preface) is None:
                    return True
                data, self._preface = bytes(self._preface[len(PREFACE):]), None
            self._decoder.feed(data)
            self._drain(self._decoder)
        except WireError as e:  # connection scope
            self._teardown(e.code, e.reason)
        except _ConnectionError as e:
            self._teardown(e.code, e.reason)
        return True

    def _keepalive_step(self) -> float:
        """Client keepalive (section 15), run by the reader between reads: while calls wait for
        frames and nothing has arrived for the interval, send PING; no ACK within the timeout
        means the connection is dead (its open calls *may have been processed*). Returns how
        long the reader may wait for input before the next step is due."""
        if self._keepalive is None or self.dead:
            return _POLL
        interval, timeout = self._keepalive
        now = time.monotonic()
        busy, sent = bool(self._streams), self._ping_sent  # single reads: no lock needed
        if sent is not None:
            if now - sent >= timeout:
                self.keepalive_failed = True
                self._teardown(None, f"keepalive timeout: no PING ACK within {timeout:g} s")
                return _POLL
            return min(_POLL, sent + timeout - now)
        if not busy:
            return _POLL
        if now - self._last_recv < interval:
            return min(_POLL, self._last_recv + interval - now)
        with self._cv.lock:
            self._ping_sent = now
            self._ping_data = int(now * 1e6).to_bytes(8, "big")
        self._write(wire.encode_frame(Ping(self._ping_data)))
        return min(_POLL, timeout)

    def _drain(self, decoder: FrameDecoder) -> None:
        """Handles every complete frame the decoder holds, under one hold of the lock, then
        writes the frames that are owed the server (PING ACK, WINDOW_UPDATE, RESET)."""
        while True:
            goaway: GoAway | None = None
            with self._cv.lock:
                self._pending = b""
                while not self.dead:
                    try:
                        frame = decoder.next_frame()
                    except WireError as e:
                        if e.scope == "connection":
                            raise
                        self._stream_wire_error(e)
                        continue
                    if frame is None:
                        break
                    if type(frame) is Data and self.handshaken:  # the common frame, directly
                        if frame.stream_id > self._highest:
                            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR,
                                                   f"frame on idle stream {frame.stream_id}")
                        self._on_data(self._streams.get(frame.stream_id), frame)
                        continue
                    self._dispatch(frame)
                    if type(frame) is GoAway and frame.error_code != ErrorCode.NO_ERROR:
                        goaway = frame
                        break
                out, self._pending = self._pending, b""
            self._write(out)
            if goaway is None:
                return
            if goaway.error_code == ErrorCode.ENHANCE_YOUR_CALM and "ping" in goaway.debug:
                self.pings_refused = True
            # Section 11.2: the server reported a connection error; we close too (no GOAWAY back).
            self._teardown(None, f"GOAWAY {ErrorCode.of(goaway.error_code).name}: {goaway.debug}")

    def _stream_wire_error(self, e: WireError) -> None:
        """A malformed frame on a stream (section 11.3); a connection error if the stream is idle
        or the frame is an OPEN (a client never receives OPEN). Lock held."""
        if e.frame_type is wire.FrameType.OPEN or e.stream_id > self._highest:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"{e.reason} (stream {e.stream_id})")
        stream = self._streams.get(e.stream_id)
        if stream is not None:  # on a closed stream nothing is sent
            self._stream_error(stream, e.code, e.reason, reset=True)

    def _stream_error(self, stream: _Stream, code: ErrorCode, reason: str, reset: bool) -> None:
        """Fails the call INTERNAL (RESOURCE_EXHAUSTED for MESSAGE_TOO_LARGE); lock held."""
        status = Status.RESOURCE_EXHAUSTED if code is ErrorCode.MESSAGE_TOO_LARGE else Status.INTERNAL
        self._close_stream(stream, ("fail", _Failure(RPCError(status, f"stream error {code.name}: {reason}"),
                                                     processed=True, retry_if_idempotent=False)))
        if reset:
            self._pending += wire.encode_frame(Reset(stream.id, code))

    def _dispatch(self, f: Frame) -> None:
        """Applies one frame to the connection state (sections 3.2, 6.3, 9, 13); lock held."""
        if not self.handshaken:
            if not isinstance(f, SettingsFrame):
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "first frame is not SETTINGS")
            self.peer = Settings().updated(f.settings)
            self._conn_send_window = self.peer.connection_window_size
            self.handshaken = True
            self._cv.notify_all()
            return
        t = type(f)
        if t is Data or t is Trailers or t is Headers:  # the frames of every call first
            if f.stream_id > self._highest:
                raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"frame on idle stream {f.stream_id}")
            stream = self._streams.get(f.stream_id)
            if t is Data:
                self._on_data(stream, f)  # type: ignore[arg-type]
            elif stream is None:
                return  # closed stream: HEADERS, TRAILERS are ignored
            elif t is Trailers:
                if stream.fragment is not None:  # section 7.3: no RESET, the stream is closed
                    self._stream_error(stream, ErrorCode.PROTOCOL_ERROR, "TRAILERS inside a message", False)
                else:
                    self._close_stream(stream, self._trailers_event(f))  # type: ignore[arg-type]
            elif stream.seen_first:
                self._stream_error(stream, ErrorCode.PROTOCOL_ERROR, "HEADERS not first", True)
            else:
                stream.seen_first = True
                stream.headers = _public(f.metadata)  # type: ignore[union-attr]
            return
        if isinstance(f, SettingsFrame):
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "second SETTINGS")
        if isinstance(f, Ping):
            if not f.ack:
                self._pending += wire.encode_frame(Ping(f.data, ack=True))
            elif f.data == self._ping_data:
                self._ping_sent = None
            return
        if isinstance(f, GoAway):
            self._on_goaway(f)
            return
        if isinstance(f, Open):
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "OPEN received by a client")
        if isinstance(f, Checkpoint) and not self.resumption_on:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "CHECKPOINT while resumption is off")
        if f.stream_id == 0:  # WINDOW_UPDATE for the connection
            assert isinstance(f, WindowUpdate)
            if self._conn_send_window + f.increment > MAX_WINDOW:
                raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "connection window above 2^31-1")
            self._conn_send_window += f.increment
            self._cv.notify_all()
            return
        if f.stream_id > self._highest:
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, f"frame on idle stream {f.stream_id}")
        stream = self._streams.get(f.stream_id)
        if isinstance(f, Data):
            self._on_data(stream, f)
            return
        if stream is None:
            return  # closed stream: HEADERS, TRAILERS, RESET, WINDOW_UPDATE are ignored
        if isinstance(f, WindowUpdate):
            if stream.send_window + f.increment > MAX_WINDOW:
                self._stream_error(stream, ErrorCode.FLOW_CONTROL_ERROR, "stream window above 2^31-1", True)
            else:
                stream.send_window += f.increment
                self._cv.notify_all()
        elif isinstance(f, Headers):
            if stream.seen_first:
                self._stream_error(stream, ErrorCode.PROTOCOL_ERROR, "HEADERS not first", True)
            else:
                stream.seen_first = True
                stream.headers = _public(f.metadata)
        elif isinstance(f, Trailers):
            if stream.fragment is not None:  # section 7.3: no RESET, the stream is closed
                self._stream_error(stream, ErrorCode.PROTOCOL_ERROR, "TRAILERS inside a message", False)
            else:
                self._close_stream(stream, self._trailers_event(f))
        elif isinstance(f, Checkpoint):
            stream.checkpoint = (stream.received, f.consumed, f.token)
        elif isinstance(f, Reset):
            code = ErrorCode.of(f.error_code)
            failure = _reset_failure(code, _expired(stream.deadline))
            if code is ErrorCode.REFUSED_STREAM:
                failure.refused_by = self
            self._close_stream(stream, ("fail", failure))

    @property
    def resumption_on(self) -> bool:
        """Both sides announced RESUMPTION (section 18.1)."""
        return bool(self.local.resumption and self.peer.resumption)

    def _trailers_event(self, f: Trailers) -> tuple[str, Any]:
        """TRAILERS as a stream event: the call's status, or, with ``baton-resumable`` and
        resumption on, the end of this stream at a checkpoint, to be continued (section 18.3)."""
        if self.resumption_on and any(name == "baton-resumable" for name, _ in f.metadata):
            error = RPCError(Status.UNAVAILABLE, f"the server ended the stream to be resumed elsewhere ({f.message})")
            return ("fail", _Failure(error, processed=True, retry_if_idempotent=False, resumable=True))
        return ("trailers", f)

    def _on_data(self, stream: _Stream | None, f: Data) -> None:
        n = len(f.data)
        if n > self._conn_recv_window:
            raise _ConnectionError(ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._conn_recv_window -= n
        if stream is None:  # closed stream: discarded, connection credit returned
            self._pending += self._consume(None, n)
            return
        if n > stream.recv_window:
            self._stream_error(stream, ErrorCode.FLOW_CONTROL_ERROR, "DATA beyond the stream window", True)
            self._pending += self._consume(None, n)
            return
        stream.recv_window -= n
        stream.seen_first = True
        if f.end_stream:
            self._stream_error(stream, ErrorCode.PROTOCOL_ERROR, "server DATA with END_STREAM", True)
            self._pending += self._consume(None, n)
            return
        size = (len(stream.fragment) if stream.fragment is not None else 0) + n
        if size > self.local.max_message_size:
            self._stream_error(stream, ErrorCode.MESSAGE_TOO_LARGE,
                               f"response message over {self.local.max_message_size} bytes", True)
            self._pending += self._consume(None, n)
            return
        if not f.end_message:
            if n:
                if stream.fragment is None:
                    stream.fragment = bytearray()
                stream.fragment += f.data
            self._pending += self._consume(stream, n)  # appended to an incomplete message
            return
        message = bytes(stream.fragment + f.data) if stream.fragment is not None else f.data
        stream.fragment = None
        stream.received += 1
        stream.events.append(("msg", (message, n)))  # credited when the caller takes it
        self._cv.notify_all()

    def _on_goaway(self, f: GoAway) -> None:
        """Section 13.1: no new streams; streams above last_stream_id were not processed."""
        self.draining = True
        self.goaway_last = min(self.goaway_last, f.last_stream_id)
        self.goaway_error = self.goaway_error or f.error_code
        code = ErrorCode.of(f.error_code)
        for s in list(self._streams.values()):
            if s.id > self.goaway_last:
                self._close_stream(s, ("fail", _not_processed(f"not processed: GOAWAY({self.goaway_last})")))
            elif f.error_code != ErrorCode.NO_ERROR:
                error = RPCError(Status.UNAVAILABLE, f"connection ended by GOAWAY {code.name}: {f.debug}")
                self._close_stream(s, ("fail", _Failure(error, processed=True)))
        self._cv.notify_all()


class _ConnectionError(Exception):
    """A connection error detected by the client's state rules (section 11.2)."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _send_all(sock: socket.socket, fd: int, data: bytes) -> None:
    """``sock.sendall(data)`` that first tries one plain write: a socket with a timeout polls
    before every send, a system call that a free socket buffer makes useless."""
    try:
        n = os.write(fd, data)
    except BlockingIOError:
        n = 0
    if n < len(data):
        sock.sendall(memoryview(data)[n:])


def _public(metadata: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Metadata for the application: reserved ``baton-`` names are not passed on (section 5)."""
    if not metadata:
        return ()
    return tuple((n, v) for n, v in metadata if not n.startswith("baton-"))


