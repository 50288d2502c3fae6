"""The one error type a call raises: ``RPCError``, with a gRPC status code (PROTOCOL.md 12)."""

from __future__ import annotations

from typing import Sequence

from .wire import Status

__all__ = ["RPCError", "Status"]


class RPCError(Exception):
    """A call that did not end with status OK.

    ``code`` is the status as an ``int`` in gRPC's numbering (0..16; a status byte above 16 from
    the wire is reported as UNKNOWN, 2), ``code_name`` its name (``"UNAVAILABLE"``...), ``message``
    the server's status message or a client-side explanation, ``metadata`` the trailing metadata
    of the TRAILERS frame (empty when the call ended without TRAILERS).
    """

    def __init__(self, code: int, message: str = "",
                 metadata: Sequence[tuple[str, str]] = ()) -> None:
        self.code: int = int(Status.of(code))
        self.message: str = message
        self.metadata: tuple[tuple[str, str], ...] = tuple(metadata)
        super().__init__(f"{self.code_name} ({self.code}): {message}" if message
                         else f"{self.code_name} ({self.code})")

    @property
    def code_name(self) -> str:
        """The gRPC name of ``code``, for example ``"DEADLINE_EXCEEDED"``."""
        return Status(self.code).name

    @property
    def status(self) -> Status:
        """``code`` as a ``Status`` enum member."""
        return Status(self.code)

    def __repr__(self) -> str:
        return f"RPCError(code={self.code_name}, message={self.message!r})"
