"""Endpoints and connections: name resolution, connecting, backoff, choosing where a call goes.

Rules (shared with the Swift client, PROTOCOL.md section 14):

* Every address a host name resolves to (A and AAAA) is its own endpoint with its own
  connection; names are resolved again when a connection of theirs is lost or gets GOAWAY.
* Calls go round-robin over endpoints with a usable connection. An endpoint without one is
  connected to lazily; one whose connect failed backs off (50 ms x 1.6^n, at most 5 s, +-20 %),
  as does one whose connection ended with a GOAWAY error code (e.g. the server's connection
  limit) or a keepalive timeout.
* Fail fast: a call tries each endpoint's connect at most once; when no endpoint can take it,
  it fails UNAVAILABLE at once with the reasons. ``wait_for_ready=True`` waits for an endpoint
  until the call's deadline instead.
"""

from __future__ import annotations

import functools
import ipaddress
import random
import socket
import time
from collections import deque
from typing import Callable, Sequence

from ._connection import _Connection, _Failure
from ._drive import Blocking, Gen, Signal, Wait
from .errors import RPCError
from .wire import Settings, Status

BACKOFF_INITIAL, BACKOFF_FACTOR, BACKOFF_MAX, BACKOFF_JITTER = 0.05, 1.6, 5.0, 0.2
MAX_WAIT_FOR_CONNECTION = 30.0  # a wait_for_ready call without deadline fails UNAVAILABLE then

Resolver = Callable[[str, int], Sequence[str]]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, IPv4 and IPv6, in the resolver's order, deduplicated."""
    if _is_ip(host):
        return [host]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class RetryBudget:
    """Finagle's retry budget, for retries that may repeat work (idempotent calls after a lost
    connection): over the last ``ttl`` seconds, retries may be at most ``ratio`` of the calls
    plus ``min_per_second`` per second. Transparent retries of calls the server provably did not
    process do not draw on it. Thread-safe under the pool's lock."""

    def __init__(self, ratio: float = 0.2, min_per_second: float = 10.0, ttl: float = 10.0) -> None:
        self.ratio, self.min_per_second, self.ttl = ratio, min_per_second, ttl
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self, now: float) -> None:
        for q in (self._calls, self._retries):
            while q and q[0] <= now - self.ttl:
                q.popleft()

    def deposit(self) -> None:
        now = time.monotonic()
        calls = self._calls
        if calls and calls[0] <= now - self.ttl:
            self._trim(now)
        calls.append(now)

    def withdraw(self) -> bool:
        now = time.monotonic()
        self._trim(now)
        allowed = self.ratio * len(self._calls) + self.min_per_second * self.ttl
        if len(self._retries) + 1 > allowed:
            return False
        self._retries.append(now)
        return True


class _EndpointState:
    """One address: its connection, backoff and keepalive scale. Guarded by the pool's lock."""

    def __init__(self, host: str, address: tuple[str, int]) -> None:
        self.host = host
        self.address = address
        self.conn: _Connection | None = None
        self.connecting = False
        self.failures = 0
        self.retry_at = 0.0
        self.last_error = ""
        self.keepalive_scale = 1  # doubled when the server refused our PING rate (section 15)


