"""Baton/1 frame layer: preface, frames, metadata blocks, settings, error and status codes.

Written from ``Protocol/PROTOCOL.md`` (sections 3 to 5, 8, 11 and 12). This module holds no
connection or stream state: it decides exactly the rules that one frame (or the 8-byte preface)
allows, which the spec calls codec-level errors (section 11.4). State rules (stream states, flow
control, settings exchange order) belong to the caller.

What a caller may rely on:

* ``encode_frame(f)`` returns the exact wire bytes of ``f`` (header included) or raises
  ``ValueError`` for a frame that cannot or must not be written (empty method, bad metadata name,
  field out of range...). It never writes the reserved bit or undefined flags.
* ``decode_frame(buf)`` returns ``None`` while ``buf`` holds a proper prefix of a frame, or
  ``(frame, consumed)``; an invalid frame raises ``WireError`` whose ``scope``, ``code`` and
  ``stream_id`` are those the spec prescribes. Size errors are raised from the 9-byte header
  alone.
* ``FrameDecoder`` does the same over a byte stream fed in arbitrary pieces.
* ``check_preface(buf)`` accepts ``PREFACE`` and rejects anything else as early as possible.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Literal, Sequence, Union

__all__ = [
    "MAGIC", "VERSION", "PREFACE", "HEADER_LEN", "MAX_STREAM_ID", "MAX_WINDOW",
    "FLAG_END_STREAM", "FLAG_END_MESSAGE", "FLAG_ACK",
    "FrameType", "ErrorCode", "Status", "SettingId", "Settings", "Metadata",
    "Data", "Open", "Headers", "Trailers", "Reset", "SettingsFrame", "Ping", "GoAway",
    "WindowUpdate", "Checkpoint", "Frame", "WireError", "encode_frame", "encode_metadata_block",
    "decode_frame", "FrameDecoder", "check_preface", "validate_metadata_name",
]

MAGIC = b"BATON\r\n"
VERSION = 1
PREFACE = MAGIC + bytes([VERSION])
HEADER_LEN = 9
MAX_STREAM_ID = 0x7FFFFFFF  # 2^31-1; also the largest window and WINDOW_UPDATE increment
MAX_WINDOW = 0x7FFFFFFF
_RESERVED = 0x80000000
_U16, _U24, _U32, _U64 = 0xFFFF, 0xFFFFFF, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF

FLAG_END_STREAM = 0x1  # DATA, OPEN
FLAG_END_MESSAGE = 0x2  # DATA
FLAG_ACK = 0x1  # PING


class FrameType(IntEnum):
    """Frame type codes (section 4.1). Any other code is connection error PROTOCOL_ERROR."""

    DATA = 0x0
    OPEN = 0x1
    HEADERS = 0x2
    TRAILERS = 0x3
    RESET = 0x4
    SETTINGS = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CHECKPOINT = 0x9  # 1.1, only with resumption on (section 18)


class ErrorCode(IntEnum):
    """Error codes of RESET and GOAWAY (section 11.1). Unknown codes are handled as INTERNAL_ERROR."""

    NO_ERROR = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2
    FLOW_CONTROL_ERROR = 3
    STREAM_CLOSED = 4
    FRAME_SIZE_ERROR = 5
    REFUSED_STREAM = 6
    CANCEL = 7
    ENHANCE_YOUR_CALM = 8
    MESSAGE_TOO_LARGE = 9
    UNSUPPORTED_VERSION = 10

    @classmethod
    def of(cls, code: int) -> "ErrorCode":
        """The known code for ``code``; an unknown value becomes INTERNAL_ERROR (section 4.7)."""
        try:
            return cls(code)
        except ValueError:
            return cls.INTERNAL_ERROR


class Status(IntEnum):
    """Call status codes carried in TRAILERS: gRPC's numbering (section 12.1)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @classmethod
    def of(cls, code: int) -> "Status":
        """The status for a TRAILERS status byte; values above 16 map to UNKNOWN (section 4.6)."""
        try:
            return cls(code)
        except ValueError:
            return cls.UNKNOWN


