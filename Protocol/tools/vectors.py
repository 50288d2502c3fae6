#!/usr/bin/env python3
"""Baton/1 reference frame codec and conformance-vector generator (normative text: Protocol/PROTOCOL.md).

    python3 Protocol/tools/vectors.py          # write Protocol/vectors/{frames,preface}.json
    python3 Protocol/tools/vectors.py --check  # compare with the files on disk and decode every vector

Standard library only. The codec covers exactly the rules decidable from one frame (or from the
8-byte preface); connection and stream state are out of its scope.
"""
import json
import os
import re
import sys

MAGIC, VERSION = b"BATON\r\n", 1
PREFACE = MAGIC + bytes([VERSION])
HEADER_LEN = 9
TYPES = ["DATA", "OPEN", "HEADERS", "TRAILERS", "RESET", "SETTINGS", "PING", "GOAWAY", "WINDOW_UPDATE", "CHECKPOINT"]
TYPE_CODE = {name: code for code, name in enumerate(TYPES)}
STREAM_TYPES = {"DATA", "OPEN", "HEADERS", "TRAILERS", "RESET", "CHECKPOINT"}  # stream id must be != 0
CONNECTION_TYPES = {"SETTINGS", "PING", "GOAWAY"}                # stream id must be == 0
EXACT_LENGTH = {"RESET": 4, "PING": 8, "WINDOW_UPDATE": 4}
END_STREAM, END_MESSAGE, ACK = 0x1, 0x2, 0x1
MAX_FRAME_SIZE, INITIAL_WINDOW_SIZE, CONNECTION_WINDOW_SIZE, MAX_METADATA_SIZE, RESUMPTION = 1, 3, 4, 5, 7
MIN_METADATA_SIZE = 64  # room for an empty block, so a status can always be sent
KNOWN_SETTINGS = {1, 2, 3, 4, 5, 6, 7}
DEFAULTS = {"max_frame_size": 65536, "max_metadata_size": 16384}
MAX_31, RESERVED = 0x7FFFFFFF, 0x80000000
NAME_RE = re.compile(rb"[a-z0-9\-_.]+")


class WireError(Exception):
    def __init__(self, scope, code, reason, stream_id=None):
        super().__init__(f"{scope} {code}: {reason}")
        self.scope, self.code, self.reason, self.stream_id = scope, code, reason, stream_id

    def as_json(self):
        out = {"scope": self.scope, "code": self.code}
        if self.scope == "stream":
            out["stream_id"] = self.stream_id
        return out


def conn_error(code, reason):
    return WireError("connection", code, reason)


# --- Frame objects: the JSON shape the vectors use -------------------------------------------

def data(sid, payload=b"", end_stream=False, end_message=False):
    return {"type": "DATA", "stream_id": sid, "end_stream": end_stream, "end_message": end_message,
            "data": payload.hex()}

def open_(sid, method, timeout_us=0, metadata=(), end_stream=False):
    return {"type": "OPEN", "stream_id": sid, "end_stream": end_stream, "method": method,
            "timeout_us": timeout_us, "metadata": [list(p) for p in metadata]}

def headers(sid, metadata=()):
    return {"type": "HEADERS", "stream_id": sid, "metadata": [list(p) for p in metadata]}

def trailers(sid, status, message="", metadata=()):
    return {"type": "TRAILERS", "stream_id": sid, "status": status, "message": message,
            "metadata": [list(p) for p in metadata]}

def reset(sid, code):
    return {"type": "RESET", "stream_id": sid, "error_code": code}

def settings(pairs):
    return {"type": "SETTINGS", "settings": [list(p) for p in pairs]}

def ping(payload, ack=False):
    return {"type": "PING", "ack": ack, "data": payload.hex()}

def goaway(last, code, debug=""):
    return {"type": "GOAWAY", "last_stream_id": last, "error_code": code, "debug": debug}

def window_update(sid, increment):
    return {"type": "WINDOW_UPDATE", "stream_id": sid, "increment": increment}

def checkpoint(sid, consumed, token=b""):
    return {"type": "CHECKPOINT", "stream_id": sid, "consumed": consumed, "token": token.hex()}


# --- Encoder ---------------------------------------------------------------------------------

def u16(n): return n.to_bytes(2, "big")
def u32(n): return n.to_bytes(4, "big")
def u64(n): return n.to_bytes(8, "big")
def utf8(s): return s.encode("utf-8") if isinstance(s, str) else s  # bytes pass through (bad input)

def header(length, ftype, flags, sid):
    """The 9-byte header. ftype is a name or a raw number; sid may carry the reserved bit."""
    code = TYPE_CODE[ftype] if isinstance(ftype, str) else ftype
    return length.to_bytes(3, "big") + bytes([code, flags]) + u32(sid)

