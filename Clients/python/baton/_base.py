"""What the blocking and the asyncio client share: configuration, the pool, starting a call."""

from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

from ._call import CallCore, Metadata, Shape, check_method, prepare_metadata
from ._connection import Endpoint
from ._pool import Pool, Resolver, RetryBudget, resolve
from .wire import Settings

MetadataArg = Mapping[str, str] | Sequence[tuple[str, str]] | None


class ClientBase:
    """Client configuration; see ``baton.Client`` for the meaning of each option."""

    _CALLERS_READ = False  # whether callers read their connections while they wait (blocking)

    def __init__(self, endpoints: Sequence[Endpoint], *, connect_timeout: float = 5.0,
                 max_retries: int = 25, max_message_size: int = 4194304,
                 keepalive_interval: float | None = 1.0, keepalive_timeout: float = 2.0,
                 retry_budget: RetryBudget | None = None, resolver: Resolver = resolve) -> None:
        if isinstance(endpoints, tuple) and len(endpoints) == 2 and isinstance(endpoints[1], int):
            endpoints = [endpoints]  # one (host, port)
        keepalive = None if keepalive_interval is None else (keepalive_interval, keepalive_timeout)
        self._pool = Pool(list(endpoints), Settings(max_message_size=max_message_size, resumption=1), connect_timeout,
                          keepalive, resolver, retry_budget or RetryBudget(), self._CALLERS_READ)
        self._max_retries = max(max_retries, len(endpoints))

    def _core(self, method: str, shape: Shape, timeout: float | None, metadata: MetadataArg,
              idempotent: bool, wait_for_ready: bool) -> CallCore:
        check_method(method)
        md: Metadata = prepare_metadata(metadata)
        deadline = None if timeout is None else time.monotonic() + timeout
        return CallCore(self._pool, method, md, shape, deadline, idempotent, wait_for_ready,
                        self._max_retries)

    @property
    def endpoints(self) -> list[dict[str, Any]]:
        """A snapshot of the resolved endpoints: address, whether a connection is ready, and
        the last connect error (for diagnostics)."""
        with self._pool.signal.lock:
            return [{"host": ep.host, "address": ep.address,
                     "ready": ep.conn is not None and ep.conn.usable(), "last_error": ep.last_error}
                    for t in self._pool.targets for ep in t.endpoints]