class SettingId(IntEnum):
    """Setting identifiers (section 8). Unknown ids are ignored on receipt."""

    MAX_FRAME_SIZE = 0x1
    MAX_CONCURRENT_STREAMS = 0x2
    INITIAL_WINDOW_SIZE = 0x3
    CONNECTION_WINDOW_SIZE = 0x4
    MAX_METADATA_SIZE = 0x5
    MAX_MESSAGE_SIZE = 0x6
    RESUMPTION = 0x7  # 1.1: 1 announces resumable streams (section 18)


# Allowed range of every known setting (section 8); out of range is connection error PROTOCOL_ERROR.
_SETTING_RANGE: dict[int, tuple[int, int]] = {
    SettingId.MAX_FRAME_SIZE: (1024, 16777215),
    SettingId.MAX_CONCURRENT_STREAMS: (0, _U32),
    SettingId.INITIAL_WINDOW_SIZE: (0, MAX_WINDOW),
    SettingId.CONNECTION_WINDOW_SIZE: (0, MAX_WINDOW),
    SettingId.MAX_METADATA_SIZE: (64, _U32),  # room for an empty block: a status always fits
    SettingId.MAX_MESSAGE_SIZE: (0, _U32),
    SettingId.RESUMPTION: (0, 1),
}

_SETTING_FIELDS: dict[int, str] = {
    SettingId.MAX_FRAME_SIZE: "max_frame_size",
    SettingId.MAX_CONCURRENT_STREAMS: "max_concurrent_streams",
    SettingId.INITIAL_WINDOW_SIZE: "initial_window_size",
    SettingId.CONNECTION_WINDOW_SIZE: "connection_window_size",
    SettingId.MAX_METADATA_SIZE: "max_metadata_size",
    SettingId.MAX_MESSAGE_SIZE: "max_message_size",
    SettingId.RESUMPTION: "resumption",
}


@dataclass(frozen=True)
class Settings:
    """The settings of one endpoint, defaults per section 8. Each bounds what the *peer* sends."""

    max_frame_size: int = 65536
    max_concurrent_streams: int = 1024
    initial_window_size: int = 1048576
    connection_window_size: int = 16777216
    max_metadata_size: int = 16384
    max_message_size: int = 4194304
    resumption: int = 0  # 1.1; absent means 0 (a 1.0 peer)

    def updated(self, pairs: Sequence[tuple[int, int]]) -> "Settings":
        """These settings with ``pairs`` applied in order (a later id wins; unknown ids ignored).

        Raises ``ValueError`` for a known id whose value is out of range.
        """
        values = {name: getattr(self, name) for name in _SETTING_FIELDS.values()}
        for ident, value in pairs:
            name = _SETTING_FIELDS.get(ident)
            if name is None:
                continue
            low, high = _SETTING_RANGE[ident]
            if not low <= value <= high:
                raise ValueError(f"setting {ident} value {value} outside {low}..{high}")
            values[name] = value
        return Settings(**values)

    def pairs(self, omit_defaults: bool = True) -> tuple[tuple[int, int], ...]:
        """The entries of a SETTINGS frame announcing these values (defaults omitted by default)."""
        default = Settings()
        return tuple((int(i), getattr(self, n)) for i, n in _SETTING_FIELDS.items()
                     if not omit_defaults or getattr(self, n) != getattr(default, n))


Metadata = tuple[tuple[str, str], ...]  # ordered (name, value) pairs; names may repeat


# --- Frames ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Data:
    """DATA (0x0): a message or a fragment of one (section 4.3)."""

    stream_id: int
    data: bytes = b""
    end_stream: bool = False
    end_message: bool = False


@dataclass(frozen=True)
class Open:
    """OPEN (0x1): opens a stream; client only (section 4.4). ``timeout_us`` 0 = no deadline."""

    stream_id: int
    method: str
    timeout_us: int = 0
    metadata: Metadata = ()
    end_stream: bool = False


@dataclass(frozen=True)
class Headers:
    """HEADERS (0x2): the server's response metadata (section 4.5)."""

    stream_id: int
    metadata: Metadata = ()


@dataclass(frozen=True)
class Trailers:
    """TRAILERS (0x3): ends the call with a status (section 4.6). ``status`` is the raw byte."""

    stream_id: int
    status: int
    message: str = ""
    metadata: Metadata = ()