def raw(ftype, flags, sid, payload=b""):
    return header(len(payload), ftype, flags, sid) + payload

def md_block(pairs):
    out = u16(len(pairs))
    for name, value in pairs:
        out += u16(len(utf8(name))) + utf8(name) + u16(len(utf8(value))) + utf8(value)
    return out

def open_payload(method, timeout_us=0, pairs=()):
    return u16(len(utf8(method))) + utf8(method) + u64(timeout_us) + md_block(pairs)

def trailers_payload(status, message="", pairs=()):
    return bytes([status]) + u16(len(utf8(message))) + utf8(message) + md_block(pairs)

def encode_frame(f):
    t, sid, flags = f["type"], f.get("stream_id", 0), 0
    if t == "DATA":
        flags = (END_STREAM if f["end_stream"] else 0) | (END_MESSAGE if f["end_message"] else 0)
        payload = bytes.fromhex(f["data"])
    elif t == "OPEN":
        flags = END_STREAM if f["end_stream"] else 0
        payload = open_payload(f["method"], f["timeout_us"], f["metadata"])
    elif t == "HEADERS":
        payload = md_block(f["metadata"])
    elif t == "TRAILERS":
        payload = trailers_payload(f["status"], f["message"], f["metadata"])
    elif t == "RESET":
        payload = u32(f["error_code"])
    elif t == "SETTINGS":
        payload = b"".join(u16(i) + u32(v) for i, v in f["settings"])
    elif t == "PING":
        flags, payload = (ACK if f["ack"] else 0), bytes.fromhex(f["data"])
    elif t == "GOAWAY":
        payload = u32(f["last_stream_id"]) + u32(f["error_code"]) + utf8(f["debug"])
    elif t == "CHECKPOINT":
        payload = u64(f["consumed"]) + bytes.fromhex(f["token"])
    else:
        payload = u32(f["increment"])
    return raw(t, flags, sid, payload)


# --- Decoder ---------------------------------------------------------------------------------

class Reader:
    """Reads an OPEN/HEADERS/TRAILERS payload; any malformation is a stream error."""

    def __init__(self, buf, sid):
        self.buf, self.pos, self.sid = buf, 0, sid

    def fail(self, code, reason):
        return WireError("stream", code, reason, self.sid)

    def left(self):
        return len(self.buf) - self.pos

    def take(self, n, what):
        if self.left() < n:
            raise self.fail("PROTOCOL_ERROR", f"truncated {what}")
        self.pos += n
        return self.buf[self.pos - n:self.pos]

    def int(self, n, what):
        return int.from_bytes(self.take(n, what), "big")

    def text(self, n, what, raw=None):
        try:  # strict UTF-8: no overlong forms, no surrogates
            return (self.take(n, what) if raw is None else raw).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("PROTOCOL_ERROR", f"{what} is not UTF-8") from None

    def metadata(self, limit):
        # The block runs to the end of the payload, so its size is known, and checked, before parsing.
        if self.left() > limit:
            raise self.fail("MESSAGE_TOO_LARGE", f"metadata block of {self.left()} bytes > {limit}")
        pairs = []
        for _ in range(self.int(2, "metadata count")):
            name = self.take(self.int(2, "name length"), "metadata name")
            value = self.take(self.int(2, "value length"), "metadata value")
            if not NAME_RE.fullmatch(name):
                raise self.fail("PROTOCOL_ERROR", f"bad metadata name {name!r}")
            pairs.append([name.decode("ascii"), self.text(0, "metadata value", raw=value)])
        if self.left():
            raise self.fail("PROTOCOL_ERROR", f"{self.left()} bytes after the metadata block")
        return pairs


