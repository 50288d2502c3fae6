"""One call of any shape, across its attempts: replay, retries, shape rules, outcome.

The blocking ``Call`` and the asyncio ``AsyncCall`` both drive a ``CallCore``; every method here
that can wait is a generator (see ``_drive``).

Rules (PROTOCOL.md sections 7, 12 and 14, and the Swift client's choices):

* Every request message is kept (up to 1 MiB in total) until the first response message
  arrives. An attempt that the server provably did not process (refused, above a GOAWAY's last
  id, never written) is replaced by a new one on another connection, which sends the kept
  messages again in order; the application's reader and writer just carry on. Such retries are
  free (unlimited within the deadline; at most ``max_retries`` without one).
* An attempt that may have been processed (connection lost, GOAWAY with an error code,
  keepalive timeout) is retried only for ``idempotent=True`` calls, before any response message
  was delivered, and only if the client's retry budget allows. TRAILERS are the server's answer
  and are never retried, not even UNAVAILABLE.
* Unary and client-streaming calls get exactly one response message: a second one fails the call
  INTERNAL (RESET CANCEL), and TRAILERS OK without one is INTERNAL.
* A write after the server has ended the call is dropped and reports False: the call's outcome is
  the server's status, read from the response side.
"""

from __future__ import annotations

import base64
import enum
import threading
from typing import Any, NoReturn

from . import wire
from ._connection import _Connection, _Failure, _public, _Stream
from ._drive import Gen, Interrupt, Signal, Wait
from ._pool import PickState, Pool
from .errors import RPCError
from .wire import Status

_STATUS = {s.value: s for s in Status}
MAX_REPLAY_BYTES = 1 << 20  # request bytes kept per call for replay (as the Swift client)

Metadata = tuple[tuple[str, str], ...]


class Shape(enum.Enum):
    UNARY = "unary"
    CLIENT_STREAMING = "client_streaming"
    SERVER_STREAMING = "server_streaming"
    BIDIRECTIONAL = "bidirectional"

    @property
    def single_response(self) -> bool:
        return self in (Shape.UNARY, Shape.CLIENT_STREAMING)


class _Attempt:
    __slots__ = ("conn", "stream", "sent", "replaced")

    def __init__(self, conn: _Connection, stream: _Stream, sent: int) -> None:
        self.conn, self.stream, self.sent, self.replaced = conn, stream, sent, False

    def is_replaced(self) -> bool:
        return self.replaced


