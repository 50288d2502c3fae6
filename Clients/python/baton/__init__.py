"""Baton/1 client SDK for Python (standard library only), written from Protocol/PROTOCOL.md.

``Client`` makes calls, ``RPCError`` is what a failed call raises, ``wire`` is the frame codec.
"""

from . import wire
from .client import Client, Endpoint
from .errors import RPCError
from .wire import Status

__all__ = ["Client", "Endpoint", "RPCError", "Status", "wire"]
