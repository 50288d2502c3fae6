"""The asyncio client: ``baton.aio.Client`` and ``AsyncCall``.

Same options, methods and rules as the blocking ``baton.Client``, as coroutines and async
iterators; it runs the same call engine (``_call``, ``_pool``, ``_connection``), so there is one
codec and one set of failover rules. Waiting never blocks the event loop: each connection's
reader thread wakes the loop with ``call_soon_threadsafe``. Connecting and name resolution run
in the loop's default executor. Writing a frame is a direct, non-blocking-in-practice socket
write (flow control bounds what can be outstanding).

Cancelling the task that awaits a call cancels the call (RESET CANCEL); so does
``AsyncCall.cancel()``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterable, AsyncIterator, Generator, Iterable

from ._base import ClientBase, MetadataArg
from ._call import CallCore, Metadata, Shape
from ._connection import LINGER
from ._drive import run_async
from .wire import Status

__all__ = ["Client", "AsyncCall"]


class AsyncCall:
    """One call of any shape, for asyncio: ``await write()``, ``await done_writing()``,
    ``async for`` the responses (or ``await read()``), ``await result()`` (unary,
    client-streaming; awaiting the call itself does the same), ``cancel()``, and ``headers``,
    ``trailers``, ``code``, ``details`` once known. ``write()`` returns False, dropping the
    message, if the server has already ended the call. ``async with`` cancels a call still running
    when the block is left."""

    def __init__(self, core: CallCore) -> None:
        self._core = core

    async def write(self, message: bytes) -> bool:
        return await run_async(self._core.send(bytes(message)), self._core)

    async def done_writing(self) -> None:
        await run_async(self._core.done_writing(), self._core)

    async def read(self) -> bytes | None:
        return await run_async(self._core.receive(), self._core)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        message = await self.read()
        if message is None:
            raise StopAsyncIteration
        return message

    async def result(self) -> bytes:
        return await run_async(self._core.result(), self._core)

    def __await__(self) -> Generator[Any, None, bytes]:
        return self.result().__await__()

    def cancel(self) -> bool:
        """Cancels the call; False if it had already ended."""
        return self._core.cancel()

    @property
    def headers(self) -> Metadata | None:
        core = self._core
        if core.headers is None and core.attempt is not None and core.attempt.stream.seen_first:
            return core.attempt.stream.headers
        return core.headers

    @property
    def trailers(self) -> Metadata | None:
        return self._core.trailers

    @property
    def code(self) -> Status | None:
        return self._core.code

    @property
    def details(self) -> str:
        return self._core.details

    @property
    def resumed(self) -> int:
        """As ``baton.Call.resumed``: moves of a resumable server stream to a new stream."""
        return self._core.resumed

    def done(self) -> bool:
        return self._core.done

    async def __aenter__(self) -> "AsyncCall":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._core.abandon()

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is not None:
            core.dropped()


class Client(ClientBase):
    """The asyncio Baton client; options as ``baton.Client``. Use it from one event loop."""

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes every connection; running and later calls fail CANCELLED. Waits up to the
        linger time (2 s) for the servers to close their side, without blocking the loop."""
        conns = self._pool.close()
        end = time.monotonic() + LINGER + 0.5
        loop = asyncio.get_running_loop()
        for c in conns:
            await loop.run_in_executor(None, c.join, max(0.0, end - time.monotonic()))

    async def unary(self, method: str, request: bytes, *, timeout: float | None = None,
                    metadata: MetadataArg = None, idempotent: bool = False,
                    wait_for_ready: bool = False) -> bytes:
        """Calls a unary method and returns its response. Raises ``RPCError``."""
        return await self.unary_call(method, request, timeout=timeout, metadata=metadata,
                                     idempotent=idempotent, wait_for_ready=wait_for_ready).result()

    def unary_call(self, method: str, request: bytes, *, timeout: float | None = None,
                   metadata: MetadataArg = None, idempotent: bool = False,
                   wait_for_ready: bool = False) -> AsyncCall:
        """A unary call; ``await call`` (or ``call.result()``) for the response, then read
        ``call.headers`` and ``call.trailers``."""
        core = self._core(method, Shape.UNARY, timeout, metadata, idempotent, wait_for_ready)
        core.preload(bytes(request))
        return AsyncCall(core)

    def server_streaming(self, method: str, request: bytes, *, timeout: float | None = None,
                         metadata: MetadataArg = None, idempotent: bool = False,
                         wait_for_ready: bool = False) -> AsyncCall:
        """A server-streaming call: ``async for`` the responses."""
        core = self._core(method, Shape.SERVER_STREAMING, timeout, metadata, idempotent, wait_for_ready)
        core.preload(bytes(request))
        return AsyncCall(core)

    async def client_streaming(self, method: str,
                               requests: Iterable[bytes] | AsyncIterable[bytes], *,
                               timeout: float | None = None, metadata: MetadataArg = None,
                               idempotent: bool = False, wait_for_ready: bool = False) -> bytes:
        """Sends every message of ``requests`` (iterable or async iterable), returns the response."""
        call = self.client_streaming_call(method, timeout=timeout, metadata=metadata,
                                          idempotent=idempotent, wait_for_ready=wait_for_ready)
        async with call:
            if isinstance(requests, AsyncIterable):
                async for message in requests:
                    if not await call.write(message):
                        break
            else:
                for message in requests:
                    if not await call.write(message):
                        break
            await call.done_writing()
            return await call.result()

    def client_streaming_call(self, method: str, *, timeout: float | None = None,
                              metadata: MetadataArg = None, idempotent: bool = False,
                              wait_for_ready: bool = False) -> AsyncCall:
        return AsyncCall(self._core(method, Shape.CLIENT_STREAMING, timeout, metadata, idempotent,
                                    wait_for_ready))

    def bidirectional(self, method: str, *, timeout: float | None = None,
                      metadata: MetadataArg = None, idempotent: bool = False,
                      wait_for_ready: bool = False) -> AsyncCall:
        """A bidirectional call: ``await write()`` and ``async for``, from one task or two."""
        return AsyncCall(self._core(method, Shape.BIDIRECTIONAL, timeout, metadata, idempotent,
                                    wait_for_ready))