def decode_frame(buf, max_frame_size=DEFAULTS["max_frame_size"],
                 max_metadata_size=DEFAULTS["max_metadata_size"]):
    """Decodes the frame at the start of buf: (frame, consumed), or None while bytes are missing.

    Raises WireError. Header rules apply as soon as the 9 header bytes are present, in the order
    PROTOCOL.md gives ("Frame header"); payload rules once the whole payload is present.
    """
    if len(buf) < HEADER_LEN:
        return None
    length, code, flags = int.from_bytes(buf[0:3], "big"), buf[3], buf[4]
    sid = int.from_bytes(buf[5:9], "big") & MAX_31
    if length > max_frame_size:
        raise conn_error("FRAME_SIZE_ERROR", f"length {length} > MAX_FRAME_SIZE {max_frame_size}")
    if code >= len(TYPES):
        raise conn_error("PROTOCOL_ERROR", f"unknown frame type 0x{code:02x}")
    t = TYPES[code]
    if (t in STREAM_TYPES and sid == 0) or (t in CONNECTION_TYPES and sid != 0):
        raise conn_error("PROTOCOL_ERROR", f"{t} on stream {sid}")
    if t == "OPEN" and sid % 2 == 0:
        raise conn_error("PROTOCOL_ERROR", f"OPEN on even stream {sid}")
    if (EXACT_LENGTH.get(t, length) != length or (t == "SETTINGS" and length % 6)
            or (t in ("GOAWAY", "CHECKPOINT") and length < 8)):
        raise conn_error("FRAME_SIZE_ERROR", f"{t} with a {length}-byte payload")
    if len(buf) < HEADER_LEN + length:
        return None
    p = bytes(buf[HEADER_LEN:HEADER_LEN + length])
    r = Reader(p, sid)
    if t == "DATA":
        f = data(sid, p, bool(flags & END_STREAM), bool(flags & END_MESSAGE))
    elif t == "OPEN":
        method_len = r.int(2, "method length")
        if method_len == 0:
            raise r.fail("PROTOCOL_ERROR", "empty method")
        method = r.text(method_len, "method")
        f = open_(sid, method, r.int(8, "timeout"), r.metadata(max_metadata_size), bool(flags & END_STREAM))
    elif t == "HEADERS":
        f = headers(sid, r.metadata(max_metadata_size))
    elif t == "TRAILERS":
        status = r.int(1, "status")
        message = r.text(r.int(2, "message length"), "status message")
        f = trailers(sid, status, message, r.metadata(max_metadata_size))
    elif t == "RESET":
        f = reset(sid, int.from_bytes(p, "big"))
    elif t == "SETTINGS":
        pairs = []
        for i in range(0, length, 6):
            ident, value = int.from_bytes(p[i:i + 2], "big"), int.from_bytes(p[i + 2:i + 6], "big")
            if ident not in KNOWN_SETTINGS:
                continue  # skipped whatever its value
            if ident == MAX_FRAME_SIZE and not 1024 <= value <= 16777215:
                raise conn_error("PROTOCOL_ERROR", f"MAX_FRAME_SIZE {value} out of range")
            if ident in (INITIAL_WINDOW_SIZE, CONNECTION_WINDOW_SIZE) and value > MAX_31:
                raise conn_error("PROTOCOL_ERROR", f"window size {value} > 2^31-1")
            if ident == MAX_METADATA_SIZE and value < MIN_METADATA_SIZE:
                raise conn_error("PROTOCOL_ERROR", f"MAX_METADATA_SIZE {value} < {MIN_METADATA_SIZE}")
            if ident == RESUMPTION and value > 1:
                raise conn_error("PROTOCOL_ERROR", f"RESUMPTION {value} is neither 0 nor 1")
            pairs.append([ident, value])
        f = settings(pairs)
    elif t == "PING":
        f = ping(p, bool(flags & ACK))
    elif t == "GOAWAY":
        f = goaway(int.from_bytes(p[0:4], "big") & MAX_31, int.from_bytes(p[4:8], "big"),
                   p[8:].decode("utf-8", errors="replace"))
    elif t == "CHECKPOINT":
        f = checkpoint(sid, int.from_bytes(p[0:8], "big"), bytes(p[8:]))
    else:  # WINDOW_UPDATE
        increment = int.from_bytes(p, "big") & MAX_31
        if increment == 0 and sid == 0:
            raise conn_error("PROTOCOL_ERROR", "connection WINDOW_UPDATE with increment 0")
        if increment == 0:
            raise r.fail("PROTOCOL_ERROR", "WINDOW_UPDATE with increment 0")
        f = window_update(sid, increment)
    return f, HEADER_LEN + length


def check_preface(buf):
    """8 when buf starts with a valid preface, None while bytes are missing; raises WireError as
    soon as a received byte rules the peer out."""
    if any(a != b for a, b in zip(buf, MAGIC)):
        raise conn_error("PROTOCOL_ERROR", "not a Baton peer")
    if len(buf) < len(PREFACE):
        return None
    if buf[len(MAGIC)] != VERSION:
        raise conn_error("UNSUPPORTED_VERSION", f"preface version {buf[len(MAGIC)]}")
    return len(PREFACE)


# --- Vectors ---------------------------------------------------------------------------------

M = "echo.Echo/Unary"
UNARY_CLIENT = [open_(1, M, 1000000, [("trace-id", "abc")]), data(1, b"hi", True, True)]
UNARY_SERVER = [headers(1, [("server", "baton")]), data(1, b"hi", end_message=True), trailers(1, 0)]
P8 = bytes(range(1, 9))

