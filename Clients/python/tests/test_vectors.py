"""Conformance vectors (PROTOCOL.md section 17): every vector of frames.json and preface.json,
decoded whole and byte at a time, and encoded back where the spec says encoding must match."""

from __future__ import annotations

import json
import os
import unittest
from typing import Any

from baton import wire  # noqa: E402
from baton.wire import (Checkpoint, Data, ErrorCode, Frame, FrameDecoder, GoAway, Headers, Open,  # noqa: E402
                        Ping, Reset, SettingsFrame, Trailers, WindowUpdate, WireError)

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.environ.get("BATON_VECTORS") or os.path.join(HERE, "..", "..", "..", "Protocol", "vectors")


def load(name: str) -> dict[str, Any]:
    with open(os.path.join(VECTORS, name), encoding="utf-8") as f:
        return json.load(f)


FRAMES, PREFACE = load("frames.json"), load("preface.json")
DEFAULTS = FRAMES["defaults"]


def pairs(items: list[list[Any]]) -> tuple[tuple[Any, Any], ...]:
    return tuple((a, b) for a, b in items)


def from_json(j: dict[str, Any]) -> Frame:
    """A vector's frame object (section 17) as a ``wire`` frame."""
    t = j["type"]
    if t == "DATA":
        return Data(j["stream_id"], bytes.fromhex(j["data"]), j["end_stream"], j["end_message"])
    if t == "OPEN":
        return Open(j["stream_id"], j["method"], j["timeout_us"], pairs(j["metadata"]), j["end_stream"])
    if t == "HEADERS":
        return Headers(j["stream_id"], pairs(j["metadata"]))
    if t == "TRAILERS":
        return Trailers(j["stream_id"], j["status"], j["message"], pairs(j["metadata"]))
    if t == "RESET":
        return Reset(j["stream_id"], j["error_code"])
    if t == "SETTINGS":
        return SettingsFrame(pairs(j["settings"]))
    if t == "PING":
        return Ping(bytes.fromhex(j["data"]), j["ack"])
    if t == "GOAWAY":
        return GoAway(j["last_stream_id"], j["error_code"], j["debug"])
    if t == "WINDOW_UPDATE":
        return WindowUpdate(j["stream_id"], j["increment"])
    if t == "CHECKPOINT":
        return Checkpoint(j["stream_id"], j["consumed"], bytes.fromhex(j["token"]))
    raise AssertionError(f"unknown frame type {t}")


def error_json(e: WireError) -> dict[str, Any]:
    out: dict[str, Any] = {"scope": e.scope, "code": e.code.name}
    if e.scope == "stream":
        out["stream_id"] = e.stream_id
    return out


def limits(v: dict[str, Any]) -> tuple[int, int]:
    return (v.get("max_frame_size", DEFAULTS["max_frame_size"]),
            v.get("max_metadata_size", DEFAULTS["max_metadata_size"]))


def decode_all(data: bytes, chunk: int | None, mfs: int, mms: int) -> list[Frame]:
    """All frames of ``data`` through ``FrameDecoder``, fed whole (chunk None) or in pieces.

    Checks that no frame is produced before its last byte and nothing is left over.
    """
    dec, out = FrameDecoder(mfs, mms), []
    pieces = [data] if chunk is None else [data[i:i + chunk] for i in range(0, len(data), chunk)]
    for piece in pieces:
        dec.feed(piece)
        while (f := dec.next_frame()) is not None:
            out.append(f)
    if dec.buffered:
        raise AssertionError(f"{dec.buffered} bytes left over")
    return out