@dataclass(frozen=True)
class Reset:
    """RESET (0x4): ends a stream abruptly (section 4.7). ``error_code`` is the raw u32."""

    stream_id: int
    error_code: int


@dataclass(frozen=True)
class SettingsFrame:
    """SETTINGS (0x5): ``(id, value)`` pairs in wire order; decoding drops unknown ids (4.8)."""

    settings: tuple[tuple[int, int], ...] = ()
    stream_id: int = field(default=0, repr=False)


@dataclass(frozen=True)
class Ping:
    """PING (0x6): 8 opaque bytes; ``ack`` marks the answer (section 4.9)."""

    data: bytes
    ack: bool = False
    stream_id: int = field(default=0, repr=False)


@dataclass(frozen=True)
class GoAway:
    """GOAWAY (0x7): no new streams; ids above ``last_stream_id`` were not processed (4.10, 13)."""

    last_stream_id: int
    error_code: int
    debug: str = ""
    stream_id: int = field(default=0, repr=False)


@dataclass(frozen=True)
class WindowUpdate:
    """WINDOW_UPDATE (0x8): flow-control credit; stream 0 is the connection (4.11, 9)."""

    stream_id: int
    increment: int


@dataclass(frozen=True)
class Checkpoint:
    """CHECKPOINT (0x9, 1.1): the server's checkpoint of a stream; ``token`` covers every response
    message sent before it, ``consumed`` request messages had been read (section 18.2)."""

    stream_id: int
    consumed: int
    token: bytes = b""


Frame = Union[Data, Open, Headers, Trailers, Reset, SettingsFrame, Ping, GoAway, WindowUpdate, Checkpoint]

_TYPE_OF: dict[type, FrameType] = {
    Data: FrameType.DATA, Open: FrameType.OPEN, Headers: FrameType.HEADERS,
    Trailers: FrameType.TRAILERS, Reset: FrameType.RESET, SettingsFrame: FrameType.SETTINGS,
    Ping: FrameType.PING, GoAway: FrameType.GOAWAY, WindowUpdate: FrameType.WINDOW_UPDATE,
    Checkpoint: FrameType.CHECKPOINT,
}
_STREAM_TYPES = {FrameType.DATA, FrameType.OPEN, FrameType.HEADERS, FrameType.TRAILERS, FrameType.RESET,
                 FrameType.CHECKPOINT}
_CONNECTION_TYPES = {FrameType.SETTINGS, FrameType.PING, FrameType.GOAWAY}
_NAME_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-_.")


class WireError(Exception):
    """A frame or preface broke a codec-level rule (section 11.4).

    ``scope`` is ``"connection"`` (send GOAWAY and close) or ``"stream"`` (reset ``stream_id``; the
    frame boundary is intact and decoding may continue). ``code`` is the error code to send.
    """

    def __init__(self, scope: Literal["connection", "stream"], code: ErrorCode, reason: str,
                 stream_id: int = 0, frame_type: FrameType | None = None) -> None:
        super().__init__(f"{scope} error {code.name}: {reason}")
        self.scope: Literal["connection", "stream"] = scope
        self.code: ErrorCode = code
        self.reason: str = reason
        self.stream_id: int = stream_id
        self.frame_type: FrameType | None = frame_type  # the offending frame's type, when known


def _conn(code: ErrorCode, reason: str) -> WireError:
    return WireError("connection", code, reason)


# --- Encoder -----------------------------------------------------------------------------------

def validate_metadata_name(name: str) -> bytes:
    """The wire bytes of a metadata name; ``ValueError`` unless 1..65535 bytes of ``[a-z0-9-_.]``."""
    raw = name.encode("ascii", errors="replace")
    if not 1 <= len(raw) <= _U16 or not all(b in _NAME_BYTES for b in raw):
        raise ValueError(f"invalid metadata name {name!r}: 1 to 65535 bytes of a-z 0-9 - _ .")
    return raw


def _utf8(text: str, what: str, limit: int = _U16) -> bytes:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not encodable as UTF-8") from None
    if len(raw) > limit:
        raise ValueError(f"{what} is {len(raw)} bytes, more than {limit}")
    return raw