# (name, description, frame[, raw bytes: only for decode_only vectors])
VALID = [
    ("data_message", "a whole message in one frame", data(1, b"hello", end_message=True)),
    ("data_fragment", "a fragment: no END_MESSAGE", data(1, b"hel")),
    ("data_message_end_stream", "last message and half-close", data(1, b"\x00\x01\xff", True, True)),
    ("data_empty_message", "empty message: length 0, END_MESSAGE", data(3, end_message=True)),
    ("data_half_close", "pure half-close: length 0, END_STREAM only", data(3, end_stream=True)),
    ("data_empty_message_end_stream", "empty last message", data(5, b"", True, True)),
    ("data_max_stream_id", "highest stream id, 2^31-1", data(MAX_31, b"x", end_message=True)),
    ("open_minimal", "no deadline, empty metadata block", open_(1, M)),
    ("open_with_timeout", "deadline 1.5 s", open_(3, M, 1500000)),
    ("open_with_metadata", "a repeated name and an empty value; order is kept",
     open_(5, "echo.Echo/Chat", 0, [("authorization", "Bearer abc"), ("x-trace", "1"), ("x-trace", "2"),
                                    ("empty", "")])),
    ("open_end_stream", "OPEN that half-closes at once (no request message)",
     open_(7, "echo.Echo/Collect", 250000, [("x-client", "baton-test")], end_stream=True)),
    ("open_utf8", "non-ASCII UTF-8 method and metadata values",
     open_(9, "grüße.Dienst/Grüßen", 0, [("greeting", "héllo wörld ☕"), ("emoji", "😀")])),
    ("open_large_timeout", "timeout_us 2^53-1: high word set, still exact in any JSON reader",
     open_(11, M, 2**53 - 1)),
    ("headers_empty", "empty metadata block", headers(1)),
    ("headers_metadata", "response metadata", headers(1, [("x-served-by", "node-a"), ("x.cache_state", "miss")])),
    ("trailers_ok", "status OK, empty message and metadata", trailers(1, 0)),
    ("trailers_unavailable", "status 14 with a message and metadata",
     trailers(3, 14, "server is stopping", [("retry-after-ms", "100")])),
    ("trailers_utf8_message", "non-ASCII status message", trailers(5, 3, "ungültiger Wert: ½")),
    ("trailers_unknown_status", "status 200 decodes as is (applications map it to UNKNOWN)", trailers(7, 200)),
    ("reset_cancel", "CANCEL", reset(1, 7)),
    ("reset_refused_stream", "REFUSED_STREAM: not processed", reset(9, 6)),
    ("reset_unknown_code", "unknown code decodes as is (handled as INTERNAL_ERROR)", reset(3, 0xDEADBEEF)),
    ("settings_defaults", "all six ids, default values",
     settings([(1, 65536), (2, 1024), (3, 1048576), (4, 16777216), (5, 16384), (6, 4194304)])),
    ("settings_boundaries", "every allowed range boundary; repeated ids (the last one wins)",
     settings([(1, 1024), (1, 16777215), (2, 0), (2, 2**32 - 1), (3, 0), (3, MAX_31), (4, 0), (4, MAX_31),
               (5, 64), (5, 2**32 - 1), (6, 0), (6, 2**32 - 1)])),
    ("settings_empty", "no entries: every value stays at its default", settings([])),
    ("settings_resumption", "1.1: the sender implements resumable streams", settings([(7, 1)])),
    ("settings_resumption_off", "RESUMPTION 0: as a 1.0 endpoint", settings([(7, 0)])),
    ("checkpoint_empty_token", "1.1: a checkpoint with an empty token", checkpoint(1, 1)),
    ("checkpoint_token", "1.1: a cursor token after 42 consumed requests", checkpoint(5, 42, b"cursor:1234")),
    ("ping", "PING", ping(P8)),
    ("ping_ack", "PING ACK echoing the same 8 bytes", ping(P8, ack=True)),
    ("goaway_graceful_first", "graceful stop phase 1: last id 2^31-1, empty debug", goaway(MAX_31, 0)),
    ("goaway_final", "graceful stop phase 2", goaway(5, 0, "server stopping")),
    ("goaway_too_many_pings", "ping-flood policing", goaway(7, 8, "too many pings")),
    ("goaway_utf8_debug", "connection error, non-ASCII debug text", goaway(0, 2, "arrêt d'urgence ⚠")),
    ("window_update_connection", "connection credit", window_update(0, 65536)),
    ("window_update_stream", "largest increment, on a stream", window_update(3, MAX_31)),
    # decode_only: not what an encoder writes, but what a decoder must accept.
    ("data_reserved_bit", "reserved stream-id bit set: masked off", data(1, b"hi", end_message=True),
     raw("DATA", END_MESSAGE, RESERVED | 1, b"hi")),
    ("data_undefined_flags", "flags 0xfe: of these only END_MESSAGE is defined",
     data(1, b"hi", end_message=True), raw("DATA", 0xFE, 1, b"hi")),
    ("data_all_flags", "flags 0xff", data(1, b"", True, True), raw("DATA", 0xFF, 1)),
    ("open_undefined_flags", "flags 0xfe: END_STREAM clear", open_(1, M), raw("OPEN", 0xFE, 1, open_payload(M))),
    ("headers_undefined_flags", "HEADERS defines no flags", headers(1), raw("HEADERS", 0xFF, 1, md_block([]))),
    ("trailers_undefined_flags", "TRAILERS defines no flags", trailers(1, 0),
     raw("TRAILERS", 0xFF, 1, trailers_payload(0))),
    ("reset_undefined_flags", "RESET defines no flags", reset(1, 7), raw("RESET", 0xFF, 1, u32(7))),
    ("settings_unknown_ids", "unknown ids 7 and 0xffff are skipped whatever their value",
     settings([(1, 65536), (2, 100)]),
     raw("SETTINGS", 0, 0, u16(1) + u32(65536) + u16(0x7E) + u32(12345) + u16(0xFFFF) + u32(2**32 - 1)
         + u16(2) + u32(100))),
    ("settings_only_unknown_id", "id 0 is unknown: skipped; undefined flags", settings([]),
     raw("SETTINGS", 0xFF, 0, u16(0) + u32(5))),
    ("ping_undefined_flags", "flags 0xfe: not an ACK", ping(bytes(8)), raw("PING", 0xFE, 0, bytes(8))),
    ("ping_reserved_bit", "stream id 0x80000000 is stream 0", ping(bytes(8)), raw("PING", 0, RESERVED, bytes(8))),
    ("goaway_reserved_bit", "reserved bit of last_stream_id masked off", goaway(5, 0),
     raw("GOAWAY", 0, 0, u32(RESERVED | 5) + u32(0))),
    ("goaway_invalid_utf8_debug", "debug text is decoded leniently: 0xff becomes U+FFFD",
     goaway(3, 2, "ab\ufffdcd"), raw("GOAWAY", 0, 0, u32(3) + u32(2) + b"ab\xffcd")),
    ("window_update_reserved_bit", "reserved bit of the increment masked off", window_update(0, 1024),
     raw("WINDOW_UPDATE", 0, 0, u32(RESERVED | 1024))),
    ("window_update_stream_reserved_bit", "reserved stream-id bit masked off", window_update(3, 1),
     raw("WINDOW_UPDATE", 0, RESERVED | 3, u32(1))),
]