class CallCore(Interrupt):
    """State of one call. ``signal`` is its lock; the generators are safe to run from one
    writer and one reader thread (or task) at a time."""

    # Initial values of the call's state, as class attributes: a call sets only what changes.
    replay_bytes = 0
    sent_total = 0  # request messages the application wrote
    half_close = False  # the application finished writing
    attempt: _Attempt | None = None
    opening = False
    started = False
    received = 0  # response messages delivered to the application
    headers: Metadata | None = None
    trailers: Metadata | None = None
    code: Status | None = None  # set once the call has ended
    details = ""
    outcome: RPCError | None = None  # the error the call ended with
    cancelled: RPCError | None = None
    server_ended = False  # TRAILERS received: the server's status is the outcome
    response: bytes | None = None  # what result() returned
    # resumable streams (section 18), server-streaming calls
    request: bytes | None = None  # the one request: sent again on each resumption
    resumed = 0  # times the stream moved to a new stream from a checkpoint
    carried: tuple[int, int, bytes] | None = None  # the checkpoint the current stream follows
    skip = 0  # the current stream's first messages the application already has
    taken = 0  # messages taken from the current stream (dropped duplicates included)

    def __init__(self, pool: Pool, method: str, metadata: Metadata, shape: Shape,
                 deadline: float | None, idempotent: bool, wait_for_ready: bool,
                 max_retries: int, counted: bool = False) -> None:
        self.waiting_on = None
        self.pool, self.method, self.metadata, self.shape = pool, method, metadata, shape
        self.single_response = shape.single_response
        self.deadline, self.idempotent, self.max_retries = deadline, idempotent, max_retries
        self.pick = PickState(deadline, wait_for_ready)
        self.signal = Signal()
        self.replay: list[bytes] | None = []
        if not counted:  # else the caller has counted it for the retry budget
            with pool.signal.lock:
                pool.budget.deposit()

    # --- Interrupt ----------------------------------------------------------------------------

    def error(self) -> BaseException | None:
        return self.cancelled

    def abort(self) -> None:
        self.cancel("the caller stopped waiting (task cancelled or interrupted)")

    @property
    def done(self) -> bool:
        return self.code is not None

    def preload(self, request: bytes) -> None:
        """Unary and server-streaming calls: the one request, and the end of the requests. It is
        kept for replay whatever its size (the caller holds these bytes anyway)."""
        self.replay, self.replay_bytes, self.sent_total, self.half_close = [request], len(request), 1, True
        self.request = request

    def _ended(self) -> bool:
        """For a write on an ended call: False if the server ended it (its status is read from
        the response side); raises the call's error if the client ended it."""
        if self.server_ended or self.outcome is None:
            return False
        raise self.outcome

    # --- application operations (generators) -------------------------------------------------

    def send(self, message: bytes) -> Gen[bool]:
        """Writes one request message; False if the call has already ended (the message is
        dropped: the outcome is read from the response side)."""
        with self.signal.lock:
            if self.half_close:
                raise ValueError("no more request messages: done_writing() was called, or the call "
                                 "takes one request (unary, server-streaming)")
            if self.done:
                return self._ended()
            index = self.sent_total
            self.sent_total += 1
            if self.replay is not None:
                self.replay_bytes += len(message)
                if self.replay_bytes > MAX_REPLAY_BYTES and self.started and not self.opening:
                    self.replay = None  # too much to keep: this call can no longer be replayed
                else:
                    self.replay.append(message)
        while True:
            try:
                att = yield from self._ensure_attempt()
            except RPCError:
                with self.signal.lock:
                    return self._ended()
            with self.signal.lock:
                if att.sent > index:
                    return True  # the attempt's opening sent it (replay)
            if len(message) > att.conn.peer.max_message_size:
                self._fail(RPCError(Status.RESOURCE_EXHAUSTED, f"request message of {len(message)} bytes > "
                                    f"server's MAX_MESSAGE_SIZE {att.conn.peer.max_message_size}"))
            try:
                ok = yield from att.conn.send_message(att.stream, message, False, self.deadline)
            except RPCError as e:
                self._fail(e)
            with self.signal.lock:
                att.sent = max(att.sent, index + 1)
            if ok:
                return True
            if not (yield from self._after_closed(att)):
                return False

    def done_writing(self) -> Gen[None]:
        """Half-closes the request side (no-op if already done or the call has ended)."""
        with self.signal.lock:
            if self.half_close or self.done:
                self.half_close = True
                return
            self.half_close = True
        try:
            att = yield from self._ensure_attempt()
        except RPCError:
            return  # reported by the response side
        att.conn.send_end(att.stream)

    def receive(self) -> Gen[bytes | None]:
        """The next response message, or None once the call ended OK. Raises ``RPCError``."""
        while True:
            with self.signal.lock:
                if self.outcome is not None:
                    raise self.outcome
                if self.code is Status.OK:
                    return None
            att = yield from self._ensure_attempt()
            event = yield from att.conn.next_event(att.stream, self.deadline, att.is_replaced)
            if event is None:
                self._fail(RPCError(Status.DEADLINE_EXCEEDED, "deadline exceeded"))
            kind, value = event
            if kind == "abandoned":
                continue
            if kind == "msg":
                with self.signal.lock:
                    self.taken += 1
                    if self.taken <= self.skip:
                        continue  # a resumed stream repeats what followed its checkpoint
                    self.received += 1
                    n = self.received
                    self.replay = None  # the server has processed the call: no more retries
                    self.headers = att.stream.headers
                if self.single_response:
                    if n > 1:
                        self._fail(RPCError(Status.INTERNAL,
                                            f"a second response message on a {self.shape.value} call"))
                    trailers = att.conn.take_trailers(att.stream)
                    if trailers is not None:  # already here (the usual case): the call ends now
                        try:
                            self._end(att, trailers)
                        except RPCError:
                            pass  # recorded: the next receive() raises it
                return value  # type: ignore[no-any-return]
            if kind == "trailers":
                self._end(att, value)
                return None
            assert kind == "fail"
            if self._resume(att, value):
                continue
            if not self._replace(att, value):
                self._fail(value.error)

    def _end(self, att: _Attempt, trailers: Any) -> None:
        """The call's TRAILERS: records its outcome; raises it if it is not OK."""
        status = _STATUS.get(trailers.status)
        if status is None:
            status = Status.of(trailers.status)
        with self.signal.lock:
            self.server_ended = True
            self.headers = att.stream.headers
            self.trailers = _public(trailers.metadata)
            if self.attempt is att:
                self.attempt = None
        att.conn.finish(att.stream)  # closed by the TRAILERS: this only tidies up
        if status is not Status.OK:
            self._fail(RPCError(status, trailers.message, self.trailers))
        if self.single_response and self.received == 0:
            self._fail(RPCError(Status.INTERNAL, f"status OK without a response message on a "
                                f"{self.shape.value} call"))
        with self.signal.lock:
            if self.code is None:
                self.code, self.details = Status.OK, trailers.message
            self.signal.notify_all()
            if self.outcome is not None:  # cancelled meanwhile
                raise self.outcome

    def result(self) -> Gen[bytes]:
        """The single response of a unary or client-streaming call, once the call ended OK
        (again on later calls)."""
        if self.response is None:
            message = yield from self.receive()
            if message is None:  # the response was already taken by read()
                raise RuntimeError("the response was already taken with read() or iteration")
            rest = yield from self.receive()
            assert rest is None  # receive() raises INTERNAL for a second message
            self.response = message
        return self.response

    def cancel(self, reason: str = "cancelled by the application") -> bool:
        """Ends the call CANCELLED (RESET CANCEL if its stream is open); False if it had ended."""
        with self.signal.lock:
            if self.done:
                return False
            error = RPCError(Status.CANCELLED, reason)
            self.cancelled = self.outcome = error
            self.code, self.details = error.status, reason
            att, self.attempt = self.attempt, None
            self.signal.notify_all()
        if att is not None:
            att.conn.finish(att.stream)
        waiting = self.waiting_on
        if waiting is not None:
            waiting.poke()
        return True

    # --- attempts ------------------------------------------------------------------------------

    def _ensure_attempt(self) -> Gen[_Attempt]:
        while True:
            with self.signal.lock:
                if self.outcome is not None:
                    raise self.outcome
                if self.attempt is not None and not self.opening:
                    return self.attempt
                if self.code is Status.OK:
                    raise RPCError(Status.OK, "the call has ended")
                wait = self.opening
                self.opening = True
                epoch = self.signal.epoch
            if wait:
                yield Wait(self.signal, epoch, self.deadline)
                continue
            try:
                att = yield from self._open_attempt()
            finally:
                with self.signal.lock:
                    self.opening = False
                    self.signal.notify_all()
            if att is not None:
                return att

    def _open_attempt(self) -> Gen[_Attempt | None]:
        """Opens a stream and replays the kept messages; None if the attempt failed in a way
        that allows another (already recorded), else raises the call's error."""
        with self.signal.lock:
            lost = self.started and self.replay is None and self.sent_total > 0
            self.started = True
            first = self.replay[0] if self.replay else None
            end = self.half_close and self.sent_total == (0 if first is None else 1)
        if lost:  # defensive: _replace does not allow a new attempt then
            self._fail(RPCError(Status.UNAVAILABLE, "the call cannot be retried: its requests were no "
                                f"longer kept for replay (more than {MAX_REPLAY_BYTES} bytes)"))
        try:
            conn = yield from self.pool.pick(self.pick)
        except RPCError as e:
            self._fail(e)
        too_big = [len(m) for m in (self.replay or ()) if len(m) > conn.peer.max_message_size]
        if too_big:
            self._fail(RPCError(Status.RESOURCE_EXHAUSTED, f"request message of {too_big[0]} bytes > "
                                f"server's MAX_MESSAGE_SIZE {conn.peer.max_message_size}"))
        try:
            stream = yield from conn.open_stream(self.method, self.metadata, self.deadline, first, end)
        except _Failure as f:
            return None if self._replace(None, f) else self._fail(f.error)
        except RPCError as e:
            self._fail(e)
        att = _Attempt(conn, stream, 1 if stream.first_sent else 0)
        with self.signal.lock:
            ended = self.code is not None
            if not ended:
                self.attempt = att  # published at once, so that cancel() can reset it
                # the usual unary call: its one message went with the OPEN, and the END_STREAM
                done = self.half_close and stream.half_closed and att.sent >= len(self.replay or ())
        if ended:  # cancelled while the OPEN was being written
            conn.finish(stream)
            raise self.outcome or RPCError(Status.CANCELLED, "the call has ended")
        if done:
            return att
        try:
            while True:  # replay; writers wait until ``opening`` is over, so order is kept
                with self.signal.lock:
                    kept = self.replay or []
                    half = self.half_close
                    if att.sent >= len(kept):
                        break
                    message, last = kept[att.sent], att.sent == self.sent_total - 1
                ok = yield from conn.send_message(stream, message, half and last, self.deadline)
                if not ok:
                    if (yield from self._after_closed(att)):
                        return None
                    return att
                att.sent += 1
        except RPCError as e:
            self._fail(e)
        if half:
            conn.send_end(stream)
        return att

    def _after_closed(self, att: _Attempt) -> Gen[bool]:
        """A send found the attempt's stream closed. True: the call moved to a new attempt (send
        again there); False: the call has ended, its outcome is on the response side."""
        while True:
            with self.signal.lock:
                if self.done:
                    return self._ended()
                if self.attempt is not att:
                    return True
                epoch = self.signal.epoch
            event, messages = att.conn.last_event(att.stream)
            if event is not None:
                if event[0] != "fail":
                    return False  # TRAILERS: the server ended the call
                if not messages and self._replace(att, event[1]):
                    return True
                self._fail(event[1].error)
            yield Wait(self.signal, epoch, self.deadline)  # a reader took the event: it decides

    def _replace(self, att: _Attempt | None, failure: _Failure) -> bool:
        """Records a failed attempt; True if the call may go on with a new one (section 14)."""
        with self.signal.lock:
            if att is not None and self.attempt is not att:
                return not self.done  # another thread has replaced it already
            if self.done or self.received > 0 or not failure.retryable(self.idempotent):
                return False
            if self.replay is None and self.sent_total > 0:
                return _not_retried(failure, f"more than {MAX_REPLAY_BYTES} request bytes sent: "
                                    "no longer kept for replay")
            if self.deadline is None and self.pick.retries >= self.max_retries:
                return _not_retried(failure, f"{self.max_retries} retries without a deadline")
            if failure.processed:
                with self.pool.signal.lock:
                    if not self.pool.budget.withdraw():
                        return _not_retried(failure, "retry budget exhausted")
            self.pick.last = failure
            self.pick.retries += 1
            if att is not None:
                att.replaced = True
                self.attempt = None
            self.signal.notify_all()
        if att is not None:
            att.conn.finish(att.stream)
        return True

    def _resume(self, att: _Attempt, failure: _Failure) -> bool:
        """A server-streaming call continues on a new stream from the server's latest checkpoint
        (section 18.4): after the server ended its stream resumably, or lost or refused it after a
        checkpoint. True: the next attempt carries ``baton-resume`` and its first messages that
        repeat what the application already has are dropped."""
        if self.shape is not Shape.SERVER_STREAMING or self.request is None:
            return False
        if not (failure.resumable or failure.retry_if_idempotent):
            return False  # a RESET or a status: the server's answer
        with self.signal.lock:
            if self.attempt is not att or self.done:
                return False
            checkpoint = att.stream.checkpoint or self.carried
            if checkpoint is None:
                return False
            if failure.processed and not failure.resumable:
                with self.pool.signal.lock:  # a lost stream: like an idempotent retry
                    if not self.pool.budget.withdraw():
                        return False
            index, consumed, token = checkpoint
            self.skip, self.taken = max(0, max(self.taken, self.skip) - index), 0
            self.carried = (0, consumed, token)
            self.metadata = tuple(m for m in self.metadata if m[0] != "baton-resume") + (
                ("baton-resume", base64.urlsafe_b64encode(token).decode("ascii").rstrip("=")),)
            self.replay, self.sent_total = [self.request], 1
            self.pick.last = failure
            self.resumed += 1
            att.replaced = True
            self.attempt = None
            self.signal.notify_all()
        att.conn.finish(att.stream)
        return True

    def retry_after(self, failure: _Failure) -> bool:
        """A first attempt made outside this object (``Connection.unary``) failed: True if the
        call may go on with another (``result()`` makes it), as ``_replace`` decides."""
        return self._replace(None, failure)

    def _fail(self, error: RPCError) -> NoReturn:
        """Ends the call with ``error`` (or the outcome recorded first) and raises it."""
        with self.signal.lock:
            if self.code is None:
                self.outcome = error
                self.code, self.details = error.status, error.message
            att, self.attempt = self.attempt, None
            outcome = self.outcome or error
            self.signal.notify_all()
        if att is not None:
            att.conn.finish(att.stream)
        raise outcome

    def abandon(self) -> None:
        """The application stopped using the call: cancel it if it is still running."""
        self.cancel("call abandoned by the application")

    def dropped(self) -> None:
        """The application's call object was garbage-collected: a call still running is
        cancelled, so that its stream does not hold a server slot until its deadline. From a
        new thread: a collection can run while this thread holds a lock that cancel() takes."""
        if self.started and not self.done:
            threading.Thread(target=self.abandon, daemon=True).start()