def _check(value: int, low: int, high: int, what: str) -> int:
    if not low <= value <= high:
        raise ValueError(f"{what} {value} outside {low}..{high}")
    return value


def encode_metadata_block(pairs: Sequence[tuple[str, str]]) -> bytes:
    """A metadata block (section 5). ``ValueError`` for a bad name, an oversized value or count."""
    _check(len(pairs), 0, _U16, "metadata count")
    if not pairs:
        return b"\0\0"
    out = bytearray(len(pairs).to_bytes(2, "big"))
    for name, value in pairs:
        raw_name, raw_value = validate_metadata_name(name), _utf8(value, "metadata value")
        out += len(raw_name).to_bytes(2, "big") + raw_name
        out += len(raw_value).to_bytes(2, "big") + raw_value
    return bytes(out)


def data_frame(stream_id: int, data: bytes | bytearray | memoryview, end_stream: bool = False,
               end_message: bool = False) -> bytes:
    """``encode_frame(Data(...))`` for a caller that has checked the stream id (1 to 2^31-1)
    and the size (at most 2^24-1 bytes, the peer's MAX_FRAME_SIZE in practice)."""
    flags = (FLAG_END_STREAM if end_stream else 0) | (FLAG_END_MESSAGE if end_message else 0)
    return _HEADER.pack(len(data) << 8, flags, stream_id) + data


def open_frame(stream_id: int, method: bytes, timeout_us: int, metadata_block: bytes,
               end_stream: bool = False) -> bytes:
    """``encode_frame(Open(...))`` from the method's UTF-8 (1 to 65535 bytes) and an encoded
    metadata block, for a caller that has checked the stream id (odd, at most 2^31-1) and
    ``timeout_us`` (0 to 2^64-1). Raises ``ValueError`` for a payload over 2^24-1 bytes."""
    n = 10 + len(method) + len(metadata_block)
    _check(n, 0, _U24, "payload length")
    return b"".join((_HEADER.pack(n << 8 | FrameType.OPEN, FLAG_END_STREAM if end_stream else 0, stream_id),
                     len(method).to_bytes(2, "big"), method, timeout_us.to_bytes(8, "big"),
                     metadata_block))


def encode_frame(frame: Frame) -> bytes:
    """The wire bytes of ``frame`` (9-byte header + payload).

    Raises ``ValueError`` for a frame that must not be written: stream id out of range or wrong for
    the type (0 for stream frames, even for OPEN, non-zero for SETTINGS/PING/GOAWAY), empty or
    oversized method, invalid metadata name, field out of its range, payload over 2^24-1 bytes.
    The caller checks the peer's MAX_FRAME_SIZE and MAX_METADATA_SIZE.
    """
    ftype = _TYPE_OF[type(frame)]
    sid = _check(frame.stream_id, 0, MAX_STREAM_ID, "stream id")
    if ftype in _STREAM_TYPES and sid == 0:
        raise ValueError(f"{ftype.name} needs a stream id other than 0")
    if ftype in _CONNECTION_TYPES and sid != 0:
        raise ValueError(f"{ftype.name} belongs on stream 0")
    flags = 0
    if isinstance(frame, Data):
        flags = (FLAG_END_STREAM if frame.end_stream else 0) | (FLAG_END_MESSAGE if frame.end_message else 0)
        payload = bytes(frame.data)
    elif isinstance(frame, Open):
        if sid % 2 == 0:
            raise ValueError("OPEN needs an odd stream id")
        method = _utf8(frame.method, "method")
        if not method:
            raise ValueError("method must not be empty")
        flags = FLAG_END_STREAM if frame.end_stream else 0
        payload = (len(method).to_bytes(2, "big") + method
                   + _check(frame.timeout_us, 0, _U64, "timeout_us").to_bytes(8, "big")
                   + encode_metadata_block(frame.metadata))
    elif isinstance(frame, Headers):
        payload = encode_metadata_block(frame.metadata)
    elif isinstance(frame, Trailers):
        message = _utf8(frame.message, "status message")
        payload = (bytes([_check(frame.status, 0, 255, "status")]) + len(message).to_bytes(2, "big")
                   + message + encode_metadata_block(frame.metadata))
    elif isinstance(frame, Reset):
        payload = _check(frame.error_code, 0, _U32, "error code").to_bytes(4, "big")
    elif isinstance(frame, SettingsFrame):
        payload = b"".join(_check(i, 0, _U16, "setting id").to_bytes(2, "big")
                           + _check(v, 0, _U32, "setting value").to_bytes(4, "big")
                           for i, v in frame.settings)
    elif isinstance(frame, Ping):
        if len(frame.data) != 8:
            raise ValueError("PING data must be exactly 8 bytes")
        flags, payload = (FLAG_ACK if frame.ack else 0), bytes(frame.data)
    elif isinstance(frame, GoAway):
        payload = (_check(frame.last_stream_id, 0, MAX_STREAM_ID, "last_stream_id").to_bytes(4, "big")
                   + _check(frame.error_code, 0, _U32, "error code").to_bytes(4, "big")
                   + _utf8(frame.debug, "debug text", _U24 - 8))
    elif isinstance(frame, Checkpoint):
        payload = _check(frame.consumed, 0, _U64, "consumed").to_bytes(8, "big") + bytes(frame.token)
    else:
        payload = _check(frame.increment, 1, MAX_WINDOW, "increment").to_bytes(4, "big")
    _check(len(payload), 0, _U24, "payload length")
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