SEQUENCES = [
    ("unary_call_client_to_server", UNARY_CLIENT),
    ("unary_call_server_to_client", UNARY_SERVER),
    ("client_streaming_request", [open_(3, "echo.Echo/Collect"), data(3, b"ab"), data(3, b"c", end_message=True),
                                  data(3, end_message=True), data(3, end_stream=True)]),
    ("server_streaming_response", [data(5, b"1", end_message=True), data(5, b"2", end_message=True),
                                   trailers(5, 0)]),
    ("trailers_only_response", [trailers(7, 12, "unknown method echo.Echo/Nope")]),
    ("interleaved_streams", [data(1, b"ab"), data(3, b"x", True, True), window_update(0, 3),
                             data(1, b"c", end_message=True)]),
    ("graceful_stop_server", [goaway(MAX_31, 0, "server stopping"), ping(b"drain\x00\x00\x01"),
                              goaway(9, 0, "server stopping"), reset(11, 6), trailers(9, 0)]),
]


def invalid_vectors():
    out = []

    def bad(name, description, b, code, stream_id=None, max_frame_size=None, max_metadata_size=None):
        # Every input is one whole frame, except size errors, which carry the 9-byte header only.
        assert len(b) == (HEADER_LEN if code == "FRAME_SIZE_ERROR" and len(b) == HEADER_LEN
                          else HEADER_LEN + int.from_bytes(b[:3], "big")), name
        v = {"name": name, "description": description, "hex": b.hex()}
        if max_frame_size is not None:
            v["max_frame_size"] = max_frame_size
        if max_metadata_size is not None:
            v["max_metadata_size"] = max_metadata_size
        v["error"] = {"scope": "connection" if stream_id is None else "stream", "code": code}
        if stream_id is not None:
            v["error"]["stream_id"] = stream_id
        out.append(v)

    pe, fs, mt = "PROTOCOL_ERROR", "FRAME_SIZE_ERROR", "MESSAGE_TOO_LARGE"
    # Connection scope, decided from the header alone.
    bad("frame_too_large_header_only", "length 1025 > MAX_FRAME_SIZE 1024; only the header is present",
        header(1025, "DATA", 0, 1), fs, max_frame_size=1024)
    bad("frame_too_large_default_limit", "length 65537 > default MAX_FRAME_SIZE; header only",
        header(65537, "OPEN", 0, 1), fs)
    bad("frame_too_large_before_type", "the size is checked before the type", header(1025, 0x09, 0, 0), fs,
        max_frame_size=1024)
    bad("unknown_type_0x0a", "first undefined type", raw(0x0A, 0, 0), pe)
    bad("unknown_type_0xff", "undefined type with a payload", raw(0xFF, 0, 1, u32(0)), pe)
    for t, payload in [("DATA", b"hi"), ("OPEN", open_payload(M)), ("HEADERS", md_block([])),
                       ("TRAILERS", trailers_payload(0)), ("RESET", u32(7)), ("CHECKPOINT", bytes(8))]:
        bad(f"{t.lower()}_on_stream_0", f"{t} needs a stream", raw(t, 0, 0, payload), pe)
    bad("data_on_reserved_bit_only_stream", "id 0x80000000 is stream 0", raw("DATA", 0, RESERVED, b"x"), pe)
    for t, payload in [("SETTINGS", b""), ("PING", bytes(8)), ("GOAWAY", bytes(8))]:
        bad(f"{t.lower()}_on_stream_1", f"{t} belongs on stream 0", raw(t, 0, 1, payload), pe)
    bad("ping_on_stream_1_bad_length", "the stream rule is checked before the length rule",
        raw("PING", 0, 1, bytes(7)), pe)
    bad("open_even_stream_id", "client stream ids are odd", raw("OPEN", 0, 2, open_payload(M)), pe)
    for t, sid, n in [("SETTINGS", 0, 5), ("SETTINGS", 0, 7), ("PING", 0, 0), ("PING", 0, 7), ("PING", 0, 9),
                      ("RESET", 1, 3), ("RESET", 1, 5), ("WINDOW_UPDATE", 0, 3), ("WINDOW_UPDATE", 0, 5),
                      ("WINDOW_UPDATE", 1, 0), ("GOAWAY", 0, 0), ("GOAWAY", 0, 7), ("CHECKPOINT", 1, 0),
                      ("CHECKPOINT", 1, 7)]:
        bad(f"{t.lower()}_stream_{sid}_length_{n}", f"{t} with a {n}-byte payload", raw(t, 0, sid, bytes(n)), fs)
    # Connection scope, decided from the payload.
    bad("window_update_connection_zero", "increment 0 on stream 0", raw("WINDOW_UPDATE", 0, 0, u32(0)), pe)
    bad("window_update_connection_reserved_bit_only", "increment 0x80000000 masks to 0",
        raw("WINDOW_UPDATE", 0, 0, u32(RESERVED)), pe)
    for name, ident, value in [("max_frame_size_1023", 1, 1023), ("max_frame_size_0", 1, 0),
                               ("max_frame_size_16777216", 1, 16777216), ("initial_window_2_31", 3, 2**31),
                               ("initial_window_max_u32", 3, 2**32 - 1), ("connection_window_2_31", 4, 2**31),
                               ("max_metadata_size_0", 5, 0), ("max_metadata_size_63", 5, 63),
                               ("resumption_2", 7, 2)]:
        bad(f"settings_{name}", "value out of range (after a valid entry)",
            raw("SETTINGS", 0, 0, u16(2) + u32(10) + u16(ident) + u32(value)), pe)
    bad("settings_invalid_after_unknown", "an unknown id is skipped; the invalid one after it is not",
        raw("SETTINGS", 0, 0, u16(0x42) + u32(1) + u16(1) + u32(0)), pe)
    # Stream scope: the frame boundary is intact; the receiver resets that stream.
    bad("window_update_stream_zero", "increment 0 on a stream", raw("WINDOW_UPDATE", 0, 5, u32(0)), pe, 5)
    bad("window_update_stream_reserved_bit_only", "increment 0x80000000 masks to 0",
        raw("WINDOW_UPDATE", 0, 7, u32(RESERVED)), pe, 7)
    head, over = open_payload(M)[:-2], u16(16) + b"hello"  # OPEN without its block; a length overrun
    for name, description, payload, code, limit in [
            ("empty_payload", "no method length", b"", pe, None),
            ("truncated_method_length", "1 of 2 method-length bytes", b"\x00", pe, None),
            ("truncated_method", "method length 16 beyond a 5-byte payload rest", over, pe, None),
            ("truncated_timeout", "4 of the 8 timeout bytes", u16(1) + b"m" + bytes(4), pe, None),
            ("missing_metadata_block", "no metadata count", u16(1) + b"m" + u64(0), pe, None),
            ("empty_method", "method length 0", u16(0) + u64(0) + md_block([]), pe, None),
            ("method_invalid_utf8", "method bytes 0xc3 0x28", open_payload(b"echo\xc3\x28"), pe, None),
            ("method_overlong_utf8", "overlong encoding of '/'", open_payload(b"a\xc0\xafb"), pe, None),
            ("method_surrogate_utf8", "an encoded UTF-16 surrogate", open_payload(b"a\xed\xa0\x80"), pe, None),
            ("trailing_bytes", "a byte after the metadata block", open_payload(M) + b"\x00", pe, None),
            ("metadata_count_beyond", "count 2, one pair", head + u16(2) + md_block([("a", "b")])[2:], pe, None),
            ("metadata_value_beyond", "value length 10, 3 bytes present",
             head + u16(1) + u16(1) + b"a" + u16(10) + b"abc", pe, None),
            ("metadata_name_uppercase", "name 'X-Trace'", open_payload(M, 0, [("ok", "1"), ("X-Trace", "v")]),
             pe, None),
            ("metadata_name_empty", "empty name", open_payload(M, 0, [("ok", "1"), ("", "v")]), pe, None),
            ("metadata_name_space", "name 'x trace'", open_payload(M, 0, [("x trace", "v")]), pe, None),
            ("metadata_name_colon", "name ':path'", open_payload(M, 0, [(":path", "/")]), pe, None),
            ("metadata_name_non_ascii", "name 'grüße'", open_payload(M, 0, [("grüße", "v")]), pe, None),
            ("metadata_value_invalid_utf8", "value 0xff", open_payload(M, 0, [("v", b"\xff")]), pe, None),
            ("metadata_too_large", "65-byte block > MAX_METADATA_SIZE 64",
             open_payload(M, 0, [("x-pad", "p" * 54)]), mt, 64),
            ("metadata_too_large_before_parse", "the size is checked before the block is parsed",
             open_payload(M, 0, [("X-PAD", "p" * 10)]), mt, 16)]:
        bad(f"open_{name}", description, raw("OPEN", 0, 3, payload), code, 3, max_metadata_size=limit)
    bad("open_malformed_reserved_bit", "the stream error names the masked id",
        raw("OPEN", 0, RESERVED | 3, u16(0) + u64(0) + md_block([])), pe, 3)
    for t, sid, build in [("HEADERS", 1, md_block), ("TRAILERS", 5, lambda m: trailers_payload(13, "boom", m))]:
        n = t.lower()
        bad(f"{n}_empty_payload", "no payload at all", raw(t, 0, sid), pe, sid)
        bad(f"{n}_truncated", "metadata count 1, no pairs", raw(t, 0, sid, build([])[:-2] + u16(1)), pe, sid)
        bad(f"{n}_trailing_bytes", "a byte after the block", raw(t, 0, sid, build([]) + b"\x00"), pe, sid)
        bad(f"{n}_metadata_name_uppercase", "name 'Server'", raw(t, 0, sid, build([("Server", "x")])), pe, sid)
        bad(f"{n}_metadata_value_invalid_utf8", "value 0xc3 0x28", raw(t, 0, sid, build([("v", b"\xc3\x28")])),
            pe, sid)
        bad(f"{n}_metadata_too_large", "23-byte block > MAX_METADATA_SIZE 22",
            raw(t, 0, sid, build([("pad", "p" * 14)])), mt, sid, max_metadata_size=22)
    bad("trailers_truncated_message_length", "status and 1 of 2 length bytes", raw("TRAILERS", 0, 5, b"\x00\x00"),
        pe, 5)
    bad("trailers_truncated_message", "message length 16 beyond a 5-byte payload rest",
        raw("TRAILERS", 0, 5, b"\x0d" + over), pe, 5)
    bad("trailers_missing_metadata_block", "no metadata count", raw("TRAILERS", 0, 5, trailers_payload(0)[:-2]),
        pe, 5)
    bad("trailers_message_invalid_utf8", "message 0xff", raw("TRAILERS", 0, 5, trailers_payload(2, b"\xff")), pe, 5)
    return out


