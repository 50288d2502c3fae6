"""Baton/1 client SDK for Python (standard library only), written from Protocol/PROTOCOL.md.

``Client`` is the blocking client, ``baton.aio.Client`` the asyncio one; both make unary,
client-streaming, server-streaming and bidirectional calls, and fail over between servers
without failing calls the server did not process. ``RPCError`` is what a failed call raises,
``wire`` is the frame codec.
"""

from . import wire
from ._pool import RetryBudget
from .client import Call, Client, Endpoint
from .errors import RPCError
from .wire import Status

__all__ = ["Client", "Call", "Endpoint", "RetryBudget", "RPCError", "Status", "wire"]
__version__ = "0.2.0"