# --- Decoder -----------------------------------------------------------------------------------

class _Reader:
    """Reads an OPEN / HEADERS / TRAILERS payload; every malformation is a stream error."""

    def __init__(self, buf: bytes, sid: int, ftype: FrameType) -> None:
        self.buf, self.pos, self.sid, self.ftype = buf, 0, sid, ftype

    def fail(self, code: ErrorCode, reason: str) -> WireError:
        return WireError("stream", code, reason, self.sid, self.ftype)

    def left(self) -> int:
        return len(self.buf) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if self.left() < n:
            raise self.fail(ErrorCode.PROTOCOL_ERROR, f"payload too short for {what}")
        self.pos += n
        return self.buf[self.pos - n:self.pos]

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def text(self, raw: bytes, what: str) -> str:
        try:  # Python's strict codec rejects overlong forms, surrogates and values above U+10FFFF
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(ErrorCode.PROTOCOL_ERROR, f"{what} is not UTF-8") from None

    def metadata(self, limit: int) -> Metadata:
        # The block runs to the end of the payload: its size is checked before it is parsed (5).
        if self.left() > limit:
            raise self.fail(ErrorCode.MESSAGE_TOO_LARGE,
                            f"metadata block of {self.left()} bytes > MAX_METADATA_SIZE {limit}")
        pairs = []
        for _ in range(self.uint(2, "metadata count")):
            name = self.take(self.uint(2, "name length"), "metadata name")
            value = self.take(self.uint(2, "value length"), "metadata value")
            if not name or not all(b in _NAME_BYTES for b in name):
                raise self.fail(ErrorCode.PROTOCOL_ERROR, f"invalid metadata name {name!r}")
            pairs.append((name.decode("ascii"), self.text(value, "metadata value")))
        if self.left():
            raise self.fail(ErrorCode.PROTOCOL_ERROR, f"{self.left()} bytes after the metadata block")
        return tuple(pairs)


_HEADER = struct.Struct(">IBI")  # length (24 bits) and type in one u32, flags, stream id
# per type code: (type, needs a stream id, needs stream 0, exact payload length or -1)
_TYPE_RULES = tuple(
    (t, t in _STREAM_TYPES, t in _CONNECTION_TYPES,
     {FrameType.RESET: 4, FrameType.PING: 8, FrameType.WINDOW_UPDATE: 4}.get(t, -1))
    for t in sorted(FrameType))