def frames_doc():
    valid = [{"name": v[0], "description": v[1], "hex": (v[3] if len(v) > 3 else encode_frame(v[2])).hex(),
              "frame": v[2], "decode_only": len(v) > 3} for v in VALID]
    seqs = [{"name": n, "hex": b"".join(map(encode_frame, fs)).hex(), "frames": fs} for n, fs in SEQUENCES]
    return {"version": 1, "defaults": dict(DEFAULTS), "valid": valid, "sequences": seqs,
            "invalid": invalid_vectors()}


def preface_doc():
    bad = [("wrong_magic_http1", b"GET / HTTP/1.1\r\n", "PROTOCOL_ERROR"),
           ("wrong_magic_http2", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "PROTOCOL_ERROR"),
           ("wrong_magic_tls", bytes.fromhex("1603010200010001"), "PROTOCOL_ERROR"),
           ("wrong_magic_lowercase", b"baton\r\n\x01", "PROTOCOL_ERROR"),
           ("wrong_magic_bare_lf", b"BATON\n\x01\x00", "PROTOCOL_ERROR"),
           ("version_2", MAGIC + b"\x02", "UNSUPPORTED_VERSION"),
           ("version_0", MAGIC + b"\x00", "UNSUPPORTED_VERSION"),
           ("version_255", MAGIC + b"\xff", "UNSUPPORTED_VERSION")]
    return {"version": 1, "valid": [{"name": "baton_v1", "hex": PREFACE.hex()}],
            "invalid": [{"name": n, "hex": b.hex(), "error": {"scope": "connection", "code": c}}
                        for n, b, c in bad]}


