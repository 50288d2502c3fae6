"""One call engine for two worlds: the blocking client and ``baton.aio`` run the same code.

Everything that makes a call (choosing a connection, opening a stream, flow control, replay,
retry classification) is written once, as generators. Where the logic must wait, it *yields* an
operation instead of blocking:

* ``Wait(signal, epoch, until)``: resume once ``signal`` has been notified since the caller read
  ``epoch`` under the signal's lock, or at ``until`` (monotonic seconds; None: no limit).
  Reading the epoch under the lock and waiting on it afterwards cannot lose a wake-up.
* ``Blocking(fn)``: a short blocking step with its own bound (TCP connect, name resolution).

``run_blocking`` performs those operations by blocking the calling thread; ``run_async``
awaits them on an event loop (a ``Blocking`` step goes to the loop's default executor). So there
is one set of failover rules and one codec, and the asyncio client never blocks its loop on a
wait. Cancellation enters the generator as an exception at its current ``yield``, so its
``finally`` blocks (RESET CANCEL, releasing a stream slot) run in both worlds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from _thread import allocate_lock as _allocate_lock
from typing import Any, Callable, Generator, TypeVar

T = TypeVar("T")

MAX_SLICE = 0.5  # longest single wait: a safety net, every state change also notifies


class Signal:
    """A condition variable over a plain lock that also wakes asyncio waiters, and counts its
    notifications: ``notify_all`` (lock held) bumps ``epoch``; a waiter that saw an older epoch
    returns at once. Lighter than ``threading.Condition`` (one is made per call): a blocked
    thread's waiter lock is made only when it waits."""

    __slots__ = ("lock", "epoch", "_waiters", "_async", "__weakref__")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.epoch = 0
        self._waiters: list[Any] = []  # the locks blocked threads wait on
        self._async: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def wait(self, timeout: float) -> bool:
        """Releases the lock (held) until notified or ``timeout`` seconds, then takes it again.
        False on timeout."""
        waiter = _allocate_lock()
        waiter.acquire()
        self._waiters.append(waiter)
        self.lock.release()
        got = False
        try:
            got = waiter.acquire(True, timeout) if timeout > 0 else waiter.acquire(False)
            return got
        finally:
            self.lock.acquire()
            if not got:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass

    def notify(self, n: int = 1) -> None:
        """Wakes up to ``n`` blocked threads (lock held), without moving the epoch."""
        waiters = self._waiters
        for w in waiters[:n]:
            w.release()
        del waiters[:n]

    def notify_all(self) -> None:
        self.epoch += 1
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for w in waiters:
                w.release()
        if self._async:
            waiters_async, self._async = self._async, []
            for loop, fut in waiters_async:
                try:
                    loop.call_soon_threadsafe(_wake, fut)
                except RuntimeError:  # that loop is closed
                    pass

    def poke(self) -> None:
        """Takes the lock and notifies: for callers outside it (cancellation)."""
        with self.lock:
            self.notify_all()

    def block(self, epoch: int, until: float | None) -> None:
        """Blocks this thread until the epoch moves past ``epoch``, or ``until``, or one slice
        (a signal may do useful work meanwhile: a connection's reads its socket)."""
        with self.lock:
            if self.epoch == epoch:
                self.wait(slice_until(until))

    def async_waiter_added(self) -> None:
        """Called (lock held) when an asyncio task starts waiting on this signal."""


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def slice_until(until: float | None) -> float:
    """How long one wait until ``until`` (monotonic, or None) may last: at most ``MAX_SLICE``."""
    if until is None:
        return MAX_SLICE
    return max(0.0, min(until - time.monotonic(), MAX_SLICE))


class Wait:
    """Yielded to wait for ``signal`` to move past ``epoch``, or until ``until``."""

    __slots__ = ("signal", "epoch", "until")

    def __init__(self, signal: Signal, epoch: int, until: float | None) -> None:
        self.signal, self.epoch, self.until = signal, epoch, until

    def block(self) -> None:
        self.signal.block(self.epoch, self.until)

    async def wait_async(self) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (loop, fut)
        with self.signal.lock:
            if self.signal.epoch != self.epoch:
                return
            self.signal._async.append(entry)
            self.signal.async_waiter_added()
        timer = loop.call_later(slice_until(self.until), _wake, fut)
        try:
            await fut
        finally:
            timer.cancel()
            if not fut.done():
                fut.cancel()
            with self.signal.lock:
                try:
                    self.signal._async.remove(entry)
                except ValueError:
                    pass


class Blocking:
    """Yielded to run ``fn()`` (bounded by its own timeout) and resume with its result."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn


Op = Wait | Blocking
Gen = Generator[Op, Any, T]


class Interrupt:
    """What a driver checks after every wait: ``error()`` returns the exception to raise into
    the generator (the call was cancelled), or None. ``waiting_on`` is the signal the driver is
    blocked on, so that ``cancel`` can wake it."""

    def __init__(self) -> None:
        self.waiting_on: Signal | None = None

    def error(self) -> BaseException | None:
        return None

    def abort(self) -> None:
        """The driver is leaving the generator with an exception of its own (the task was
        cancelled, KeyboardInterrupt): end the work (the call is cancelled)."""


_NO_INTERRUPT = Interrupt()


def run_blocking(gen: Gen[T], interrupt: Interrupt = _NO_INTERRUPT) -> T:
    """Runs ``gen`` to completion in this thread."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = gen.throw(error) if error is not None else gen.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value = error = None
        try:
            if isinstance(op, Wait):
                interrupt.waiting_on = op.signal
                error = interrupt.error()
                if error is None:
                    op.block()
                    error = interrupt.error()
            else:
                value = op.fn()
        except BaseException as e:  # noqa: BLE001 - handed to the generator, which re-raises
            error = e
            if not isinstance(e, Exception):  # task cancelled, KeyboardInterrupt
                interrupt.abort()
        finally:
            interrupt.waiting_on = None


async def run_async(gen: Gen[T], interrupt: Interrupt = _NO_INTERRUPT) -> T:
    """Runs ``gen`` to completion on the running event loop. Task cancellation is raised into
    the generator (its ``finally`` blocks run) and then propagates."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = gen.throw(error) if error is not None else gen.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        value = error = None
        try:
            if isinstance(op, Wait):
                interrupt.waiting_on = op.signal
                error = interrupt.error()
                if error is None:
                    await op.wait_async()
                    error = interrupt.error()
            else:
                value = await asyncio.get_running_loop().run_in_executor(None, op.fn)
        except BaseException as e:  # noqa: BLE001 - handed to the generator, which re-raises
            error = e
            if not isinstance(e, Exception):  # task cancelled, KeyboardInterrupt
                interrupt.abort()
        finally:
            interrupt.waiting_on = None