def _not_retried(failure: _Failure, why: str) -> bool:
    """Says in the error why a retryable failure was not retried; returns False."""
    failure.error = RPCError(failure.error.code, f"{failure.error.message} (not retried: {why})",
                             failure.error.metadata)
    return False


def prepare_metadata(metadata: Any) -> Metadata:
    """Validated, lower-cased metadata pairs (section 5). Accepts a mapping or (name, value)
    pairs; raises ``RPCError`` INVALID_ARGUMENT for a bad or reserved name, before anything
    is sent."""
    if metadata is None:
        return ()
    items = metadata.items() if hasattr(metadata, "items") else metadata
    pairs = []
    for name, value in items:
        name = str(name).lower()
        try:
            wire.validate_metadata_name(name)
        except ValueError as e:
            raise RPCError(Status.INVALID_ARGUMENT, f"metadata name {name!r}: {e}") from None
        if name.startswith("baton-"):
            raise RPCError(Status.INVALID_ARGUMENT,
                           f"metadata name {name!r}: names starting with 'baton-' are reserved")
        if len(str(value).encode("utf-8")) > 0xFFFF:
            raise RPCError(Status.INVALID_ARGUMENT, f"metadata value of {name!r} is longer than 65535 bytes")
        pairs.append((name, str(value)))
    return tuple(pairs)


def check_method(method: str) -> None:
    raw = method.encode("utf-8")
    if not 1 <= len(raw) <= 0xFFFF:
        raise ValueError("method must be 1 to 65535 bytes of UTF-8")