# --- Verification and entry point -----------------------------------------------------------

def verify(frames, preface):
    """Decodes every vector with the reference codec; returns the problems found."""
    problems, lim = [], frames["defaults"]
    for v in frames["valid"]:
        b, name = bytes.fromhex(v["hex"]), f"valid {v['name']}"
        try:
            if any(decode_frame(b[:k]) is not None for k in range(len(b))):
                problems.append(f"{name}: decoded before every byte had arrived")
            got = decode_frame(b, lim["max_frame_size"], lim["max_metadata_size"])
        except WireError as e:
            problems.append(f"{name}: decoder raised {e}")
            continue
        if got != (v["frame"], len(b)):
            problems.append(f"{name}: decoded {got}, expected {v['frame']}")
        if (encode_frame(v["frame"]) == b) == v["decode_only"]:
            problems.append(f"{name}: decode_only is {v['decode_only']}, yet encoding the frame "
                            f"{'gives' if v['decode_only'] else 'does not give'} the hex")
    for s in frames["sequences"]:
        b, got = bytes.fromhex(s["hex"]), []
        try:
            while b and (step := decode_frame(b, lim["max_frame_size"], lim["max_metadata_size"])):
                got.append(step[0])
                b = b[step[1]:]
        except WireError as e:
            problems.append(f"sequence {s['name']}: decoder raised {e}")
        if got != s["frames"] or b:
            problems.append(f"sequence {s['name']}: decoded {got}, {len(b)} bytes left over")
    for v in frames["invalid"]:
        try:
            got = decode_frame(bytes.fromhex(v["hex"]), v.get("max_frame_size", lim["max_frame_size"]),
                               v.get("max_metadata_size", lim["max_metadata_size"]))
            problems.append(f"invalid {v['name']}: decoded {got} instead of failing")
        except WireError as e:
            if e.as_json() != v["error"]:
                problems.append(f"invalid {v['name']}: {e.as_json()} ({e.reason}), expected {v['error']}")
    for v in preface["valid"]:
        if check_preface(bytes.fromhex(v["hex"])) != len(PREFACE):
            problems.append(f"preface {v['name']}: not accepted")
    for v in preface["invalid"]:
        try:
            check_preface(bytes.fromhex(v["hex"]))
            problems.append(f"preface {v['name']}: accepted")
        except WireError as e:
            if e.as_json() != v["error"]:
                problems.append(f"preface {v['name']}: {e.as_json()}, expected {v['error']}")
    for kind, items in [("valid", frames["valid"]), ("sequences", frames["sequences"]),
                        ("invalid", frames["invalid"]), ("preface", preface["valid"] + preface["invalid"])]:
        names = [v["name"] for v in items]
        problems += [f"{kind}: duplicate name {n}" for n in sorted(set(names)) if names.count(n) > 1]
    return problems


