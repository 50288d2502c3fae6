"""Blocking Baton/1 client: unary and server-streaming calls over one connection per endpoint.

Written from ``Protocol/PROTOCOL.md`` alone. Threads: each connection has one reader thread;
callers write their own frames (under a per-connection write lock) and wait on a per-connection
condition variable for what the reader delivers.

What a caller may rely on:

* Every failed call raises ``RPCError`` with a gRPC status code (section 12); invalid arguments
  (bad metadata name, reserved ``baton-`` name, empty method) raise ``ValueError`` before anything
  is sent.
* A call that the server provably did not process (connect or handshake failure, stream above a
  GOAWAY's last_stream_id, RESET REFUSED_STREAM) is retried transparently on the next endpoint,
  within the call's deadline, or at most ``max_retries`` times when it has none (section 14).
* A call that may have been processed (connection lost, TRAILERS UNAVAILABLE) is retried only if
  the caller passed ``idempotent=True`` and no response message was delivered yet; otherwise it
  fails with UNAVAILABLE (or its TRAILERS status).
* A timeout is sent to the server (``timeout_us``) and enforced locally: when it passes the call
  fails with DEADLINE_EXCEEDED and the stream is reset with CANCEL.
* Calls are thread-safe; one ``Client`` may be shared by many threads.
"""

from __future__ import annotations

import math
import random
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator, Sequence, TypeVar

from . import wire
from .errors import RPCError
from .wire import (MAX_STREAM_ID, MAX_WINDOW, PREFACE, Data, ErrorCode, Frame, FrameDecoder, GoAway,
                   Headers, Open, Ping, Reset, Settings, SettingsFrame, Status, Trailers, WindowUpdate,
                   WireError)

__all__ = ["Client", "Endpoint"]

Endpoint = tuple[str, int]
T = TypeVar("T")

LINGER = 2.0  # section 16.2: longest wait for the peer's FIN after sending ours
WRITE_TIMEOUT = 10.0  # a socket write blocked this long means the connection is dead
BACKOFF_INITIAL, BACKOFF_MAX = 0.05, 2.0  # reconnect backoff per endpoint, doubled per failure
_POLL = 0.5  # longest single wait on a condition or on select, so flags are rechecked


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _wait_slice(deadline: float | None) -> float:
    rem = _remaining(deadline)
    return _POLL if rem is None else max(0.0, min(rem, _POLL))


class _Failure(Exception):
    """An attempt ended without a usable result. ``processed`` False means *provably not
    processed* (retry anywhere); True means *may have been processed* (retry only if idempotent
    and ``retry_if_idempotent``); the caller sees ``error`` when no retry happens."""

    def __init__(self, error: RPCError, processed: bool, retry_if_idempotent: bool = True) -> None:
        super().__init__(str(error))
        self.error = error
        self.processed = processed
        self.retry_if_idempotent = retry_if_idempotent
        self.refused_by: _Connection | None = None  # RESET REFUSED_STREAM on this connection...
        self.ended_mark = 0  # ...when it had ended this many streams

    def retryable(self, idempotent: bool) -> bool:
        return not self.processed or (idempotent and self.retry_if_idempotent)


def _not_processed(message: str) -> _Failure:
    return _Failure(RPCError(Status.UNAVAILABLE, message), processed=False)


_RESET_STATUS = {  # section 12.2: RESET received from the server
    ErrorCode.CANCEL: Status.CANCELLED,
    ErrorCode.MESSAGE_TOO_LARGE: Status.RESOURCE_EXHAUSTED,
    ErrorCode.ENHANCE_YOUR_CALM: Status.RESOURCE_EXHAUSTED,
}


class _Stream:
    """One call's stream on one connection. Mutable fields are guarded by the connection's lock."""

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