def _check_header(buf: bytes | bytearray | memoryview, max_frame_size: int,
                  offset: int = 0) -> tuple[int, FrameType, int, int]:
    """Checks 1 to 5 of section 4.2 on a complete 9-byte header at ``offset``:
    (length, type, flags, stream id)."""
    lt, flags, sid = _HEADER.unpack_from(buf, offset)
    length, code = lt >> 8, lt & 0xFF
    sid &= MAX_STREAM_ID
    if length > max_frame_size:
        raise _conn(ErrorCode.FRAME_SIZE_ERROR, f"length {length} > MAX_FRAME_SIZE {max_frame_size}")
    if code > FrameType.CHECKPOINT:
        raise _conn(ErrorCode.PROTOCOL_ERROR, f"unknown frame type 0x{code:02x}")
    ftype, stream_frame, connection_frame, exact = _TYPE_RULES[code]
    if (stream_frame and sid == 0) or (connection_frame and sid != 0):
        raise _conn(ErrorCode.PROTOCOL_ERROR, f"{ftype.name} on stream {sid}")
    if ftype is FrameType.OPEN and sid % 2 == 0:
        raise _conn(ErrorCode.PROTOCOL_ERROR, f"OPEN on even stream {sid}")
    if ((exact >= 0 and length != exact) or (ftype is FrameType.SETTINGS and length % 6)
            or (ftype in (FrameType.GOAWAY, FrameType.CHECKPOINT) and length < 8)):
        raise _conn(ErrorCode.FRAME_SIZE_ERROR, f"{ftype.name} with a {length}-byte payload")
    return length, ftype, flags, sid


