"""Client state rules against a scripted in-process server (no binary needed): settings, PING,
flow control, concurrency, GOAWAY and REFUSED_STREAM classification, stream errors."""

from __future__ import annotations

import os
import socket
import threading
import time
import unittest
from typing import Callable

from baton import Client, RPCError, Status, wire
from baton.wire import (Data, ErrorCode, Frame, FrameDecoder, GoAway, Open, Ping, Reset,
                        SettingsFrame, Trailers, WindowUpdate)


class Peer:
    """The server side of one accepted connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.received: list[Frame] = []
        self.state: dict[str, object] = {}

    def send(self, *frames: Frame) -> None:
        with self.lock:
            try:
                self.sock.sendall(b"".join(wire.encode_frame(f) for f in frames))
            except OSError:
                pass

    def reply(self, sid: int, body: bytes) -> None:
        self.send(Data(sid, body, end_message=True), Trailers(sid, 0))


Handler = Callable[[Peer, Frame], None]


class FakeServer:
    """Accepts connections, sends preface + SETTINGS (+ optional first bytes), then calls
    ``handler(peer, frame)`` for each frame the client sends after its preface and SETTINGS."""

    def __init__(self, handler: Handler, settings: tuple[tuple[int, int], ...] = (),
                 greeting: bytes | None = None, ack_pings: bool = True) -> None:
        self.handler, self.settings, self.greeting = handler, settings, greeting
        self.ack_pings = ack_pings  # answer the client's keepalive PINGs (a live server does)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.peers: list[Peer] = []
        self.changed = threading.Condition()  # notified on every frame received
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def frames(self) -> list[Frame]:
        return [f for p in self.peers for f in p.received]

    def wait_for(self, predicate: Callable[[list[Frame]], bool], timeout: float = 10.0) -> bool:
        """Waits (on frame arrival, not by polling) until ``predicate(frames)`` holds."""
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.frames()), timeout)

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:
                continue
            peer = Peer(sock)
            self.peers.append(peer)
            threading.Thread(target=self._serve, args=(peer,), daemon=True).start()

    def _serve(self, peer: Peer) -> None:
        sock = peer.sock
        sock.settimeout(0.2)
        sock.sendall(self.greeting if self.greeting is not None
                     else wire.PREFACE + wire.encode_frame(SettingsFrame(self.settings)))
        buf, dec = b"", FrameDecoder(16777215, 1 << 20)
        while not self.stopped.is_set():
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                sock.close()  # the client's FIN: close our side too (section 13.4)
                return
            if buf is not None:
                buf += data
                if len(buf) < 8:
                    continue
                data, buf = buf[8:], None  # type: ignore[assignment]
            dec.feed(data)
            while (f := dec.next_frame()) is not None:
                with self.changed:
                    peer.received.append(f)
                    self.changed.notify_all()
                if isinstance(f, Ping) and not f.ack and self.ack_pings:
                    peer.send(Ping(f.data, ack=True))
                if not isinstance(f, SettingsFrame):
                    self.handler(peer, f)

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for p in self.peers:
            try:
                p.sock.close()
            except OSError:
                pass


def echo(peer: Peer, f: Frame) -> None:
    """Unary echo handler: answers on the DATA that completes the request."""
    if isinstance(f, Data):
        buf = peer.state.setdefault(f"buf{f.stream_id}", bytearray())
        assert isinstance(buf, bytearray)
        buf += f.data
        if f.data:
            peer.send(WindowUpdate(0, len(f.data)), WindowUpdate(f.stream_id, len(f.data)))
        if f.end_stream:
            peer.reply(f.stream_id, bytes(buf))


class ScriptedTest(unittest.TestCase):
    """Scripted servers and clients made by a test, closed after it."""

    def setUp(self) -> None:
        self.servers: list[FakeServer] = []
        self.clients: list[Client] = []

    def tearDown(self) -> None:
        for c in self.clients:
            c.close()
        for s in self.servers:
            s.close()

    def server(self, handler: Handler, **kw: object) -> FakeServer:
        s = FakeServer(handler, **kw)  # type: ignore[arg-type]
        self.servers.append(s)
        return s

    def client(self, *servers: FakeServer, **kw: object) -> Client:
        c = Client([s.endpoint for s in servers], connect_timeout=1.0, **kw)  # type: ignore[arg-type]
        self.clients.append(c)
        return c


class ClientRules(ScriptedTest):
    def test_handshake_ping_and_open_layout(self) -> None:
        def handler(peer: Peer, f: Frame) -> None:
            if isinstance(f, Open):
                peer.send(Ping(b"12345678"))
            echo(peer, f)

        s = self.server(handler)
        c = self.client(s)
        self.assertEqual(c.unary("t.S/M", b"hi", timeout=2, metadata={"Trace-Id": "abc"}), b"hi")
        got = s.frames()
        opens = [f for f in got if isinstance(f, Open)]
        self.assertEqual(len(opens), 1)
        self.assertEqual((opens[0].stream_id, opens[0].method, opens[0].metadata, opens[0].end_stream),
                         (1, "t.S/M", (("trace-id", "abc"),), False))
        self.assertTrue(0 < opens[0].timeout_us <= 2_000_000)
        self.assertIn(Data(1, b"hi", True, True), got)
        s.wait_for(lambda fs: Ping(b"12345678", ack=True) in fs)
        self.assertIn(Ping(b"12345678", ack=True), s.frames())
        c.unary("t.S/M", b"again", timeout=2)
        self.assertEqual([f.stream_id for f in s.frames() if isinstance(f, Open)], [1, 3])

    def test_frame_size_windows_and_concurrency(self) -> None:
        active: set[int] = set()
        peak = [0]
        lock = threading.Lock()
        windows = {0: 3000}  # what the client may still send, per the server's accounting
        violations: list[str] = []

        def handler(peer: Peer, f: Frame) -> None:
            if isinstance(f, Data):
                windows.setdefault(f.stream_id, 2048)
                for key in (0, f.stream_id):
                    windows[key] -= len(f.data)
                    if windows[key] < 0:
                        violations.append(f"window {key} overrun")
                    windows[key] += len(f.data)  # echo() grants it straight back
            if isinstance(f, Open):
                with lock:
                    active.add(f.stream_id)
                    peak[0] = max(peak[0], len(active))
            if isinstance(f, Data) and f.end_stream:
                with lock:
                    active.discard(f.stream_id)
                time.sleep(0.02)
            echo(peer, f)

        # MAX_FRAME_SIZE 1024, stream window 2048, connection window 3000, one stream at a time.
        s = self.server(handler, settings=((1, 1024), (2, 1), (3, 2048), (4, 3000)))
        c = self.client(s)
        body = os.urandom(10_000)
        results: list[bytes] = []
        threads = [threading.Thread(target=lambda: results.append(c.unary("t.S/M", body, timeout=5)))
                   for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(results, [body] * 3)
        self.assertEqual(peak[0], 1, "MAX_CONCURRENT_STREAMS 1 was exceeded")
        data = [f for f in s.frames() if isinstance(f, Data)]
        self.assertTrue(all(len(f.data) <= 1024 for f in data))
        self.assertEqual(violations, [])
        per_stream: dict[int, int] = {}
        for f in data:
            per_stream[f.stream_id] = per_stream.get(f.stream_id, 0) + len(f.data)
        self.assertEqual(sorted(per_stream.values()), [10_000] * 3)

    def test_client_returns_credit(self) -> None:
        # The server sends a 2.5 MiB response in 64 KiB frames, never beyond the client's
        # windows (1 MiB stream, 16 MiB connection): the call only completes if the client
        # sends stream WINDOW_UPDATEs as it consumes.
        size = 2_500_000

        def handler(peer: Peer, f: Frame) -> None:
            if isinstance(f, Data) and f.end_stream:
                threading.Thread(target=send_big, args=(peer, f.stream_id), daemon=True).start()
            if isinstance(f, WindowUpdate):
                with peer.lock:
                    peer.state["credit"] = int(peer.state.get("credit", 0)) + f.increment  # type: ignore[arg-type]

        def send_big(peer: Peer, sid: int) -> None:
            sent, end = 0, time.monotonic() + 5
            peer.state["credit"] = 1048576
            while sent < size and time.monotonic() < end:
                with peer.lock:
                    credit = int(peer.state["credit"])  # type: ignore[arg-type]
                n = min(65536, size - sent, credit)
                if n <= 0:
                    time.sleep(0.005)
                    continue
                with peer.lock:
                    peer.state["credit"] = int(peer.state["credit"]) - n  # type: ignore[arg-type]
                peer.send(Data(sid, b"z" * n, end_message=sent + n == size))
                sent += n
            peer.send(Trailers(sid, 0))

        s = self.server(handler)
        c = self.client(s)
        self.assertEqual(len(c.unary("t.S/Big", b"", timeout=8)), size)
        updates = [f for f in s.frames() if isinstance(f, WindowUpdate) and f.stream_id == 1]
        self.assertTrue(updates)
        self.assertTrue(all(u.increment >= 524288 for u in updates))

    def test_goaway_above_last_id_retried_elsewhere(self) -> None:
        def refuse_all(peer: Peer, f: Frame) -> None:
            if isinstance(f, Open):
                peer.send(GoAway(0, 0, "stopping"))

        a, b = self.server(refuse_all), self.server(echo)
        c = self.client(a, b)
        self.assertEqual(c.unary("t.S/M", b"x", timeout=2), b"x")  # not idempotent, still retried
        self.assertEqual(c.unary("t.S/M", b"y", timeout=2), b"y")
        for peer in a.peers:  # a new connection may be tried, but none after its GOAWAY
            self.assertLessEqual(len([f for f in peer.received if isinstance(f, Open)]), 1, "stream after GOAWAY")

    def test_refused_stream_retried_elsewhere(self) -> None:
        def refuse(peer: Peer, f: Frame) -> None:
            if isinstance(f, Open):
                peer.send(Reset(f.stream_id, ErrorCode.REFUSED_STREAM))

        a, b = self.server(refuse), self.server(echo)
        c = self.client(a, b)
        for i in range(4):
            self.assertEqual(c.unary("t.S/M", b"%d" % i, timeout=2), b"%d" % i)

    def test_refused_on_single_endpoint_paced_then_succeeds(self) -> None:
        def refuse_first(peer: Peer, f: Frame) -> None:
            if isinstance(f, Open):
                count = int(peer.state.get("opens", 0)) + 1  # type: ignore[arg-type]
                peer.state["opens"] = count
                if count <= 2:
                    peer.send(Reset(f.stream_id, ErrorCode.REFUSED_STREAM))
                    return
            echo(peer, f)

        c = self.client(self.server(refuse_first))
        self.assertEqual(c.unary("t.S/M", b"x", timeout=2), b"x")

    def test_refused_forever_fails_unavailable_without_hot_loop(self) -> None:
        opened: list[float] = []

        def refuse(peer: Peer, f: Frame) -> None:
            if isinstance(f, Open):
                opened.append(time.monotonic())
                peer.send(Reset(f.stream_id, ErrorCode.REFUSED_STREAM))

        s = self.server(refuse)
        c = self.client(s)
        start = time.monotonic()
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/M", b"x", timeout=0.5)
        # the deadline passed while the call was being retried: DEADLINE_EXCEEDED (section 12.2)
        self.assertEqual(cm.exception.code, Status.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - start, 1.9)  # loose for a loaded machine
        opens = len([f for f in s.frames() if isinstance(f, Open)])
        self.assertLess(opens, 30, "retries after REFUSED_STREAM are not paced")
        # the n-th retry on the refusing connection comes after a pause of 1 ms x 2^(n-1)
        # (at most 100 ms, -20 % jitter): gaps between OPENs are at least that
        gaps = [b - a for a, b in zip(opened, opened[1:])]
        self.assertGreaterEqual(len(gaps), 3)
        for n, gap in enumerate(gaps, start=1):
            self.assertGreaterEqual(gap, 0.8 * min(0.001 * 2 ** (n - 1), 0.1) - 0.0005, f"retry {n}")
        c2 = self.client(s, max_retries=3)  # no deadline: the retry cap ends it
        with self.assertRaises(RPCError) as cm:
            c2.unary("t.S/M", b"x")
        self.assertEqual(cm.exception.code, Status.UNAVAILABLE)

    def test_maybe_processed_not_retried(self) -> None:
        def half(peer: Peer, f: Frame) -> None:
            if isinstance(f, Data) and f.end_stream:  # stream covered by the GOAWAY, then gone
                peer.send(GoAway(f.stream_id, 0, "bye"))
                peer.sock.shutdown(socket.SHUT_RDWR)

        a, b = self.server(half), self.server(echo)
        c = self.client(a, b)
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/M", b"x", timeout=2)
        self.assertEqual(cm.exception.code, Status.UNAVAILABLE)
        self.assertEqual([f for f in b.frames() if isinstance(f, Open)], [], "retried on B")
        # The same failure on an idempotent call is retried on B.
        c2 = self.client(a, b)
        self.assertEqual(c2.unary("t.S/M", b"x", timeout=2, idempotent=True), b"x")

    def test_trailers_status_and_unknown_status(self) -> None:
        def fail(peer: Peer, f: Frame) -> None:
            if isinstance(f, Data) and f.end_stream:
                status = 200 if f.data == b"odd" else 5
                peer.send(Trailers(f.stream_id, status, "nope", (("why", "because"), ("baton-x", "hidden"))))

        c = self.client(self.server(fail))
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/M", b"x", timeout=2)
        self.assertEqual((cm.exception.code_name, cm.exception.message), ("NOT_FOUND", "nope"))
        self.assertEqual(cm.exception.metadata, (("why", "because"),))
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/M", b"odd", timeout=2)
        self.assertEqual(cm.exception.code, Status.UNKNOWN)

    def test_server_data_with_end_stream_is_stream_error(self) -> None:
        def bad(peer: Peer, f: Frame) -> None:
            if isinstance(f, Data) and f.end_stream:
                peer.send(Data(f.stream_id, b"r", end_stream=True, end_message=True))

        s = self.server(bad)
        c = self.client(s)
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/M", b"x", timeout=2)
        self.assertEqual(cm.exception.code, Status.INTERNAL)
        s.wait_for(lambda fs: Reset(1, ErrorCode.PROTOCOL_ERROR) in fs)
        self.assertIn(Reset(1, ErrorCode.PROTOCOL_ERROR), s.frames())

    def test_deadline_sends_cancel(self) -> None:
        s = self.server(lambda peer, f: None)  # never answers
        c = self.client(s)
        start = time.monotonic()
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/M", b"x", timeout=0.3)
        self.assertEqual(cm.exception.code, Status.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - start, 1.9)  # loose for a loaded machine
        s.wait_for(lambda fs: Reset(1, ErrorCode.CANCEL) in fs)
        self.assertIn(Reset(1, ErrorCode.CANCEL), s.frames())

    def test_server_reset_cancel_after_the_deadline_is_deadline_exceeded(self) -> None:
        # Section 10: a server whose deadline passes inside a response message resets with
        # CANCEL; read before the client's own deadline check, it is still that deadline.
        from baton._connection import _reset_failure
        late = _reset_failure(ErrorCode.CANCEL, deadline_passed=True)
        self.assertEqual(late.error.code, Status.DEADLINE_EXCEEDED)
        self.assertTrue(late.processed)
        self.assertFalse(late.retry_if_idempotent)
        self.assertEqual(_reset_failure(ErrorCode.CANCEL, deadline_passed=False).error.code, Status.CANCELLED)
        self.assertFalse(_reset_failure(ErrorCode.REFUSED_STREAM, deadline_passed=True).processed)
        self.assertEqual(_reset_failure(ErrorCode.INTERNAL_ERROR, deadline_passed=True).error.code, Status.INTERNAL)

    def test_connection_limit_goaway_is_not_processed(self) -> None:
        # Section 16.1: at its connection limit a server sends preface, SETTINGS, then
        # GOAWAY(0, ENHANCE_YOUR_CALM) and closes: nothing was processed, the call goes elsewhere.
        full = wire.PREFACE + wire.encode_frame(SettingsFrame()) + wire.encode_frame(
            GoAway(0, ErrorCode.ENHANCE_YOUR_CALM, "connection limit (1) reached; nothing was processed"))
        a = self.server(lambda peer, f: None, greeting=full)
        b = self.server(echo)
        c = self.client(a, b)
        start = time.monotonic()
        for i in range(5):
            self.assertEqual(c.unary("t.S/M", b"%d" % i, timeout=2), b"%d" % i)
        elapsed = time.monotonic() - start
        self.assertEqual([f for f in a.frames() if isinstance(f, Open)], [])
        # Backoff 50 ms x 1.6^n (-20 % jitter) between connects to the full server: at most
        # this many fit in the time the calls took.
        allowed, waited = 1, 0.0
        while waited + 0.04 * 1.6 ** (allowed - 1) <= elapsed:
            waited += 0.04 * 1.6 ** (allowed - 1)
            allowed += 1
        self.assertLessEqual(len(a.peers), allowed, "reconnected to the full server without backing off")

    def test_not_a_baton_server(self) -> None:
        s = self.server(lambda peer, f: None, greeting=b"HTTP/1.1 400 Bad Request\r\n\r\n")
        c = self.client(s)
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/M", b"x", timeout=1)
        self.assertEqual(cm.exception.code, Status.UNAVAILABLE)
        s.wait_for(lambda fs: any(isinstance(f, GoAway) for f in fs))
        goaways = [f for f in s.frames() if isinstance(f, GoAway)]
        self.assertTrue(goaways)
        self.assertEqual((goaways[0].last_stream_id, goaways[0].error_code), (0, ErrorCode.PROTOCOL_ERROR))

    def test_black_holed_endpoint_times_out_and_calls_go_elsewhere(self) -> None:
        # A port whose accept queue is full: the kernel drops every SYN, so a connect there
        # never completes, as to the address of a pod that is gone.
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        hole.listen(0)
        filler = socket.create_connection(hole.getsockname(), timeout=2)
        self.addCleanup(hole.close)
        self.addCleanup(filler.close)
        dead = hole.getsockname()
        alone = Client([dead], connect_timeout=0.3)
        self.clients.append(alone)
        with self.assertRaises(RPCError) as cm:
            alone.unary("t.S/M", b"x", timeout=30)
        self.assertEqual(cm.exception.code, Status.UNAVAILABLE)  # after the connect timeout
        self.assertIn("timed out", str(cm.exception).lower())
        c = Client([dead, self.server(echo).endpoint], connect_timeout=0.3)
        self.clients.append(c)
        for i in range(10):
            self.assertEqual(c.unary("t.S/M", b"%d" % i, timeout=30), b"%d" % i)


class UnaryOnReadyConnection(ScriptedTest):
    """``Client.unary`` on a connection already up runs in one piece (``Connection.unary``):
    the same outcomes as the general path, for the failures it hands over to it."""

    def ready_client(self, handler: Handler) -> tuple[FakeServer, Client]:
        s = self.server(handler)
        c = self.client(s)
        self.assertEqual(c.unary("t.S/M", b"warm", timeout=2), b"warm")  # stream 1: connected
        return s, c

    def test_refused_then_ok(self) -> None:
        def h(peer: Peer, f: Frame) -> None:
            if isinstance(f, Open) and f.stream_id in (3, 5):
                peer.send(Reset(f.stream_id, ErrorCode.REFUSED_STREAM))
            elif f.stream_id not in (3, 5):
                echo(peer, f)
        _, c = self.ready_client(h)
        self.assertEqual(c.unary("t.S/M", b"x", timeout=2), b"x")

    def test_deadline_sends_cancel(self) -> None:
        s, c = self.ready_client(lambda peer, f: echo(peer, f) if f.stream_id <= 1 else None)
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/M", b"x", timeout=0.3)
        self.assertEqual(cm.exception.code, Status.DEADLINE_EXCEEDED)
        self.assertTrue(s.wait_for(lambda fs: Reset(3, ErrorCode.CANCEL) in fs))

    def test_second_response_is_internal_and_reset(self) -> None:
        def h(peer: Peer, f: Frame) -> None:
            if f.stream_id <= 1:
                echo(peer, f)
            elif isinstance(f, Data) and f.end_stream:
                peer.send(Data(f.stream_id, b"1", end_message=True), Data(f.stream_id, b"2", end_message=True))
        s, c = self.ready_client(h)
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/U", b"x", timeout=5)
        self.assertEqual(cm.exception.code, Status.INTERNAL)
        self.assertTrue(s.wait_for(lambda fs: Reset(3, ErrorCode.CANCEL) in fs))

    def test_error_status(self) -> None:
        def h(peer: Peer, f: Frame) -> None:
            if f.stream_id > 1 and isinstance(f, Data) and f.end_stream:
                peer.send(Trailers(f.stream_id, 5, "nope"))
            elif f.stream_id <= 1:
                echo(peer, f)
        _, c = self.ready_client(h)
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/U", b"x", timeout=5)
        self.assertEqual((cm.exception.code, cm.exception.message), (Status.NOT_FOUND, "nope"))

    def test_goaway_above_last_id_retried(self) -> None:
        def h(peer: Peer, f: Frame) -> None:
            if isinstance(f, Open) and f.stream_id == 3:
                peer.send(GoAway(1, ErrorCode.NO_ERROR, "bye"))
            elif f.stream_id != 3:
                echo(peer, f)
        _, c = self.ready_client(h)
        self.assertEqual(c.unary("t.S/M", b"x", timeout=3), b"x")  # on a new connection

    def test_lost_connection_retried_only_if_idempotent(self) -> None:
        for idempotent in (False, True):
            def h(peer: Peer, f: Frame) -> None:
                if isinstance(f, Open) and f.stream_id == 3 and not peer.state.get("lost"):
                    peer.state["lost"] = True
                    peer.sock.close()
                elif f.stream_id != 3 or peer.state.get("lost") is None:
                    echo(peer, f)
            _, c = self.ready_client(h)
            if idempotent:
                self.assertEqual(c.unary("t.S/M", b"x", timeout=3, idempotent=True), b"x")
            else:
                with self.assertRaises(RPCError) as cm:
                    c.unary("t.S/M", b"x", timeout=3)
                self.assertEqual(cm.exception.code, Status.UNAVAILABLE)

    def test_close_while_waiting_cancels(self) -> None:
        _, c = self.ready_client(lambda peer, f: echo(peer, f) if f.stream_id <= 1 else None)
        closer = threading.Timer(0.2, c.close)
        closer.start()
        with self.assertRaises(RPCError) as cm:
            c.unary("t.S/M", b"x", timeout=5)
        closer.join()
        self.assertEqual(cm.exception.code, Status.CANCELLED)


if __name__ == "__main__":
    unittest.main()