class _Connection:
    """One TCP connection to one endpoint: handshake, stream bookkeeping, flow control, GOAWAY."""

    def __init__(self, address: Endpoint, local: Settings,
                 on_closed: Callable[["_Connection"], None]) -> None:
        self.address = address
        self.local = local
        self.peer = Settings()
        self._on_closed = on_closed
        self._sock: socket.socket | None = None
        self._cv = threading.Condition()
        self._wlock = threading.Lock()
        self._reader: threading.Thread | None = None
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
        self.streams_ended = 0

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
        self._sock = sock
        try:
            sock.sendall(PREFACE + wire.encode_frame(SettingsFrame(self.local.pairs())))
        except OSError as e:
            sock.close()
            self._on_closed(self)
            raise _not_processed(f"handshake with {self.address[0]}:{self.address[1]} failed: {e}") from None
        self._reader = threading.Thread(target=self._read_loop, daemon=True,
                                        name=f"baton-reader-{self.address[0]}:{self.address[1]}")
        self._reader.start()
        with self._cv:
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
        """True while new streams may be opened here."""
        return self.handshaken and not self.dead and not self.draining

    def close(self) -> None:
        """Fails open calls with CANCELLED (RESET CANCEL), sends GOAWAY(0, NO_ERROR) and closes
        as in section 13.4 (FIN, then the reader lingers for the server's FIN)."""
        with self._cv:
            if self.dead:
                return
            self.draining = True
            open_streams = list(self._streams.values())
            for s in open_streams:
                self._close_stream(s, ("fail", _Failure(RPCError(Status.CANCELLED, "client closed"),
                                                        processed=True, retry_if_idempotent=False)))
        frames = b"".join(wire.encode_frame(Reset(s.id, ErrorCode.CANCEL)) for s in open_streams)
        self._teardown(ErrorCode.NO_ERROR, "client closed", prefix=frames)

    def wait_stream_end(self, mark: int, timeout: float) -> None:
        """Waits until more than ``mark`` streams have ended here, the connection stops taking
        streams, or ``timeout`` passes (section 14: retry on the same connection after
        REFUSED_STREAM only once another of its streams has ended)."""
        end = time.monotonic() + timeout
        with self._cv:
            while self.streams_ended <= mark and self.usable():
                left = end - time.monotonic()
                if left <= 0:
                    return
                self._cv.wait(min(left, _POLL))

    def join(self, timeout: float) -> None:
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout)

    def _teardown(self, code: ErrorCode | None, reason: str, prefix: bytes = b"") -> None:
        """Ends the connection: fails its streams (not processed when provably so, else UNAVAILABLE),
        sends ``prefix`` and GOAWAY(0, code) unless ``code`` is None, then our FIN; the reader
        thread lingers for the peer's FIN and closes the socket."""
        with self._cv:
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
                sock.sendall(data)
            return True
        except OSError as e:
            if teardown:
                self._teardown(None, f"write failed: {e}")
            return False

    # --- streams (caller threads) ------------------------------------------------------------

    def open_stream(self, method: str, metadata: tuple[tuple[str, str], ...], deadline: float | None,
                    end_stream: bool) -> _Stream:
        """Sends OPEN on a new stream. Waits for a free slot under the server's
        MAX_CONCURRENT_STREAMS. Raises ``_Failure`` (not processed) if the connection cannot take
        it, ``RPCError`` for DEADLINE_EXCEEDED or RESOURCE_EXHAUSTED (nothing sent)."""
        with self._cv:
            while True:
                self._check_open_allowed()
                if self._slots < self.peer.max_concurrent_streams:
                    self._slots += 1
                    break
                rem = _remaining(deadline)
                if rem is not None and rem <= 0:
                    raise RPCError(Status.DEADLINE_EXCEEDED, "deadline passed waiting for a stream slot")
                self._cv.wait(_wait_slice(deadline))
        registered = False
        try:
            with self._wlock:
                with self._cv:
                    self._check_open_allowed()
                    rem = _remaining(deadline)
                    if rem is not None and rem <= 0:
                        raise RPCError(Status.DEADLINE_EXCEEDED, "deadline passed before the call was sent")
                    timeout_us = 0 if rem is None else max(1, math.ceil(rem * 1_000_000))
                    sid = self._next_id
                    frame = wire.encode_frame(Open(sid, method, timeout_us, metadata, end_stream))
                    block = len(wire.encode_metadata_block(metadata))
                    if block > self.peer.max_metadata_size:
                        raise RPCError(Status.RESOURCE_EXHAUSTED,
                                       f"metadata block of {block} bytes > server's MAX_METADATA_SIZE "
                                       f"{self.peer.max_metadata_size}")
                    if len(frame) - wire.HEADER_LEN > self.peer.max_frame_size:
                        raise RPCError(Status.RESOURCE_EXHAUSTED,
                                       f"OPEN of {len(frame) - wire.HEADER_LEN} bytes > server's "
                                       f"MAX_FRAME_SIZE {self.peer.max_frame_size}")
                    self._next_id += 2
                    self._highest = sid
                    stream = _Stream(sid, self.peer.initial_window_size, self.local.initial_window_size)
                    stream.open_written = True  # from here on the server may see it
                    self._streams[sid] = stream
                    registered = True
                assert self._sock is not None
                try:
                    self._sock.sendall(frame)
                except OSError as e:
                    # sendall did not hand the whole frame to the kernel: the server cannot have
                    # read a complete OPEN, so the call is provably not processed.
                    with self._cv:
                        if not stream.closed:
                            self._close_stream(stream, ("fail", _not_processed(str(e))))
                    self._teardown(None, f"write failed: {e}")
                    raise _not_processed(f"OPEN not written: {e}") from None
            return stream
        finally:
            if not registered:
                with self._cv:
                    self._slots -= 1
                    self._cv.notify_all()

    def _check_open_allowed(self) -> None:
        if self.dead or self.draining:
            raise _not_processed(f"connection to {self.address[0]}:{self.address[1]} is "
                                 + ("closed" if self.dead else "draining (GOAWAY)"))
        if self._next_id > MAX_STREAM_ID:  # section 6.1: continue on a new connection
            self.draining = self._close_when_idle = True
            raise _not_processed("stream ids used up")

    def send_message(self, stream: _Stream, message: bytes, end_stream: bool, deadline: float | None) -> None:
        """Sends one message as DATA frames within MAX_FRAME_SIZE and both send windows (7.3, 9).

        Returns early, without error, if the stream closes (TRAILERS or RESET: the outcome is
        then in the stream's events), the connection dies or the deadline passes.
        """
        view = memoryview(message)
        offset = 0
        while True:
            with self._cv:
                while True:
                    if stream.closed or self.dead:
                        return
                    left = len(view) - offset
                    n = min(left, self.peer.max_frame_size, stream.send_window, self._conn_send_window)
                    if n > 0 or left == 0:
                        break
                    rem = _remaining(deadline)
                    if rem is not None and rem <= 0:
                        return
                    self._cv.wait(_wait_slice(deadline))
                n = max(n, 0)
                stream.send_window -= n
                self._conn_send_window -= n
            last = offset + n == len(view)
            frame = Data(stream.id, bytes(view[offset:offset + n]), end_stream and last, last)
            if not self._write(wire.encode_frame(frame)):
                return
            offset += n
            if last:
                return

    def next_event(self, stream: _Stream, deadline: float | None) -> tuple[str, Any] | None:
        """The stream's next event, or None once the deadline has passed."""
        with self._cv:
            while not stream.events:
                rem = _remaining(deadline)
                if rem is not None and rem <= 0:
                    return None
                self._cv.wait(_wait_slice(deadline))
            kind, value = stream.events.popleft()
            updates = b""
            if kind == "msg":
                updates = self._consume(stream, value[1])
                value = value[0]
        self._write(updates)
        return kind, value

    def cancel(self, stream: _Stream) -> None:
        """Sends RESET CANCEL if the stream is still open and closes it (deadline, abandon)."""
        with self._cv:
            if stream.closed:
                return
            self._close_stream(stream, None)
        self._write(wire.encode_frame(Reset(stream.id, ErrorCode.CANCEL)))

    def finish(self, stream: _Stream) -> None:
        """Ends the caller's use of a stream: resets it if still open and returns the connection
        credit of response bytes never taken (they count as discarded, section 9.3)."""
        self.cancel(stream)
        with self._cv:
            credit = sum(v[1] for k, v in stream.events if k == "msg")
            stream.events.clear()
            updates = self._consume(stream, credit) if credit else b""
        self._write(updates)

    # --- bookkeeping (connection lock held) --------------------------------------------------

    def _close_stream(self, stream: _Stream, event: tuple[str, Any] | None) -> None:
        if stream.closed:
            return
        stream.closed = True
        if event is not None:
            stream.events.append(event)
        if self._streams.pop(stream.id, None) is not None:
            self._slots -= 1
        self.streams_ended += 1
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

    # --- reading (reader thread) -------------------------------------------------------------

    def _read_loop(self) -> None:
        """Reader thread: preface, then frames; after the connection ends it keeps reading and
        discarding until the server's FIN or the linger timeout, then closes the socket (13.4)."""
        sock = self._sock
        assert sock is not None
        decoder = FrameDecoder(self.local.max_frame_size, self.local.max_metadata_size)
        preface: bytearray | None = bytearray()
        selector = selectors.DefaultSelector()
        selector.register(sock, selectors.EVENT_READ)
        try:
            while True:
                with self._cv:
                    closing_since = self._closing_since
                if closing_since is not None and time.monotonic() - closing_since > LINGER:
                    break
                try:
                    data = sock.recv(262144) if selector.select(_POLL) else None
                except (socket.timeout, InterruptedError, BlockingIOError):
                    continue
                except (OSError, ValueError) as e:
                    self._teardown(None, f"read failed: {e}")
                    break
                if data is None:
                    continue
                if not data:
                    self._teardown(None, "connection closed by the server")
                    break
                if self.dead:
                    continue  # no longer processing: read and discard
                try:
                    if preface is not None:
                        preface += data
                        if wire.check_preface(preface) is None:
                            continue
                        data, preface = bytes(preface[len(PREFACE):]), None
                    decoder.feed(data)
                    self._drain(decoder)
                except WireError as e:  # connection scope
                    self._teardown(e.code, e.reason)
                except _ConnectionError as e:
                    self._teardown(e.code, e.reason)
        finally:
            self._teardown(None, "connection closed")
            selector.close()
            sock.close()
            self._on_closed(self)

    def _drain(self, decoder: FrameDecoder) -> None:
        """Handles every complete frame the decoder holds."""
        while not self.dead:
            try:
                frame = decoder.next_frame()
            except WireError as e:
                if e.scope == "connection":
                    raise
                self._locked(lambda: self._stream_wire_error(e))
                continue
            if frame is None:
                return
            self._locked(lambda: self._dispatch(frame))
            if isinstance(frame, GoAway) and frame.error_code != ErrorCode.NO_ERROR:
                # Section 11.2: the server reported a connection error; we close too (no GOAWAY back).
                self._teardown(None, f"GOAWAY {ErrorCode.of(frame.error_code).name}: {frame.debug}")

    def _locked(self, step: Callable[[], None]) -> None:
        """Runs ``step`` under the lock, then writes the frames it queued in ``_pending``."""
        with self._cv:
            self._pending = b""
            step()
            out, self._pending = self._pending, b""
        self._write(out)

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
        if isinstance(f, SettingsFrame):
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "second SETTINGS")
        if isinstance(f, Ping):
            if not f.ack:
                self._pending += wire.encode_frame(Ping(f.data, ack=True))
            return
        if isinstance(f, GoAway):
            self._on_goaway(f)
            return
        if isinstance(f, Open):
            raise _ConnectionError(ErrorCode.PROTOCOL_ERROR, "OPEN received by a client")
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
                self._close_stream(stream, ("trailers", f))
        elif isinstance(f, Reset):
            code = ErrorCode.of(f.error_code)
            if code is ErrorCode.REFUSED_STREAM:
                failure = _not_processed("stream refused by the server (REFUSED_STREAM)")
                failure.refused_by, failure.ended_mark = self, self.streams_ended + 1
            else:
                status = _RESET_STATUS.get(code, Status.INTERNAL)
                failure = _Failure(RPCError(status, f"stream reset by the server ({code.name})"),
                                   processed=True, retry_if_idempotent=False)
            self._close_stream(stream, ("fail", failure))

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


