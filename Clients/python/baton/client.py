"""The blocking client: ``Client`` and ``Call``.

A call runs in the thread that waits for it (``result()``, iteration, ``write()``); ``cancel()``
may come from any thread. One ``Client`` is shared by any number of threads. The asyncio
client (``baton.aio``) runs the very same call engine.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

from ._base import ClientBase, MetadataArg
from ._call import CallCore, Metadata, Shape, check_method, prepare_metadata
from ._connection import LINGER, Endpoint
from ._drive import run_blocking
from .wire import Status

__all__ = ["Client", "Call", "Endpoint"]


class Call:
    """One call of any shape, blocking.

    * ``write(message)`` sends a request message (client- and bidirectional-streaming); it
      returns False, dropping the message, if the server has already ended the call, whose
      outcome is then read from the response side. ``done_writing()`` ends the requests.
    * Iterating yields the response messages; the iteration ends when the call ends OK and
      raises ``RPCError`` otherwise. ``read()`` returns one message, or None at the end.
    * ``result()`` returns the one response of a unary or client-streaming call.
    * ``cancel()``, from any thread, ends the call CANCELLED (RESET CANCEL on the wire).
    * ``headers``, ``trailers``, ``code``, ``details`` describe the response once it is known,
      on success as on failure (like grpcio's ``with_call``).

    As a context manager, leaving the block cancels a call that is still running.
    """

    def __init__(self, core: CallCore) -> None:
        self._core = core

    # requests
    def write(self, message: bytes) -> bool:
        return run_blocking(self._core.send(bytes(message)), self._core)

    def done_writing(self) -> None:
        run_blocking(self._core.done_writing(), self._core)

    # responses
    def read(self) -> bytes | None:
        return run_blocking(self._core.receive(), self._core)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        message = self.read()
        if message is None:
            raise StopIteration
        return message

    def result(self) -> bytes:
        return run_blocking(self._core.result(), self._core)

    def cancel(self) -> bool:
        """Cancels the call; False if it had already ended."""
        return self._core.cancel()

    # outcome
    @property
    def headers(self) -> Metadata | None:
        """The server's response metadata (HEADERS), once a response or the end has arrived."""
        core = self._core
        if core.headers is None and core.attempt is not None and core.attempt.stream.seen_first:
            return core.attempt.stream.headers
        return core.headers

    @property
    def trailers(self) -> Metadata | None:
        """The trailing metadata of TRAILERS, once the call has ended with them."""
        return self._core.trailers

    @property
    def code(self) -> Status | None:
        """The call's status once it has ended (OK on success), else None."""
        return self._core.code

    @property
    def details(self) -> str:
        """The status message of the ended call."""
        return self._core.details

    @property
    def resumed(self) -> int:
        """How often a resumable server stream moved to a new stream from the server's latest
        checkpoint (protocol 1.1), with no gap and no duplicate for the iteration."""
        return self._core.resumed

    def done(self) -> bool:
        return self._core.done

    def __enter__(self) -> "Call":
        return self

    def __exit__(self, *exc: object) -> None:
        self._core.abandon()

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None:
            core.dropped()


class Client(ClientBase):
    """A Baton client over ``(host, port)`` endpoints. Thread-safe.

    Options (all keyword-only):

    * ``connect_timeout`` (5 s): bounds a TCP connect plus the preface/SETTINGS handshake.
    * ``max_retries`` (25, never below the number of endpoints): transparent retries of a call
      without a deadline; calls with a deadline retry as long as it allows.
    * ``max_message_size`` (4 MiB): the largest response message accepted (announced to servers).
    * ``keepalive_interval`` (1 s; None turns keepalive off) and ``keepalive_timeout`` (2 s):
      while calls wait on a connection that has received nothing for the interval, a PING is
      sent; no ACK within the timeout and the connection is dead.
    * ``retry_budget``: a ``RetryBudget`` bounding retries that may repeat work (default: 20 %
      of recent calls plus 10 per second).
    * ``resolver``: ``(host, port) -> [address, ...]``; the default asks the system resolver
      for every A and AAAA address.

    Per call: ``timeout`` (seconds for the whole call, retries included; sent to the server),
    ``metadata`` (a mapping or pairs; names lower-cased; ``baton-`` names refused with
    INVALID_ARGUMENT), ``idempotent`` (allows retrying a call that may have been processed),
    ``wait_for_ready`` (wait for an endpoint until the deadline instead of failing fast).
    """

    _CALLERS_READ = True

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes every connection; running and later calls fail CANCELLED. Waits up to the
        linger time (2 s) for the servers to close their side."""
        conns = self._pool.close()
        end = time.monotonic() + LINGER + 0.5
        for c in conns:
            c.join(max(0.0, end - time.monotonic()))

    # --- the four shapes -------------------------------------------------------------------

    def unary(self, method: str, request: bytes, *, timeout: float | None = None,
              metadata: MetadataArg = None, idempotent: bool = False,
              wait_for_ready: bool = False) -> bytes:
        """Calls a unary method and returns its response. Raises ``RPCError``."""
        request = bytes(request)
        conn = self._pool.ready()
        if conn is None:
            core = self._core(method, Shape.UNARY, timeout, metadata, idempotent, wait_for_ready)
            core.preload(request)
            return run_blocking(core.result(), core)
        # The usual case in one piece (Connection.unary); anything else as any call.
        check_method(method)
        md = prepare_metadata(metadata)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._pool.signal.lock:
            self._pool.budget.deposit()
        outcome = conn.unary(method, md, deadline, request)
        if isinstance(outcome, bytes):
            return outcome
        core = CallCore(self._pool, method, md, Shape.UNARY, deadline, idempotent, wait_for_ready,
                        self._max_retries, counted=True)
        core.preload(request)
        if outcome is not None:  # that attempt failed in a way that may allow another
            core.started = True
            if not core.retry_after(outcome):
                raise outcome.error
        return run_blocking(core.result(), core)

    def unary_call(self, method: str, request: bytes, *, timeout: float | None = None,
                   metadata: MetadataArg = None, idempotent: bool = False,
                   wait_for_ready: bool = False) -> Call:
        """A unary call to run with ``result()``, and to cancel from another thread or read
        headers and trailers of afterwards."""
        core = self._core(method, Shape.UNARY, timeout, metadata, idempotent, wait_for_ready)
        core.preload(bytes(request))
        return Call(core)

    def server_streaming(self, method: str, request: bytes, *, timeout: float | None = None,
                         metadata: MetadataArg = None, idempotent: bool = False,
                         wait_for_ready: bool = False) -> Call:
        """Calls a server-streaming method: iterate the returned ``Call`` for the responses.
        The call starts on the first iteration."""
        core = self._core(method, Shape.SERVER_STREAMING, timeout, metadata, idempotent, wait_for_ready)
        core.preload(bytes(request))
        return Call(core)

    def client_streaming(self, method: str, requests: Iterable[bytes], *,
                         timeout: float | None = None, metadata: MetadataArg = None,
                         idempotent: bool = False, wait_for_ready: bool = False) -> bytes:
        """Sends every message of ``requests``, then returns the one response."""
        call = self.client_streaming_call(method, timeout=timeout, metadata=metadata,
                                          idempotent=idempotent, wait_for_ready=wait_for_ready)
        with call:
            for message in requests:
                if not call.write(message):
                    break  # the server has ended the call: result() reports how
            call.done_writing()
            return call.result()

    def client_streaming_call(self, method: str, *, timeout: float | None = None,
                              metadata: MetadataArg = None, idempotent: bool = False,
                              wait_for_ready: bool = False) -> Call:
        """A client-streaming call: ``write()`` the requests, ``done_writing()``, ``result()``."""
        return Call(self._core(method, Shape.CLIENT_STREAMING, timeout, metadata, idempotent,
                               wait_for_ready))

    def bidirectional(self, method: str, *, timeout: float | None = None,
                      metadata: MetadataArg = None, idempotent: bool = False,
                      wait_for_ready: bool = False) -> Call:
        """A bidirectional call: ``write()`` and iterate, from one thread or two."""
        return Call(self._core(method, Shape.BIDIRECTIONAL, timeout, metadata, idempotent,
                               wait_for_ready))