def check_valid(tc: unittest.TestCase, v: dict[str, Any]) -> None:
    """A ``valid`` vector: decodes to ``frame`` (whole, prefix by prefix, byte at a time) and, unless
    ``decode_only``, ``frame`` encodes to ``hex``."""
    raw, want = bytes.fromhex(v["hex"]), from_json(v["frame"])
    mfs, mms = limits(v)
    tc.assertEqual(wire.decode_frame(raw, mfs, mms), (want, len(raw)))
    for k in range(len(raw)):  # every proper prefix: "more bytes needed"
        tc.assertIsNone(wire.decode_frame(raw[:k], mfs, mms), f"prefix {k}")
    tc.assertEqual(decode_all(raw, None, mfs, mms), [want])
    tc.assertEqual(decode_all(raw, 1, mfs, mms), [want])
    if v["decode_only"]:  # an encoder never writes these bytes; it writes the normalised frame
        tc.assertNotEqual(wire.encode_frame(want).hex(), v["hex"])
        tc.assertEqual(wire.decode_frame(wire.encode_frame(want), mfs, mms)[0], want)  # type: ignore[index]
    else:
        tc.assertEqual(wire.encode_frame(want).hex(), v["hex"])


def check_sequence(tc: unittest.TestCase, s: dict[str, Any]) -> None:
    """A ``sequences`` vector: decodes to ``frames`` in order (whole and byte at a time) and
    encoding ``frames`` yields ``hex``."""
    raw, want = bytes.fromhex(s["hex"]), [from_json(f) for f in s["frames"]]
    mfs, mms = limits(s)
    tc.assertEqual(decode_all(raw, None, mfs, mms), want)
    tc.assertEqual(decode_all(raw, 1, mfs, mms), want)
    tc.assertEqual(b"".join(wire.encode_frame(f) for f in want).hex(), s["hex"])


def check_invalid(tc: unittest.TestCase, v: dict[str, Any]) -> None:
    """An ``invalid`` vector: fails with ``error`` whole, byte at a time and via ``decode_frame``;
    every proper prefix needs more bytes or already fails with the same error (header rules);
    a stream-scope error leaves the decoder usable for the next frame."""
    raw = bytes.fromhex(v["hex"])
    mfs, mms = limits(v)
    for chunk in (None, 1):
        with tc.assertRaises(WireError, msg=f"chunk {chunk}") as cm:
            frames = decode_all(raw, chunk, mfs, mms)
            tc.fail(f"decoded {frames}")
        tc.assertEqual(error_json(cm.exception), v["error"])
    with tc.assertRaises(WireError) as cm:
        wire.decode_frame(raw, mfs, mms)
    tc.assertEqual(error_json(cm.exception), v["error"])
    for k in range(len(raw)):
        try:
            got = wire.decode_frame(raw[:k], mfs, mms)
        except WireError as e:
            tc.assertGreaterEqual(k, wire.HEADER_LEN)
            tc.assertEqual(error_json(e), v["error"])
        else:
            tc.assertIsNone(got)
    if v["name"].startswith("frame_too_large_"):  # reported from the 9-byte header alone
        tc.assertEqual(len(raw), wire.HEADER_LEN)
    if v["error"]["scope"] == "stream":
        dec, ping = FrameDecoder(mfs, mms), Ping(bytes(8))
        dec.feed(raw + wire.encode_frame(ping))
        with tc.assertRaises(WireError):
            dec.next_frame()
        tc.assertEqual(dec.next_frame(), ping)


def check_preface_valid(tc: unittest.TestCase, v: dict[str, Any]) -> None:
    """A valid preface is accepted; each proper prefix needs more bytes; what follows is not read."""
    raw = bytes.fromhex(v["hex"])
    tc.assertEqual(raw, wire.PREFACE)
    tc.assertEqual(wire.check_preface(raw), len(raw))
    tc.assertEqual(wire.check_preface(raw + b"\x00\x00"), len(raw))
    for k in range(len(raw)):
        tc.assertIsNone(wire.check_preface(raw[:k]))


def check_preface_invalid(tc: unittest.TestCase, v: dict[str, Any]) -> None:
    """An invalid preface fails with ``error``, whole and byte at a time, at the first differing
    magic byte (or at the version byte)."""
    raw = bytes.fromhex(v["hex"])
    with tc.assertRaises(WireError) as cm:
        wire.check_preface(raw)
    tc.assertEqual(error_json(cm.exception), v["error"])
    failed_at = None
    for k in range(1, len(raw) + 1):
        try:
            tc.assertIsNone(wire.check_preface(raw[:k]))
        except WireError as e:
            tc.assertEqual(error_json(e), v["error"])
            failed_at = k
            break
    first_bad = next((i for i, (a, b) in enumerate(zip(raw, wire.MAGIC)) if a != b), len(wire.MAGIC))
    tc.assertEqual(failed_at, first_bad + 1, "should fail at the first byte that rules the peer out")