def _decode_payload(ftype: FrameType, flags: int, sid: int, p: bytes, max_metadata_size: int) -> Frame:
    """Check 6 of section 4.2: the payload field by field in wire order."""
    if ftype is FrameType.DATA:
        return Data(sid, p, bool(flags & FLAG_END_STREAM), bool(flags & FLAG_END_MESSAGE))
    if ftype is FrameType.TRAILERS and max_metadata_size >= 2:
        # the common case, no trailing metadata: status, message, an empty block
        n = len(p)
        if n >= 5 and n == int.from_bytes(p[1:3], "big") + 5 and p[n - 2:] == b"\0\0":
            try:
                return Trailers(sid, p[0], p[3:n - 2].decode("utf-8"), ())
            except UnicodeDecodeError:
                pass  # reported below
    elif ftype is FrameType.HEADERS and p == b"\0\0" and max_metadata_size >= 2:
        return Headers(sid, ())
    r = _Reader(p, sid, ftype)
    if ftype is FrameType.OPEN:
        method_len = r.uint(2, "method length")
        if method_len == 0:
            raise r.fail(ErrorCode.PROTOCOL_ERROR, "empty method")
        method = r.text(r.take(method_len, "method"), "method")
        timeout_us = r.uint(8, "timeout")
        return Open(sid, method, timeout_us, r.metadata(max_metadata_size), bool(flags & FLAG_END_STREAM))
    if ftype is FrameType.HEADERS:
        return Headers(sid, r.metadata(max_metadata_size))
    if ftype is FrameType.TRAILERS:
        status = r.uint(1, "status")
        message = r.text(r.take(r.uint(2, "message length"), "status message"), "status message")
        return Trailers(sid, status, message, r.metadata(max_metadata_size))
    if ftype is FrameType.RESET:
        return Reset(sid, int.from_bytes(p, "big"))
    if ftype is FrameType.SETTINGS:
        pairs = []
        for i in range(0, len(p), 6):
            ident, value = int.from_bytes(p[i:i + 2], "big"), int.from_bytes(p[i + 2:i + 6], "big")
            bounds = _SETTING_RANGE.get(ident)
            if bounds is None:
                continue  # unknown ids are ignored whatever their value
            if not bounds[0] <= value <= bounds[1]:
                raise _conn(ErrorCode.PROTOCOL_ERROR, f"setting {ident} value {value} out of range")
            pairs.append((ident, value))
        return SettingsFrame(tuple(pairs))
    if ftype is FrameType.PING:
        return Ping(p, bool(flags & FLAG_ACK))
    if ftype is FrameType.GOAWAY:
        return GoAway(int.from_bytes(p[0:4], "big") & MAX_STREAM_ID, int.from_bytes(p[4:8], "big"),
                      p[8:].decode("utf-8", errors="replace"))
    if ftype is FrameType.CHECKPOINT:
        return Checkpoint(sid, int.from_bytes(p[0:8], "big"), bytes(p[8:]))
    increment = int.from_bytes(p, "big") & MAX_WINDOW
    if increment == 0:
        if sid == 0:
            raise _conn(ErrorCode.PROTOCOL_ERROR, "connection WINDOW_UPDATE with increment 0")
        raise r.fail(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE with increment 0")
    return WindowUpdate(sid, increment)


def decode_frame(buf: bytes | bytearray | memoryview, max_frame_size: int = 65536,
                 max_metadata_size: int = 16384) -> tuple[Frame, int] | None:
    """Decodes the frame at the start of ``buf``: ``(frame, bytes consumed)``, or ``None`` while
    bytes are missing. Raises ``WireError``; header rules apply as soon as 9 bytes are present.

    The limits are the *receiver's own* MAX_FRAME_SIZE and MAX_METADATA_SIZE.
    """
    if len(buf) < HEADER_LEN:
        return None
    length, ftype, flags, sid = _check_header(buf, max_frame_size)
    if len(buf) < HEADER_LEN + length:
        return None
    payload = bytes(buf[HEADER_LEN:HEADER_LEN + length])
    return _decode_payload(ftype, flags, sid, payload, max_metadata_size), HEADER_LEN + length


class FrameDecoder:
    """Incremental decoder over a byte stream that follows the preface.

    ``feed()`` bytes in any pieces, then call ``next_frame()`` until it returns ``None`` (more
    bytes needed). A stream-scope ``WireError`` consumes its frame, so decoding may go on; after a
    connection-scope ``WireError`` the decoder is unusable and raises it again.
    """

    def __init__(self, max_frame_size: int = 65536, max_metadata_size: int = 16384) -> None:
        self.max_frame_size = max_frame_size
        self.max_metadata_size = max_metadata_size
        self._buf = bytearray()
        self._pos = 0
        self._failed: WireError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Appends received bytes."""
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    def next_frame(self) -> Frame | None:
        """The next complete frame, or ``None`` while more bytes are needed. Raises ``WireError``."""
        if self._failed is not None:
            raise self._failed
        buf, start = self._buf, self._pos
        avail = len(buf) - start
        if avail < HEADER_LEN:
            return None
        lt, flags, sid = _HEADER.unpack_from(buf, start)
        code, sid = lt & 0xFF, sid & MAX_STREAM_ID
        if code <= FrameType.TRAILERS and code != FrameType.OPEN and sid and lt >> 8 <= self.max_frame_size:
            # DATA, HEADERS, TRAILERS: the header rules are met, the payload is read here
            end = start + HEADER_LEN + (lt >> 8)
            if len(buf) < end:
                return None
            self._pos = end
            payload = bytes(buf[start + HEADER_LEN:end])
            if code == FrameType.DATA:
                return Data(sid, payload, bool(flags & FLAG_END_STREAM), bool(flags & FLAG_END_MESSAGE))
            try:
                return _decode_payload(_TYPE_RULES[code][0], flags, sid, payload, self.max_metadata_size)
            except WireError as e:
                if e.scope == "connection":
                    self._failed = e
                raise
        try:
            length, ftype, flags, sid = _check_header(self._buf, self.max_frame_size, start)
        except WireError as e:
            self._failed = e
            raise
        if avail < HEADER_LEN + length:
            return None
        end = start + HEADER_LEN + length
        payload = bytes(memoryview(self._buf)[start + HEADER_LEN:end])
        self._pos = end
        try:
            return _decode_payload(ftype, flags, sid, payload, self.max_metadata_size)
        except WireError as e:
            if e.scope == "connection":
                self._failed = e
            raise


def check_preface(buf: bytes | bytearray | memoryview) -> int | None:
    """``len(PREFACE)`` when ``buf`` starts with a valid preface, ``None`` while bytes are missing.

    Raises ``WireError`` (connection scope) at the first byte that rules the peer out:
    PROTOCOL_ERROR for a wrong magic, UNSUPPORTED_VERSION for a version byte other than 1.
    """
    for a, b in zip(bytes(buf[:len(MAGIC)]), MAGIC):
        if a != b:
            raise _conn(ErrorCode.PROTOCOL_ERROR, "not a Baton peer")
    if len(buf) < len(PREFACE):
        return None
    if buf[len(MAGIC)] != VERSION:
        raise _conn(ErrorCode.UNSUPPORTED_VERSION, f"preface version {buf[len(MAGIC)]}")
    return len(PREFACE)