class _Target:
    """One ``(host, port)`` the application named, and the endpoints it resolved to."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.endpoints: list[_EndpointState] = []
        self.stale = True
        self.resolve_at = 0.0  # after a failed resolution: not again before this
        self.error = ""


class PickState:
    """What one call remembers across its attempts while choosing endpoints."""

    def __init__(self, deadline: float | None, wait_for_ready: bool) -> None:
        self.deadline = deadline
        self.wait_for_ready = wait_for_ready
        # a call without deadline that waits for ready still waits a bounded time (as Swift's
        # maxWaitForConnection)
        self.wait_limit = time.monotonic() + MAX_WAIT_FOR_CONNECTION if deadline is None else deadline
        self.tried: set[_EndpointState] = set()
        self.last: _Failure | None = None
        self.retries = 0


class Pool:
    """The client's endpoints and connections; ``pick`` chooses a connection for an attempt."""

    def __init__(self, targets: Sequence[tuple[str, int]], local: Settings, connect_timeout: float,
                 keepalive: tuple[float, float] | None, resolver: Resolver,
                 budget: RetryBudget, callers_read: bool = False) -> None:
        if not targets:
            raise ValueError("at least one endpoint is required")
        self.targets = [_Target(h, int(p)) for h, p in targets]
        self.local = local
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self.callers_read = callers_read
        self.resolver = resolver
        self.budget = budget
        self.signal = Signal()  # lock for everything here; notified on every endpoint change
        self.closed = False
        self.conns: set[_Connection] = set()
        self._rr = 0

    # --- resolution ----------------------------------------------------------------------

    def _refresh(self) -> Gen[None]:
        """Resolves targets marked stale (a blocking step: the asyncio client runs it in a
        thread). A failed resolution keeps the previous endpoints."""
        now = time.monotonic()
        with self.signal.lock:
            stale = [t for t in self.targets if t.stale and t.resolve_at <= now]
            for t in stale:
                t.stale = False
        for t in stale:
            try:
                if self.resolver is resolve and _is_ip(t.host):
                    addresses = [t.host]  # nothing to look up: no thread hop
                else:
                    addresses = yield Blocking(functools.partial(self.resolver, t.host, t.port))
                error = "" if addresses else "no address"
            except OSError as e:
                addresses, error = [], f"cannot resolve {t.host}: {e}"
            with self.signal.lock:
                t.error = error
                if not addresses:  # try again, but at most once a second
                    t.stale, t.resolve_at = True, time.monotonic() + 1.0
                if addresses:
                    known = {ep.address[0]: ep for ep in t.endpoints}
                    t.endpoints = [known.get(a) or _EndpointState(t.host, (a, t.port)) for a in addresses]
                self.signal.notify_all()

    # --- choosing ------------------------------------------------------------------------

    def ready(self) -> _Connection | None:
        """The connection that ``pick`` would choose at once for a first attempt when the
        endpoint next in round-robin order has a usable connection (and nothing needs resolving
        again), the round-robin moved on as ``pick`` does; else None (``pick`` decides)."""
        with self.signal.lock:
            if self.closed:
                return None
            targets = self.targets
            if len(targets) == 1:
                order = targets[0].endpoints
                if targets[0].stale:
                    return None
            else:
                if any(t.stale for t in targets):
                    return None
                order = [ep for t in targets for ep in t.endpoints]
            n = len(order)
            if not n:
                return None
            conn = order[self._rr % n].conn
            if conn is None or not conn.usable():
                return None
            for ep in order:  # a GOAWAY to note first (pick resolves that name again)
                c = ep.conn
                if c is not None and c.draining and not c.reresolved:
                    return None
            self._rr = (self._rr + 1) % n
            return conn

    def pick(self, state: PickState) -> Gen[_Connection]:
        """A connection for the next attempt of a call, connecting if needed. Raises RPCError:
        CANCELLED (client closed), DEADLINE_EXCEEDED, or UNAVAILABLE when no endpoint can take the
        call (fail fast) and the call does not wait for ready."""
        if state.last is None and (state.deadline is None or time.monotonic() < state.deadline):
            ready = self.ready()  # what the loop below chooses then, in short
            if ready is not None:
                return ready
        while True:
            if any(t.stale and t.resolve_at <= time.monotonic() for t in self.targets):
                yield from self._refresh()
            with self.signal.lock:
                if self.closed:
                    raise RPCError(Status.CANCELLED, "client is closed")
                if state.deadline is not None and time.monotonic() >= state.deadline:
                    raise RPCError(Status.DEADLINE_EXCEEDED, "deadline exceeded before the call was sent"
                                   if state.last is None else f"deadline exceeded while retrying "
                                   f"(last attempt: {state.last.error.message})")
                order = [ep for t in self.targets for ep in t.endpoints]
                n = len(order)
                if n:
                    k = self._rr % n
                    order = order[k:] + order[:k]
                    self._rr = (self._rr + 1) % n
                now = time.monotonic()
                for t in self.targets:  # a GOAWAY: resolve that name again (once per connection)
                    for ep in t.endpoints:
                        if ep.conn is not None and ep.conn.draining and not ep.conn.reresolved:
                            ep.conn.reresolved = t.stale = True
                refused = state.last.refused_by if state.last is not None else None
                # Round-robin over endpoints with a usable connection or none yet (connected
                # lazily, in turn, so that a restarted server gets its share again). After
                # REFUSED_STREAM, any other connection (even a new one) before the refusing one.
                choice, connect, fallback = None, False, None
                for ep in order:
                    if ep.conn is not None and ep.conn.usable():
                        if ep.conn is refused:
                            fallback = ep
                            continue
                        choice = ep
                        break
                    if ep.conn is not None and ep.conn.takes_no_streams():
                        ep.last_error = "the server takes no streams (MAX_CONCURRENT_STREAMS 0)"
                        continue
                    if (not ep.connecting and ep.retry_at <= now
                            and (state.wait_for_ready or ep not in state.tried)):
                        choice, connect = ep, True
                        ep.connecting = True
                        break
                if choice is None and fallback is not None:
                    choice = fallback
                if choice is None:
                    if any(ep.connecting for ep in order):
                        wake: float | None = None  # another call is connecting: wait for it
                    elif state.wait_for_ready:
                        if state.deadline is None and now >= state.wait_limit:
                            raise RPCError(Status.UNAVAILABLE, f"no endpoint ready within "
                                           f"{MAX_WAIT_FOR_CONNECTION:g} s; the call was not sent "
                                           f"({self._unreachable(order)})")
                        wake = max(now + 0.05, min((ep.retry_at for ep in order), default=now))
                    else:
                        raise RPCError(Status.UNAVAILABLE, self._unreachable(order))
                    epoch = self.signal.epoch
                    until = min(wake or state.wait_limit, state.wait_limit)
            if choice is None:
                yield Wait(self.signal, epoch, until)
                continue
            if not connect:
                conn = choice.conn
                assert conn is not None
                if state.last is not None and conn is refused:
                    # Only the connection that refused can take it: pause first (section 14).
                    pause = min(0.001 * 2 ** min(state.retries - 1, 7), 0.1) * random.uniform(0.8, 1.2)
                    yield from conn.pause(pause)
                return conn
            conn = yield from self._connect(choice, state)
            if conn is not None:
                return conn

    def _connect(self, ep: _EndpointState, state: PickState) -> Gen[_Connection | None]:
        """Connects ``ep`` (its ``connecting`` flag already set); None if that failed.

        The endpoint's bookkeeping happens in the connecting step itself, so that a call
        cancelled while it waits (an asyncio task: the step goes on in an executor thread)
        neither loses a connection that then succeeds nor counts as a failed connect."""
        timeout = self.connect_timeout
        if state.deadline is not None:
            timeout = max(0.001, min(timeout, state.deadline - time.monotonic()))
        interval = None
        if self.keepalive is not None:
            interval = (self.keepalive[0] * ep.keepalive_scale, self.keepalive[1])
        conn = _Connection(ep.address, self.local, self._forget, interval, self.callers_read)
        with self.signal.lock:
            self.conns.add(conn)

        def attempt() -> bool:
            ok, error = False, "interrupted"
            try:
                conn.connect(timeout)
                ok = True
            except _Failure as f:
                error = f.error.message
                with self.signal.lock:
                    ep.failures += 1
                    self._back_off(ep)
            finally:
                with self.signal.lock:
                    ep.connecting = False
                    closed = self.closed
                    if ok and not closed:
                        # The run of failures ends when the connection ends well (see _forget):
                        # a server that accepts and then refuses with GOAWAY (its connection
                        # limit) keeps the backoff growing (section 14).
                        ep.retry_at, ep.conn = 0.0, conn
                    if not ok:
                        ep.last_error = error
                    elif conn.takes_no_streams():
                        ep.last_error = "the server takes no streams (MAX_CONCURRENT_STREAMS 0)"
                    self.signal.notify_all()
                if ok and closed:
                    conn.close()
            return ok and not closed and not conn.takes_no_streams()

        if not (yield Blocking(attempt)):
            with self.signal.lock:
                state.tried.add(ep)
            return None
        return conn

    def _unreachable(self, order: list[_EndpointState]) -> str:
        reasons = [f"{ep.address[0]}:{ep.address[1]}: {ep.last_error or 'backing off'}" for ep in order]
        reasons += [t.error for t in self.targets if t.error and not t.endpoints]
        return "no endpoint could be reached (" + "; ".join(reasons) + "); the call was not sent"

    # --- connection events --------------------------------------------------------------------

    def _forget(self, conn: _Connection) -> None:
        """A connection has ended (called by it, possibly twice). The endpoint's name is resolved
        again; a GOAWAY error code or a keepalive timeout makes the endpoint back off like a
        failed connect, so that an overloaded or frozen server is not retried at once."""
        with self.signal.lock:
            self.conns.discard(conn)
            for t in self.targets:
                for ep in t.endpoints:
                    if ep.conn is not conn:
                        continue
                    ep.conn = None
                    t.stale = True
                    if not (conn.goaway_error or conn.keepalive_failed):
                        ep.failures = 0
                    if conn.pings_refused:
                        ep.keepalive_scale *= 2
                    if conn.goaway_error or conn.keepalive_failed:
                        if time.monotonic() - conn.connected_at > BACKOFF_MAX:
                            ep.failures = 0  # a long-lived connection: a new run of failures
                        ep.failures += 1
                        ep.last_error = conn.dead_reason
                        self._back_off(ep)
                    if conn.keepalive_failed and self.keepalive is not None:
                        # a frozen server: not before one keepalive period (its handshake would
                        # only time out)
                        ep.retry_at = max(ep.retry_at, time.monotonic() + sum(self.keepalive))
            self.signal.notify_all()

    @staticmethod
    def _back_off(ep: _EndpointState) -> None:
        delay = min(BACKOFF_MAX, BACKOFF_INITIAL * BACKOFF_FACTOR ** max(ep.failures - 1, 0))
        ep.retry_at = time.monotonic() + delay * random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)

    def close(self) -> list[_Connection]:
        with self.signal.lock:
            self.closed = True
            conns = list(self.conns)
            self.signal.notify_all()
        for c in conns:
            c.close()
        return conns