def _public(metadata: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Metadata for the application: reserved ``baton-`` names are not passed on (section 5)."""
    return tuple((n, v) for n, v in metadata if not n.startswith("baton-"))


class _EndpointState:
    """An endpoint's current connection and reconnect backoff (guarded by ``lock``)."""

    def __init__(self, address: Endpoint) -> None:
        self.address = address
        self.lock = threading.Lock()  # serialises connecting
        self.conn: _Connection | None = None
        self.failures = 0
        self.retry_at = 0.0


class Client:
    """A Baton client over a fixed list of ``(host, port)`` endpoints.

    Connections are opened lazily, one per endpoint; calls go round-robin over the endpoints,
    starting with the first, skipping those that are draining (GOAWAY received) or backing off
    after a failed connect (50 ms doubling to 2 s, with jitter).
    ``connect_timeout`` bounds the TCP connect plus the preface/SETTINGS handshake.
    ``max_retries`` caps transparent retries of a call without a deadline (never below the number
    of endpoints); calls with a deadline retry as long as the deadline allows.
    """

    def __init__(self, endpoints: list[Endpoint], connect_timeout: float = 5.0, *,
                 max_retries: int = 25, max_message_size: int = 4194304) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is required")
        self._endpoints = [_EndpointState((h, int(p))) for h, p in endpoints]
        self._connect_timeout = connect_timeout
        self._max_retries = max(max_retries, len(endpoints))
        self._local = Settings(max_message_size=max_message_size)
        self._lock = threading.Lock()
        self._rr = 0
        self._closed = False
        self._conns: set[_Connection] = set()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes every connection; running calls fail with CANCELLED, later calls too.
        Waits up to the linger time (2 s) for the servers to close their side."""
        with self._lock:
            self._closed = True
            conns = list(self._conns)
        for c in conns:
            c.close()
        end = time.monotonic() + LINGER + 0.5
        for c in conns:
            c.join(max(0.0, end - time.monotonic()))

    # --- public calls ------------------------------------------------------------------------

    def unary(self, method: str, request: bytes, timeout: float | None = None,
              metadata: dict[str, str] | None = None, idempotent: bool = False) -> bytes:
        """Calls a unary method and returns its response message.

        ``timeout`` in seconds (None: no deadline). ``metadata`` names are lower-cased and must
        then be 1..65535 bytes of ``a-z 0-9 - _ .`` and not start with ``baton-`` (``ValueError``
        otherwise). ``idempotent=True`` allows retrying a call that may have been processed.
        Raises ``RPCError``.
        """
        md = self._prepare(method, metadata)
        deadline = None if timeout is None else time.monotonic() + timeout
        body = bytes(request)
        return self._with_retries(deadline, idempotent,
                                  lambda conn: self._unary_attempt(conn, method, md, body, deadline))

    def server_streaming(self, method: str, request: bytes, timeout: float | None = None,
                         metadata: dict[str, str] | None = None,
                         idempotent: bool = False) -> Iterator[bytes]:
        """Calls a server-streaming method; iterate the result for the response messages.

        Argument errors raise ``ValueError`` here; call failures raise ``RPCError`` from the
        iteration. The timeout covers the whole call, iteration included. Retries happen only
        before the first message is yielded. Closing the iterator early cancels the call
        (RESET CANCEL).
        """
        md = self._prepare(method, metadata)
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._stream_messages(method, md, bytes(request), deadline, idempotent)

    # --- call machinery ----------------------------------------------------------------------

    @staticmethod
    def _prepare(method: str, metadata: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
        raw = method.encode("utf-8")
        if not 1 <= len(raw) <= 0xFFFF:
            raise ValueError("method must be 1 to 65535 bytes of UTF-8")
        pairs = []
        for name, value in (metadata or {}).items():
            name = name.lower()
            wire.validate_metadata_name(name)
            if name.startswith("baton-"):
                raise ValueError(f"metadata name {name!r}: names starting with 'baton-' are reserved")
            if len(value.encode("utf-8")) > 0xFFFF:
                raise ValueError(f"metadata value of {name!r} is longer than 65535 bytes")
            pairs.append((name, value))
        return tuple(pairs)

    def _with_retries(self, deadline: float | None, idempotent: bool,
                      attempt: Callable[[_Connection], T]) -> T:
        retries = 0
        last: _Failure | None = None
        while True:
            try:
                return attempt(self._pick(deadline, last, retries))
            except _Failure as f:
                last = f
                retries += 1
                if not f.retryable(idempotent) or (deadline is None and retries > self._max_retries):
                    raise f.error from None

    def _unary_attempt(self, conn: _Connection, method: str, md: tuple[tuple[str, str], ...],
                       request: bytes, deadline: float | None) -> bytes:
        if len(request) > conn.peer.max_message_size:
            raise RPCError(Status.RESOURCE_EXHAUSTED, f"request of {len(request)} bytes > server's "
                           f"MAX_MESSAGE_SIZE {conn.peer.max_message_size}")
        stream = conn.open_stream(method, md, deadline, end_stream=False)
        try:
            conn.send_message(stream, request, True, deadline)
            messages: list[bytes] = []
            while True:
                event = conn.next_event(stream, deadline)
                if event is None:
                    conn.cancel(stream)
                    raise RPCError(Status.DEADLINE_EXCEEDED, "deadline exceeded")
                kind, value = event
                if kind == "msg":
                    messages.append(value)
                    if len(messages) > 1:
                        conn.cancel(stream)
                        raise RPCError(Status.INTERNAL, "several response messages for a unary call")
                elif kind == "fail":
                    raise value
                elif kind == "trailers":
                    _raise_for_trailers(value)
                    if len(messages) != 1:
                        raise RPCError(Status.INTERNAL, "no response message for a unary call")
                    return messages[0]
        finally:
            conn.finish(stream)

    def _stream_messages(self, method: str, md: tuple[tuple[str, str], ...], request: bytes,
                         deadline: float | None, idempotent: bool) -> Iterator[bytes]:
        retries = 0
        last: _Failure | None = None
        delivered = False
        while True:
            try:
                conn = self._pick(deadline, last, retries)
                if len(request) > conn.peer.max_message_size:
                    raise RPCError(Status.RESOURCE_EXHAUSTED, f"request of {len(request)} bytes > "
                                   f"server's MAX_MESSAGE_SIZE {conn.peer.max_message_size}")
                stream = conn.open_stream(method, md, deadline, end_stream=False)
                try:
                    conn.send_message(stream, request, True, deadline)
                    while True:
                        event = conn.next_event(stream, deadline)
                        if event is None:
                            conn.cancel(stream)
                            raise RPCError(Status.DEADLINE_EXCEEDED, "deadline exceeded")
                        kind, value = event
                        if kind == "msg":
                            delivered = True
                            yield value
                        elif kind == "fail":
                            raise value
                        elif kind == "trailers":
                            _raise_for_trailers(value)
                            return
                finally:
                    conn.finish(stream)
            except _Failure as f:
                last = f
                retries += 1
                if (delivered or not f.retryable(idempotent)
                        or (deadline is None and retries > self._max_retries)):
                    raise f.error from None

    def _pick(self, deadline: float | None, last: _Failure | None, attempt: int = 0) -> _Connection:
        """A usable connection, round-robin; connects lazily, waits out backoff within the
        deadline. Raises ``_Failure`` (not processed) when connecting fails, ``RPCError`` when
        the deadline leaves no time (UNAVAILABLE if an earlier attempt failed, else
        DEADLINE_EXCEEDED) or the client is closed (CANCELLED)."""
        while True:
            with self._lock:
                if self._closed:
                    raise RPCError(Status.CANCELLED, "client is closed")
                n = len(self._endpoints)
                order = [self._endpoints[(self._rr + i) % n] for i in range(n)]
                self._rr = (self._rr + 1) % n
            now = time.monotonic()
            rem = _remaining(deadline)
            if rem is not None and rem <= 0:
                if last is not None:
                    raise last.error
                raise RPCError(Status.DEADLINE_EXCEEDED, "deadline exceeded")
            # round-robin over endpoints with a usable connection or none (connect lazily);
            # endpoints whose connection is draining only if there is nothing else
            usable = [ep for ep in order if (ep.conn is not None and ep.conn.usable())
                      or ((ep.conn is None or ep.conn.dead) and ep.retry_at <= now)]
            draining = [ep for ep in order if ep not in usable and ep.retry_at <= now]
            refused = last.refused_by if last is not None else None
            if refused is not None:  # after REFUSED_STREAM, prefer another connection
                usable.sort(key=lambda ep: ep.conn is refused)
            choice = (usable or draining or [None])[0]
            if choice is None:
                wake = min(ep.retry_at for ep in order)
                if deadline is not None and wake >= deadline:
                    raise (last.error if last is not None
                           else RPCError(Status.UNAVAILABLE, "no endpoint reachable before the deadline"))
                time.sleep(max(0.0, min(wake - now, _POLL)))
                continue
            conn = self._connection(choice, deadline)
            if last is not None and conn is refused:
                # The only choice is the connection that refused: wait for one of its streams to
                # end, but not forever (it may have none): a growing pause bounded by the deadline.
                pause = min(0.01 * 2 ** min(attempt, 6), 0.5)
                rem = _remaining(deadline)
                conn.wait_stream_end(last.ended_mark, pause if rem is None else max(0.0, min(pause, rem)))
                if deadline is not None and time.monotonic() >= deadline:
                    raise last.error
            return conn

    def _connection(self, ep: _EndpointState, deadline: float | None) -> _Connection:
        rem = _remaining(deadline)
        if not ep.lock.acquire(timeout=-1 if rem is None else max(0.0, rem)):
            raise RPCError(Status.DEADLINE_EXCEEDED, "deadline exceeded while connecting")
        try:
            if ep.conn is not None and ep.conn.usable():
                return ep.conn
            timeout = self._connect_timeout if rem is None else min(self._connect_timeout, max(rem, 0.0))
            conn = _Connection(ep.address, self._local, self._forget)
            with self._lock:
                if self._closed:
                    raise RPCError(Status.CANCELLED, "client is closed")
                self._conns.add(conn)
            try:
                conn.connect(timeout)
            except _Failure:
                ep.failures += 1
                self._back_off(ep)
                raise
            ep.failures, ep.retry_at = 0, 0.0
            ep.conn = conn
            return conn
        finally:
            ep.lock.release()

    def _forget(self, conn: _Connection) -> None:
        """A connection has ended. One ended by a GOAWAY with an error code (for example the
        server's connection limit, ENHANCE_YOUR_CALM) makes its endpoint back off like a failed
        connect, so that an overloaded server is not reconnected to at once."""
        with self._lock:
            self._conns.discard(conn)
        for ep in self._endpoints:
            if ep.conn is conn:
                ep.conn = None
            if ep.address == conn.address and conn.goaway_error:
                ep.failures += 1
                self._back_off(ep)

    @staticmethod
    def _back_off(ep: _EndpointState) -> None:
        backoff = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** max(ep.failures - 1, 0))
        ep.retry_at = time.monotonic() + backoff * random.uniform(0.8, 1.2)


def _raise_for_trailers(t: Trailers) -> None:
    """Raises for a non-OK TRAILERS: UNAVAILABLE may be retried if idempotent (section 12.1)."""
    status = Status.of(t.status)
    if status is Status.OK:
        return
    error = RPCError(status, t.message, _public(t.metadata))
    if status is Status.UNAVAILABLE:
        raise _Failure(error, processed=True)
    raise error