def render(doc):
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def main(argv):
    if argv not in ([], ["--check"]):
        sys.exit("usage: vectors.py [--check]")
    out_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vectors")
    docs = {"frames.json": frames_doc(), "preface.json": preface_doc()}
    if not argv:
        problems = verify(docs["frames.json"], docs["preface.json"])
        if problems:
            sys.exit("generated vectors fail the reference decoder:\n  " + "\n  ".join(problems))
        os.makedirs(out_dir, exist_ok=True)
        for name, doc in docs.items():
            with open(os.path.join(out_dir, name), "w", encoding="utf-8", newline="\n") as f:
                f.write(render(doc))
        print(f"wrote {' and '.join(docs)} in {out_dir}")
        return
    problems, disk = [], {}
    for name, doc in docs.items():
        path = os.path.join(out_dir, name)
        try:
            with open(path, encoding="utf-8", newline="") as f:
                text = f.read()
            disk[name] = json.loads(text)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: unreadable ({e})")
            disk[name] = doc
            continue
        if text != render(doc):
            problems.append(f"{path} differs from the generator's output (run vectors.py to regenerate)")
    problems += verify(disk["frames.json"], disk["preface.json"])
    if problems:
        sys.exit("vector check FAILED:\n  " + "\n  ".join(problems))
    f, p = disk["frames.json"], disk["preface.json"]
    print(f"vectors OK: frames.json {len(f['valid'])} valid, {len(f['sequences'])} sequences, "
          f"{len(f['invalid'])} invalid; preface.json {len(p['valid'])} valid, {len(p['invalid'])} invalid")


if __name__ == "__main__":
    main(sys.argv[1:])
