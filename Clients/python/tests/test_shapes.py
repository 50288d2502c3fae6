"""The four call shapes, replay, cancellation, fail fast, keepalive, resolution and the retry
budget, for the blocking and the asyncio client, against a scripted in-process server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import unittest
from typing import Any

import baton.aio
from baton import Client, RetryBudget, RPCError, Status
from baton.wire import Data, ErrorCode, Frame, GoAway, Headers, Open, Ping, Reset, Trailers, WindowUpdate

from test_client import FakeServer, Peer, echo

FAST = dict(connect_timeout=2.0)


def collect(peer: Peer, f: Frame, reply: bool = True) -> None:
    """Client-streaming handler: keeps each stream's messages; on END_STREAM answers HEADERS,
    the messages joined by '|', and TRAILERS with metadata."""
    msgs = peer.state.setdefault(f"msgs{f.stream_id}", [])  # type: ignore[arg-type]
    buf = peer.state.setdefault(f"frag{f.stream_id}", bytearray())
    assert isinstance(msgs, list) and isinstance(buf, bytearray)
    if isinstance(f, Data):
        buf += f.data
        if f.data:
            peer.send(WindowUpdate(0, len(f.data)), WindowUpdate(f.stream_id, len(f.data)))
        if f.end_message:
            msgs.append(bytes(buf))
            buf.clear()
    if isinstance(f, (Data, Open)) and f.end_stream and reply:
        peer.send(Headers(f.stream_id, (("h", "1"),)), Data(f.stream_id, b"|".join(msgs), end_message=True),
                  Trailers(f.stream_id, 0, "", (("t", "2"),)))


def echo_each(peer: Peer, f: Frame) -> None:
    """Bidirectional echo: each message back at once; TRAILERS OK on END_STREAM."""
    if isinstance(f, Data):
        if f.data:
            peer.send(WindowUpdate(0, len(f.data)), WindowUpdate(f.stream_id, len(f.data)))
        if f.end_message:
            peer.send(Data(f.stream_id, f.data, end_message=True))
        if f.end_stream:
            peer.send(Trailers(f.stream_id, 0))
    if isinstance(f, Open) and f.end_stream:
        peer.send(Trailers(f.stream_id, 0))


def silent(peer: Peer, f: Frame) -> None:
    """Never answers anything, not even PING (a frozen server)."""


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Base(unittest.TestCase):
    def setUp(self) -> None:
        self.servers: list[FakeServer] = []
        self.clients: list[Any] = []

    def tearDown(self) -> None:
        for c in self.clients:
            if isinstance(c, Client):
                c.close()
        for s in self.servers:
            s.close()

    def server(self, handler: Any, **kw: Any) -> FakeServer:
        s = FakeServer(handler, **{"ack_pings": handler is not silent, **kw})
        self.servers.append(s)
        return s

    def client(self, *servers: FakeServer, **kw: Any) -> Client:
        c = Client([s.endpoint for s in servers], **{**FAST, **kw})
        self.clients.append(c)
        return c


class Shapes(Base):
    def test_client_streaming_frames_headers_trailers(self) -> None:
        s = self.server(collect)
        c = self.client(s)
        call = c.client_streaming_call("t.S/C", timeout=5, metadata=[("k", "v")])
        for m in (b"a", b"", b"ccc"):
            self.assertTrue(call.write(m))
        call.done_writing()
        self.assertEqual(call.result(), b"a||ccc")
        self.assertEqual((call.headers, call.trailers, call.code), ((("h", "1"),), (("t", "2"),), Status.OK))
        got = [f for f in s.frames() if not isinstance(f, WindowUpdate)]
        self.assertIsInstance(got[1], Open)
        self.assertFalse(got[1].end_stream)
        self.assertEqual(got[2:], [Data(1, b"a", False, True), Data(1, b"", False, True),
                                   Data(1, b"ccc", False, True), Data(1, b"", True, False)])
        self.assertEqual(c.client_streaming("t.S/C", iter([b"x", b"y"]), timeout=5), b"x|y")
        self.assertEqual(c.client_streaming("t.S/C", [], timeout=5), b"")  # zero requests: OPEN only

    def test_result_twice_and_after_iteration(self) -> None:
        c = self.client(self.server(echo))
        call = c.unary_call("t.S/U", b"r", timeout=5)
        self.assertEqual((call.result(), call.result()), (b"r", b"r"))
        call = c.unary_call("t.S/U", b"i", timeout=5)
        self.assertEqual(list(call), [b"i"])
        with self.assertRaises(RuntimeError):
            call.result()  # taken by the iteration: a usage error, said so (not a hang)

    def test_bidirectional_interleaved(self) -> None:
        c = self.client(self.server(echo_each))
        with c.bidirectional("t.S/B", timeout=5) as call:
            for m in (b"one", b"two", b"three"):
                self.assertTrue(call.write(m))
                self.assertEqual(call.read(), m)  # the reply arrives before the next write
            call.done_writing()
            self.assertIsNone(call.read())
            self.assertEqual(call.code, Status.OK)
            self.assertEqual(call.trailers, ())

    def test_bidirectional_reader_and_writer_threads(self) -> None:
        c = self.client(self.server(echo_each))
        for _ in range(5):  # repeated: the two threads race on the call and the connection
            call = c.bidirectional("t.S/B", timeout=10)
            sent = [b"%d" % i for i in range(200)]

            def writer() -> None:
                for m in sent:
                    call.write(m)  # noqa: B023 - runs within this iteration
                call.done_writing()  # noqa: B023

            t = threading.Thread(target=writer, daemon=True)
            t.start()
            self.assertEqual(list(call), sent)
            t.join(10)
            self.assertEqual(call.code, Status.OK)

    def test_second_response_on_unary_is_internal_and_reset(self) -> None:
        def twice(peer: Peer, f: Frame) -> None:
            if isinstance(f, Data) and f.end_stream:
                peer.send(Data(f.stream_id, b"1", end_message=True), Data(f.stream_id, b"2", end_message=True))

        for shape in ("unary", "client_streaming"):
            s = self.server(twice)
            c = self.client(s)
            with self.assertRaises(RPCError) as cm:
                if shape == "unary":
                    c.unary("t.S/U", b"x", timeout=5)
                else:
                    c.client_streaming("t.S/C", [b"x"], timeout=5)
            self.assertEqual(cm.exception.code, Status.INTERNAL, shape)
            self.assertTrue(s.wait_for(lambda fs: Reset(1, ErrorCode.CANCEL) in fs), f"{shape}: no RESET CANCEL")

    def test_ok_without_response_is_internal(self) -> None:
        def empty_ok(peer: Peer, f: Frame) -> None:
            if isinstance(f, Data) and f.end_stream:
                peer.send(Trailers(f.stream_id, 0))

        c = self.client(self.server(empty_ok))
        for call in (lambda: c.unary("t.S/U", b"x", timeout=5),
                     lambda: c.client_streaming("t.S/C", [b"x"], timeout=5)):
            with self.assertRaises(RPCError) as cm:
                call()
            self.assertEqual(cm.exception.code, Status.INTERNAL)
        # ...but an empty response stream is fine for the streaming-response shapes
        self.assertEqual(list(c.server_streaming("t.S/S", b"x", timeout=5)), [])

    def test_write_after_server_ended_ok_is_dropped(self) -> None:
        def answer_at_once(peer: Peer, f: Frame) -> None:
            if isinstance(f, Open):
                peer.send(Data(f.stream_id, b"done", end_message=True), Trailers(f.stream_id, 0, "early"))

        c = self.client(self.server(answer_at_once))
        # Write until the client has seen the TRAILERS: then write() returns False, never raises,
        # and the outcome stays OK.
        for _ in range(3):
            call = c.bidirectional("t.S/B", timeout=5)
            results = [call.write(b"m") for _ in range(1)]
            self.assertEqual(list(call), [b"done"])
            self.assertEqual(call.code, Status.OK)
            results.append(call.write(b"late"))
            self.assertFalse(results[-1])
            call.done_writing()
            self.assertEqual((call.code, call.details), (Status.OK, "early"))
            self.assertIsNone(call.read())

    def test_server_failure_status_and_trailers(self) -> None:
        def fail(peer: Peer, f: Frame) -> None:
            if isinstance(f, Open):
                peer.send(Trailers(f.stream_id, 9, "nope", (("why", "x"),)))

        c = self.client(self.server(fail))
        call = c.bidirectional("t.S/B", timeout=5)
        with self.assertRaises(RPCError) as cm:
            call.read()
        self.assertEqual((cm.exception.code, cm.exception.message, cm.exception.metadata),
                         (Status.FAILED_PRECONDITION, "nope", (("why", "x"),)))
        self.assertEqual((call.code, call.trailers), (Status.FAILED_PRECONDITION, (("why", "x"),)))
        self.assertFalse(call.write(b"late"))  # the server ended it: dropped, not raised


class Concurrency(Base):
    def test_server_taking_no_streams_is_skipped(self) -> None:
        closed, good = self.server(echo, settings=((2, 0),)), self.server(echo)  # MAX_CONCURRENT_STREAMS 0
        c = self.client(closed, good)
        for i in range(4):
            self.assertEqual(c.unary("t.S/U", b"%d" % i, timeout=5), b"%d" % i)
        self.assertFalse([f for f in closed.frames() if isinstance(f, Open)])
        alone = self.client(closed)
        with self.assertRaises(RPCError) as cm:
            alone.unary("t.S/U", b"x")
        self.assertEqual(cm.exception.code, Status.UNAVAILABLE)
        self.assertIn("MAX_CONCURRENT_STREAMS 0", cm.exception.message)

    def test_queued_call_without_deadline_has_a_wait_limit(self) -> None:
        import baton._connection as connection
        s = self.server(silent, settings=((2, 1),))  # one stream at a time, never answered
        c = self.client(s, keepalive_interval=None)
        first = c.unary_call("t.S/U", b"1", timeout=20)
        t = threading.Thread(target=lambda: _catch(first.result), daemon=True)
        t.start()
        self.assertTrue(s.wait_for(lambda fs: any(isinstance(f, Open) for f in fs)))
        saved, connection.SLOT_WAIT_LIMIT = connection.SLOT_WAIT_LIMIT, 0.3
        try:
            start = time.monotonic()
            with self.assertRaises(RPCError) as cm:
                c.unary("t.S/U", b"2")  # no deadline: waits for the slot, but not forever
            self.assertEqual(cm.exception.code, Status.UNAVAILABLE)
            self.assertGreaterEqual(time.monotonic() - start, 0.29)
            self.assertLess(time.monotonic() - start, 10)
        finally:
            connection.SLOT_WAIT_LIMIT = saved
            first.cancel()
        self.assertEqual(len([f for f in s.frames() if isinstance(f, Open)]), 1)


class Limits(Base):
    def test_metadata_over_the_server_limit_is_refused_before_sending(self) -> None:
        s = self.server(echo, settings=((5, 64),))  # MAX_METADATA_SIZE 64 bytes, the smallest allowed
        c = self.client(s)
        # block = count 2 + name_len 2 + "k" + value_len 2 + value: 57 bytes of value fill it
        self.assertEqual(c.unary("t.S/U", b"x", timeout=5, metadata={"k": "v" * 57}), b"x")
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/U", b"y", timeout=5, metadata={"k": "v" * 58})
        self.assertEqual(cm.exception.code, Status.RESOURCE_EXHAUSTED)
        self.assertEqual(len([f for f in s.frames() if isinstance(f, Open)]), 1, "nothing sent for the second")


class Replay(Base):
    def refuse_after(self, n: int, how: str) -> Any:
        def handler(peer: Peer, f: Frame) -> None:
            collect(peer, f, reply=False)
            msgs = peer.state.get(f"msgs{f.stream_id}", [])
            if isinstance(f, Data) and len(msgs) == n and not peer.state.get("refused"):  # type: ignore[arg-type]
                peer.state["refused"] = True
                peer.send(Reset(f.stream_id, ErrorCode.REFUSED_STREAM) if how == "reset"
                          else GoAway(0, 0, "stopping"))
        return handler

    def test_streaming_requests_replayed_after_refusal(self) -> None:
        for how in ("reset", "goaway"):
            for _ in range(3):  # repeated: the refusal races the later writes
                a, b = self.server(self.refuse_after(2, how)), self.server(collect)
                c = self.client(a, b)
                reply = c.client_streaming("t.S/C", [b"m1", b"m2", b"m3", b"m4"], timeout=10)
                self.assertEqual(reply, b"m1|m2|m3|m4", how)
                b_data = [f for f in b.frames() if isinstance(f, Data) and f.end_message]
                self.assertEqual([f.data for f in b_data], [b"m1", b"m2", b"m3", b"m4"], how)
                self.assertEqual(len({f.stream_id for f in b_data}), 1)
                self.assertTrue(any(isinstance(f, Open) for f in a.frames()), "A was tried first")

    def test_bidi_replayed_until_first_reply(self) -> None:
        a, b = self.server(self.refuse_after(2, "reset")), self.server(echo_each)
        c = self.client(a, b)
        call = c.bidirectional("t.S/B", timeout=10)
        for m in (b"1", b"2", b"3"):
            self.assertTrue(call.write(m))
        call.done_writing()
        self.assertEqual(list(call), [b"1", b"2", b"3"])
        self.assertEqual(call.code, Status.OK)

    def test_no_replay_after_a_response(self) -> None:
        # The server answers one message, then the connection dies: the call was processed and
        # is not idempotent, so it fails UNAVAILABLE instead of being sent again.
        def reply_then_die(peer: Peer, f: Frame) -> None:
            if isinstance(f, Data) and f.end_message:
                peer.send(Data(f.stream_id, f.data, end_message=True))
                if f.data == b"2":
                    peer.sock.shutdown(socket.SHUT_RDWR)

        a, b = self.server(reply_then_die), self.server(echo_each)
        c = self.client(a, b)
        call = c.bidirectional("t.S/B", timeout=10, idempotent=True)
        call.write(b"1")
        self.assertEqual(call.read(), b"1")
        call.write(b"2")
        with self.assertRaises(RPCError) as cm:
            while call.read() is not None:
                pass
        self.assertEqual(cm.exception.code, Status.UNAVAILABLE)
        self.assertFalse([f for f in b.frames() if isinstance(f, Open)], "retried after a response")


    def test_no_replay_beyond_1_mib(self) -> None:
        # More than 1 MiB written, then the server refuses: the call cannot move to B.
        def refuse_at_end(peer: Peer, f: Frame) -> None:
            collect(peer, f, reply=False)
            if isinstance(f, Data) and f.end_stream:
                peer.send(Reset(f.stream_id, ErrorCode.REFUSED_STREAM))

        a, b = self.server(refuse_at_end), self.server(collect)
        c = self.client(a, b)
        chunk = b"z" * 300_000
        with self.assertRaises(RPCError) as cm:
            c.client_streaming("t.S/C", [chunk] * 4, timeout=10)
        self.assertEqual(cm.exception.code, Status.UNAVAILABLE)
        self.assertIn("replay", cm.exception.message)
        self.assertFalse([f for f in b.frames() if isinstance(f, Open)], "replayed beyond 1 MiB")
        # ...while 3 x 300 kB (under 1 MiB) moves to B whole
        def sizes(peer: Peer, f: Frame) -> None:
            collect(peer, f, reply=False)
            if isinstance(f, Data) and f.end_stream:
                got = peer.state[f"msgs{f.stream_id}"]
                peer.reply(f.stream_id, b",".join(b"%d" % len(m) for m in got))  # type: ignore[attr-defined]

        a2, b2 = self.server(refuse_at_end), self.server(sizes)
        c2 = self.client(a2, b2)
        self.assertEqual(c2.client_streaming("t.S/C", [chunk] * 3, timeout=10), b"300000,300000,300000")


class Cancel(Base):
    def test_dropping_a_running_stream_cancels_it(self) -> None:
        def endless(peer: Peer, f: Frame) -> None:
            if isinstance(f, Data) and f.end_stream:
                for i in range(3):
                    peer.send(Data(f.stream_id, b"%d" % i, end_message=True))  # and never TRAILERS

        s = self.server(endless)
        c = self.client(s)
        for m in c.server_streaming("t.S/S", b"x"):
            self.assertEqual(m, b"0")
            break  # the call object is dropped here
        self.assertTrue(s.wait_for(lambda fs: Reset(1, ErrorCode.CANCEL) in fs), "no RESET CANCEL")


    def test_cancel_unary_from_another_thread(self) -> None:
        s = self.server(silent)
        c = self.client(s)
        for _ in range(3):
            call = c.unary_call("t.S/U", b"x")  # no deadline: only cancel() ends it
            errors: list[RPCError] = []
            n = sum(isinstance(f, Open) for f in s.frames()) + 1
            t = threading.Thread(target=lambda: errors.extend(_catch(call.result)), daemon=True)
            t.start()
            self.assertTrue(s.wait_for(lambda fs: sum(isinstance(f, Open) for f in fs) >= n))
            sid = [f for f in s.frames() if isinstance(f, Open)][-1].stream_id
            self.assertTrue(call.cancel())
            t.join(5)
            self.assertFalse(t.is_alive())
            self.assertEqual([e.code for e in errors], [Status.CANCELLED])
            self.assertTrue(s.wait_for(lambda fs: Reset(sid, ErrorCode.CANCEL) in fs))
            self.assertFalse(call.cancel(), "cancel of an ended call reports False")

    def test_cancel_before_start_and_streams(self) -> None:
        c = self.client(self.server(echo_each))
        call = c.server_streaming("t.S/S", b"x", timeout=5)
        self.assertTrue(call.cancel())
        with self.assertRaises(RPCError) as cm:
            list(call)
        self.assertEqual(cm.exception.code, Status.CANCELLED)
        bidi = c.bidirectional("t.S/B", timeout=5)
        bidi.write(b"1")
        self.assertEqual(bidi.read(), b"1")
        bidi.cancel()
        self.assertEqual(bidi.code, Status.CANCELLED)
        with self.assertRaises(RPCError):
            bidi.write(b"2")  # cancelled by us: writing reports it


def _catch(fn: Any) -> list[RPCError]:
    try:
        fn()
    except RPCError as e:
        return [e]
    return []


class FailFast(Base):
    def test_refused_connection_fails_at_once_with_reason(self) -> None:
        ports = [closed_port(), closed_port()]
        c = Client([("127.0.0.1", p) for p in ports], connect_timeout=5)
        self.clients.append(c)
        start = time.monotonic()
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/U", b"x")  # no timeout
        self.assertLess(time.monotonic() - start, 10.0)  # generous on a loaded machine: waiting
        # through 25 backoffs would take over 30 s
        self.assertEqual(cm.exception.code, Status.UNAVAILABLE)
        self.assertIn("refused", cm.exception.message.lower())
        for p in ports:
            self.assertIn(str(p), cm.exception.message)

    def test_wait_for_ready_waits_until_deadline(self) -> None:
        c = Client([("127.0.0.1", closed_port())], connect_timeout=5)
        self.clients.append(c)
        start = time.monotonic()
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/U", b"x", timeout=0.6, wait_for_ready=True)
        self.assertEqual(cm.exception.code, Status.DEADLINE_EXCEEDED)
        self.assertGreaterEqual(time.monotonic() - start, 0.59)

    def test_wait_for_ready_without_deadline_is_bounded(self) -> None:
        import baton._pool as pool
        c = Client([("127.0.0.1", closed_port())], connect_timeout=5)
        self.clients.append(c)
        saved, pool.MAX_WAIT_FOR_CONNECTION = pool.MAX_WAIT_FOR_CONNECTION, 0.4
        try:
            start = time.monotonic()
            with self.assertRaises(RPCError) as cm:
                c.unary("t.S/U", b"x", wait_for_ready=True)
            self.assertGreaterEqual(time.monotonic() - start, 0.39)
        finally:
            pool.MAX_WAIT_FOR_CONNECTION = saved
        self.assertEqual(cm.exception.code, Status.UNAVAILABLE)
        self.assertIn("refused", cm.exception.message.lower())

    def test_wait_for_ready_succeeds_when_the_server_comes(self) -> None:
        port = closed_port()
        c = Client([("127.0.0.1", port)], connect_timeout=5)
        self.clients.append(c)
        result: list[Any] = []
        t = threading.Thread(target=lambda: result.append(
            c.unary("t.S/U", b"late", timeout=20, wait_for_ready=True)), daemon=True)
        t.start()
        end = time.monotonic() + 10
        while not any(ep["last_error"] for ep in c.endpoints) and time.monotonic() < end:
            time.sleep(0.01)  # nothing to await: the first refused connect is only visible here
        self.assertTrue(any(ep["last_error"] for ep in c.endpoints))
        s = FakeServer(echo)
        s.listener.close()
        s.listener = socket.create_server(("127.0.0.1", port))
        s.listener.settimeout(0.2)
        self.servers.append(s)
        t.join(20)
        self.assertEqual(result, [b"late"])


class Keepalive(Base):
    def test_frozen_server_is_left_in_bounded_time(self) -> None:
        s = self.server(silent)
        c = self.client(s, keepalive_interval=0.3, keepalive_timeout=0.5)
        start = time.monotonic()
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/U", b"x", timeout=30)  # only keepalive ends it this early
        elapsed = time.monotonic() - start
        self.assertEqual(cm.exception.code, Status.UNAVAILABLE)
        self.assertIn("keepalive", cm.exception.message)
        self.assertGreaterEqual(elapsed, 0.75)
        self.assertLess(elapsed, 10.0)
        pings = [f for f in s.frames() if isinstance(f, Ping) and not f.ack]
        self.assertEqual(len(pings), 1, "one PING, then the timeout")

    def test_frozen_server_idempotent_call_moves_on(self) -> None:
        frozen, good = self.server(silent), self.server(echo)
        c = self.client(frozen, good, keepalive_interval=0.3, keepalive_timeout=0.5)
        self.assertEqual(c.unary("t.S/U", b"x", idempotent=True, timeout=30), b"x")
        self.assertTrue(any(isinstance(f, Open) for f in frozen.frames()), "the frozen server was tried first")
        self.assertEqual(c.unary("t.S/U", b"y"), b"y")  # the frozen endpoint is backing off

    def test_slow_but_live_server_is_kept_and_pings_are_paced(self) -> None:
        def slow(peer: Peer, f: Frame) -> None:
            if isinstance(f, Ping) and not f.ack:
                peer.send(Ping(f.data, ack=True))
            if isinstance(f, Data) and f.end_stream:
                threading.Timer(1.5, peer.reply, args=(f.stream_id, f.data)).start()

        s = self.server(slow)
        c = self.client(s, keepalive_interval=0.2, keepalive_timeout=0.5)
        self.assertEqual(c.unary("t.S/U", b"x", timeout=10), b"x")
        pings = [f for f in s.frames() if isinstance(f, Ping) and not f.ack]
        self.assertGreaterEqual(len(pings), 2)
        self.assertLessEqual(len(pings), 1.5 / 0.2 + 1, "at most one PING per interval")
        time.sleep(0.3)  # a PING sent just before the reply may still be on its way
        count = len([f for f in s.frames() if isinstance(f, Ping) and not f.ack])
        time.sleep(0.8)  # idle: no call waits, so no PING (an absence, checked over 4 intervals)
        self.assertEqual(len([f for f in s.frames() if isinstance(f, Ping) and not f.ack]), count)


    def test_too_many_pings_doubles_the_interval(self) -> None:
        # The first connection's server polices our PING (GOAWAY ENHANCE_YOUR_CALM "too many
        # pings", section 15); the next connection must wait twice the interval before its PING.
        opened: dict[int, float] = {}
        first_ping: dict[int, float] = {}

        def policing(peer: Peer, f: Frame) -> None:
            conn = self.servers[0].peers.index(peer)
            if isinstance(f, Open):
                opened.setdefault(conn, time.monotonic())
            if isinstance(f, Ping) and not f.ack:
                first_ping.setdefault(conn, time.monotonic())
                if conn == 0:
                    peer.send(GoAway(0x7FFFFFFF, ErrorCode.ENHANCE_YOUR_CALM, "too many pings"))
                    peer.sock.shutdown(socket.SHUT_RDWR)
                else:
                    peer.send(Ping(f.data, ack=True))
            if isinstance(f, Data) and f.end_stream and conn > 0:
                threading.Timer(1.2, peer.reply, args=(f.stream_id, f.data)).start()

        s = self.server(policing, ack_pings=False)
        c = self.client(s, keepalive_interval=0.3, keepalive_timeout=5.0)
        with self.assertRaises(RPCError):
            c.unary("t.S/U", b"x", timeout=10)  # cut by the GOAWAY: may have been processed
        end = time.monotonic() + 5
        while time.monotonic() < end:  # wait out the endpoint's backoff
            try:
                self.assertEqual(c.unary("t.S/U", b"y", timeout=10), b"y")
                break
            except RPCError:
                time.sleep(0.05)
        self.assertIn(1, first_ping, "the second connection sent no PING")
        self.assertGreaterEqual(first_ping[0] - opened[0], 0.3 - 0.01)
        self.assertGreaterEqual(first_ping[1] - opened[1], 0.6 - 0.01, "interval not doubled")


class Resolution(Base):
    def test_every_address_is_an_endpoint_and_is_re_resolved(self) -> None:
        a = self.server(echo)
        try:
            b = FakeServer(echo)
            b.listener.close()
            b.listener = socket.create_server(("127.0.0.2", a.port))
            b.listener.settimeout(0.2)
            self.servers.append(b)
        except OSError as e:
            self.skipTest(f"127.0.0.2 not usable: {e}")
        lookups: list[str] = []

        def resolver(host: str, port: int) -> list[str]:
            lookups.append(host)
            return ["127.0.0.1", "127.0.0.2"]

        c = Client([("svc.test", a.port)], resolver=resolver, **FAST)
        self.clients.append(c)
        for i in range(6):
            self.assertEqual(c.unary("t.S/U", b"%d" % i, timeout=5), b"%d" % i)
        self.assertEqual(len([f for f in a.frames() if isinstance(f, Open)]), 3)
        self.assertEqual(len([f for f in b.frames() if isinstance(f, Open)]), 3)
        self.assertEqual(lookups, ["svc.test"])
        a.peers[0].send(GoAway(0x7FFFFFFF, 0, "drain"))
        end = time.monotonic() + 10
        while len(lookups) < 2 and time.monotonic() < end:
            c.unary("t.S/U", b"again", timeout=5)
        self.assertEqual(len(lookups), 2, "a GOAWAY makes the name resolve again")

    def test_system_resolver_localhost(self) -> None:
        s = self.server(echo)
        c = Client([("localhost", s.port)], **FAST)
        self.clients.append(c)
        self.assertEqual(c.unary("t.S/U", b"x", timeout=5), b"x")
        self.assertIn("127.0.0.1", [ep["address"][0] for ep in c.endpoints])


class Budget(Base):
    def test_budget_bounds_retries_that_may_repeat_work(self) -> None:
        def die(peer: Peer, f: Frame) -> None:
            if isinstance(f, Open):
                peer.sock.shutdown(socket.SHUT_RDWR)  # lost mid-call: may have been processed

        bad, good = self.server(die), self.server(echo)
        c = self.client(bad, good, retry_budget=RetryBudget(ratio=0.0, min_per_second=0.2, ttl=10.0))
        outcomes = []
        for i in range(8):
            try:
                c.unary("t.S/U", b"x", timeout=5, idempotent=True)
                outcomes.append("ok")
            except RPCError as e:
                self.assertEqual(e.code, Status.UNAVAILABLE)
                outcomes.append("budget" if "budget" in e.message else e.message)
        # 0.2 retries/s over 10 s: exactly two calls that hit the bad server are retried (and
        # succeed); every later one fails UNAVAILABLE saying why.
        hit_bad = len([f for f in bad.frames() if isinstance(f, Open)])
        self.assertGreaterEqual(hit_bad, 3)
        self.assertEqual(outcomes.count("budget"), hit_bad - 2, outcomes)
        self.assertEqual(set(outcomes) - {"ok", "budget"}, set())

    def test_unprocessed_retries_do_not_use_the_budget(self) -> None:
        def refuse(peer: Peer, f: Frame) -> None:
            if isinstance(f, Open):
                peer.send(Reset(f.stream_id, ErrorCode.REFUSED_STREAM))

        c = self.client(self.server(refuse), self.server(echo),
                        retry_budget=RetryBudget(ratio=0.0, min_per_second=0.0, ttl=10.0))
        for i in range(6):
            self.assertEqual(c.unary("t.S/U", b"%d" % i, timeout=5), b"%d" % i)


class Aio(Base):
    def run_async(self, coro: Any) -> Any:
        return asyncio.run(asyncio.wait_for(coro, 30))

    def test_four_shapes(self) -> None:
        s_echo, s_collect, s_each = self.server(echo), self.server(collect), self.server(echo_each)

        async def main() -> None:
            async with baton.aio.Client([s_echo.endpoint], **FAST) as c:
                self.assertEqual(await c.unary("t.S/U", b"u", timeout=5), b"u")
                call = c.unary_call("t.S/U", b"w", timeout=5)
                self.assertEqual(await call, b"w")
                self.assertEqual(call.code, Status.OK)
            async with baton.aio.Client([s_collect.endpoint], **FAST) as c:
                async def gen():  # type: ignore[no-untyped-def]
                    for m in (b"a", b"b"):
                        yield m
                self.assertEqual(await c.client_streaming("t.S/C", gen(), timeout=5), b"a|b")
                call = c.client_streaming_call("t.S/C", timeout=5)
                await call.write(b"z")
                await call.done_writing()
                self.assertEqual(await call.result(), b"z")
                self.assertEqual((call.headers, call.trailers), ((("h", "1"),), (("t", "2"),)))
            async with baton.aio.Client([s_each.endpoint], **FAST) as c:
                self.assertEqual([m async for m in c.server_streaming("t.S/S", b"s", timeout=5)], [b"s"])
                bidi = c.bidirectional("t.S/B", timeout=5)

                async def writer() -> None:
                    for i in range(50):
                        await bidi.write(b"%d" % i)
                    await bidi.done_writing()

                task = asyncio.ensure_future(writer())
                got = [m async for m in bidi]
                await task
                self.assertEqual(got, [b"%d" % i for i in range(50)])
                self.assertEqual(bidi.code, Status.OK)

        self.run_async(main())

    def test_task_cancel_resets_the_stream_and_loop_stays_free(self) -> None:
        s = self.server(silent)

        async def main() -> None:
            async with baton.aio.Client([s.endpoint], **FAST) as c:
                for _ in range(3):
                    n = sum(isinstance(f, Open) for f in s.frames()) + 1
                    task = asyncio.ensure_future(c.unary("t.S/U", b"x"))
                    ticks = 0
                    while not any(sum(isinstance(f, Open) for f in fs) >= n for fs in [s.frames()]):
                        await asyncio.sleep(0.005)  # the loop keeps running while the call waits
                        ticks += 1
                    self.assertGreater(ticks, 0)
                    task.cancel()
                    with self.assertRaises(asyncio.CancelledError):
                        await task
                    sid = [f for f in s.frames() if isinstance(f, Open)][-1].stream_id
                    ok = await asyncio.get_running_loop().run_in_executor(
                        None, lambda: s.wait_for(lambda fs: Reset(sid, ErrorCode.CANCEL) in fs))
                    self.assertTrue(ok, "RESET CANCEL after task.cancel()")

        self.run_async(main())

    def test_dropped_stream_is_cancelled(self) -> None:
        def endless(peer: Peer, f: Frame) -> None:
            if isinstance(f, Data) and f.end_stream:
                for i in range(3):
                    peer.send(Data(f.stream_id, b"%d" % i, end_message=True))

        s = self.server(endless)

        async def main() -> None:
            async with baton.aio.Client([s.endpoint], **FAST) as c:
                async for m in c.server_streaming("t.S/S", b"x"):
                    self.assertEqual(m, b"0")
                    break  # the call object is dropped here
                ok = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: s.wait_for(lambda fs: Reset(1, ErrorCode.CANCEL) in fs))
                self.assertTrue(ok, "no RESET CANCEL")

        self.run_async(main())

    def test_deadline_fail_fast_and_replay(self) -> None:
        a, b = self.server(Replay.refuse_after(self, 1, "reset")), self.server(collect)  # type: ignore[arg-type]

        async def main() -> None:
            async with baton.aio.Client([("127.0.0.1", closed_port())], **FAST) as c:
                with self.assertRaises(RPCError) as cm:
                    await c.unary("t.S/U", b"x")
                self.assertEqual(cm.exception.code, Status.UNAVAILABLE)
            async with baton.aio.Client([a.endpoint, b.endpoint], **FAST) as c:
                self.assertEqual(await c.client_streaming("t.S/C", [b"1", b"2", b"3"], timeout=10), b"1|2|3")
            s = self.server(silent)
            async with baton.aio.Client([s.endpoint], **FAST) as c:
                start = time.monotonic()
                with self.assertRaises(RPCError) as cm:
                    await c.unary("t.S/U", b"x", timeout=0.3)
                self.assertEqual(cm.exception.code, Status.DEADLINE_EXCEEDED)
                self.assertLess(time.monotonic() - start, 5)

        self.run_async(main())


if __name__ == "__main__":
    unittest.main()