class ValidFrames(unittest.TestCase):
    """One test per ``valid`` vector of frames.json."""


class Sequences(unittest.TestCase):
    """One test per ``sequences`` vector of frames.json."""


class InvalidFrames(unittest.TestCase):
    """One test per ``invalid`` vector of frames.json."""


class Prefaces(unittest.TestCase):
    """One test per vector of preface.json."""


def _add(cls: type, prefix: str, vectors: list[dict[str, Any]], check: Any) -> None:
    for v in vectors:
        def test(self: unittest.TestCase, v: dict[str, Any] = v) -> None:
            check(self, v)
        test.__doc__ = f"{prefix} {v['name']}: {v.get('description', '')}".rstrip(": ")
        setattr(cls, f"test_{prefix}_{v['name']}", test)


_add(ValidFrames, "valid", FRAMES["valid"], check_valid)
_add(Sequences, "sequence", FRAMES["sequences"], check_sequence)
_add(InvalidFrames, "invalid", FRAMES["invalid"], check_invalid)
_add(Prefaces, "valid", PREFACE["valid"], check_preface_valid)
_add(Prefaces, "invalid", PREFACE["invalid"], check_preface_invalid)


class Coverage(unittest.TestCase):
    def test_every_vector_has_a_test(self) -> None:
        counts = {cls: len([n for n in dir(cls) if n.startswith("test_")])
                  for cls in (ValidFrames, Sequences, InvalidFrames, Prefaces)}
        self.assertEqual(counts[ValidFrames], len(FRAMES["valid"]))
        self.assertEqual(counts[Sequences], len(FRAMES["sequences"]))
        self.assertEqual(counts[InvalidFrames], len(FRAMES["invalid"]))
        self.assertEqual(counts[Prefaces], len(PREFACE["valid"]) + len(PREFACE["invalid"]))


class EncoderRefusals(unittest.TestCase):
    """Inputs an encoder must not write (sections 4 and 5)."""

    def test_refused(self) -> None:
        bad: list[Frame] = [
            Open(1, ""), Open(2, "a/b"), Open(0, "a/b"), Open(1, "x" * 65536),
            Open(1, "a/b", metadata=(("X-Trace", "1"),)), Open(1, "a/b", metadata=(("", "1"),)),
            Open(1, "a/b", metadata=(("grüße", "1"),)), Open(1, "a/b", timeout_us=2**64),
            Headers(1, (("a", "v" * 65536),)), Trailers(1, 256), Data(0, b"x"),
            Ping(b"1234567"), WindowUpdate(0, 0), WindowUpdate(1, 2**31), Reset(1, 2**32),
            GoAway(2**31, 0), Data(2**31, b""),
        ]
        for f in bad:
            with self.subTest(repr(f)[:60]):
                with self.assertRaises(ValueError):
                    wire.encode_frame(f)

    def test_codes(self) -> None:
        self.assertEqual(wire.ErrorCode.of(0xDEADBEEF), ErrorCode.INTERNAL_ERROR)
        self.assertEqual(wire.Status.of(200), wire.Status.UNKNOWN)
        self.assertEqual(wire.Status.of(14), wire.Status.UNAVAILABLE)

    def test_settings(self) -> None:
        s = wire.Settings().updated([(1, 1024), (1, 2048), (99, 5), (2, 7)])
        self.assertEqual((s.max_frame_size, s.max_concurrent_streams), (2048, 7))
        self.assertEqual(s.pairs(), ((1, 2048), (2, 7)))
        with self.assertRaises(ValueError):
            wire.Settings().updated([(3, 2**31)])


if __name__ == "__main__":
    unittest.main()
