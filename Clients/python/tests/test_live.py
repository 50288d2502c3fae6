"""Live tests against the real server: ``$BATON_BIN serve --port 0 --quiet`` subprocesses.

Skipped unless ``BATON_BIN`` names an executable. Every server started is killed in tearDown,
every wait has a timeout, and the whole suite takes well under a minute.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import tempfile
import threading
import time
import unittest

import asyncio

import baton.aio
from baton import Client, RPCError, Status

BIN = os.environ.get("BATON_BIN", "")
SKIP_REASON = ("live tests need BATON_BIN=/path/to/baton (an executable built with "
               "`swift build --product baton`)"
               if not BIN else f"BATON_BIN={BIN!r} is not an executable file")
HAVE_BIN = bool(BIN) and os.path.isfile(BIN) and os.access(BIN, os.X_OK)


class Server:
    """One ``baton serve`` subprocess on a free loopback port."""

    def __init__(self) -> None:
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([BIN, "serve", "--port", "0", "--quiet"], stdout=subprocess.PIPE,
                                     stderr=self.log, stdin=subprocess.DEVNULL)
        self.port = self._read_port(timeout=10.0)

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        end, line = time.monotonic() + timeout, b""
        while not line.endswith(b"\n"):
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.kill()
                raise AssertionError("server did not print 'listening HOST:PORT' in time")
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                self.kill()
                raise AssertionError(f"server exited before listening: {self.stderr()}")
            line += chunk
        text = line.decode().strip()
        if not text.startswith("listening "):
            self.kill()
            raise AssertionError(f"unexpected first line {text!r}")
        return int(text.rsplit(":", 1)[1])

    @property
    def endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


@unittest.skipUnless(HAVE_BIN, SKIP_REASON)
class LiveTest(unittest.TestCase):
    def setUp(self) -> None:
        self.servers: list[Server] = []
        self.clients: list[Client] = []

    def tearDown(self) -> None:
        for c in self.clients:
            c.close()
        for s in self.servers:
            s.kill()

    def server(self) -> Server:
        s = Server()
        self.servers.append(s)
        return s

    def client(self, *servers: Server, **kwargs: object) -> Client:
        c = Client([s.endpoint for s in servers], connect_timeout=2.0, **kwargs)  # type: ignore[arg-type]
        self.clients.append(c)
        return c

    # --- single server -----------------------------------------------------------------------

    def test_unary_echo(self) -> None:
        c = self.client(self.server())
        self.assertEqual(c.unary("demo.Echo/Unary", b"hello, baton", timeout=5), b"hello, baton")
        self.assertEqual(c.unary("demo.Echo/Unary", bytes(range(256)), timeout=5), bytes(range(256)))

    def test_empty_message(self) -> None:
        c = self.client(self.server())
        self.assertEqual(c.unary("demo.Echo/Unary", b"", timeout=5), b"")

    def test_3mib_message(self) -> None:
        # Larger than MAX_FRAME_SIZE (fragmentation) and than the 1 MiB stream window in each
        # direction (flow control: both sides must return credit as they consume).
        c = self.client(self.server())
        payload = os.urandom(3 * 1024 * 1024)
        self.assertEqual(c.unary("demo.Echo/Unary", payload, timeout=20), payload)
        # Several in a row on the same connection: credit was returned correctly.
        for _ in range(3):
            self.assertEqual(c.unary("demo.Echo/Unary", payload, timeout=20), payload)

    def test_metadata_accepted(self) -> None:
        c = self.client(self.server())
        md = {"trace-id": "abc-123", "X-Upper-Is-Lowered": "v", "empty": "", "utf8": "grüße ☕"}
        self.assertEqual(c.unary("demo.Echo/Unary", b"m", timeout=5, metadata=md), b"m")

    def test_reserved_metadata_refused_locally(self) -> None:
        c = self.client(self.server())
        for md in ({"baton-x": "1"}, {"bad name": "1"}, {"": "1"}):
            with self.assertRaises(RPCError) as cm:
                c.unary("demo.Echo/Unary", b"m", timeout=5, metadata=md)
            self.assertEqual(cm.exception.code, Status.INVALID_ARGUMENT)

    def test_unknown_method_unimplemented(self) -> None:
        c = self.client(self.server())
        with self.assertRaises(RPCError) as cm:
            c.unary("demo.Echo/NoSuchMethod", b"x", timeout=5)
        self.assertEqual(cm.exception.code, 12)
        self.assertEqual(cm.exception.code_name, "UNIMPLEMENTED")
        self.assertEqual(c.unary("demo.Echo/Unary", b"still fine", timeout=5), b"still fine")

    def test_deadline_exceeded(self) -> None:
        c = self.client(self.server())
        start = time.monotonic()
        with self.assertRaises(RPCError) as cm:
            c.unary("demo.Echo/Wait", b"2000", timeout=0.2)
        elapsed = time.monotonic() - start
        self.assertEqual(cm.exception.code, Status.DEADLINE_EXCEEDED)
        self.assertLess(elapsed, 3.0)  # the 2 s Wait would take longer; generous under load
        self.assertGreaterEqual(elapsed, 0.19)
        self.assertEqual(c.unary("demo.Echo/Wait", b"10", timeout=5), b"10")

    def test_server_streaming_over_bidi(self) -> None:
        # demo.Echo/Bidi echoes each message; one request message + half-close is a valid
        # bidirectional call, and the response is read as a stream.
        c = self.client(self.server())
        self.assertEqual(list(c.server_streaming("demo.Echo/Bidi", b"one", timeout=5)), [b"one"])
        it = c.server_streaming("demo.Echo/Bidi", b"two", timeout=5)
        self.assertEqual(next(it), b"two")
        self.assertTrue(it.cancel())  # cancels the call still open, without error
        self.assertEqual(it.code, Status.CANCELLED)
        self.assertEqual(c.unary("demo.Echo/Unary", b"after", timeout=5), b"after")

    def test_concurrent_calls_share_one_connection(self) -> None:
        c = self.client(self.server())
        results: list[bytes] = []
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            try:
                results.append(c.unary("demo.Echo/Wait", b"200", timeout=5))
                results.append(c.unary("demo.Echo/Unary", str(i).encode(), timeout=5))
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
        start = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 40)
        self.assertLess(time.monotonic() - start, 3.5, "20 Wait(200) calls should run concurrently")  # 4 s in turn

    # --- the four shapes, blocking and asyncio -------------------------------------------------

    def test_four_shapes_blocking(self) -> None:
        c = self.client(self.server())
        call = c.unary_call("demo.Echo/Unary", b"u", timeout=5)
        self.assertEqual(call.result(), b"u")
        self.assertEqual((call.code, call.trailers is not None), (Status.OK, True))
        # demo.Echo/Bidi echoes each message: one request is a valid client-streaming call
        self.assertEqual(c.client_streaming("demo.Echo/Bidi", [b"c"], timeout=5), b"c")
        self.assertEqual(list(c.server_streaming("demo.Echo/Bidi", b"s", timeout=5)), [b"s"])
        bidi = c.bidirectional("demo.Echo/Bidi", timeout=10)
        sent = [b"m%d" % i for i in range(300)]

        def writer() -> None:
            for m in sent:
                bidi.write(m)
            bidi.done_writing()

        t = threading.Thread(target=writer)
        t.start()
        self.assertEqual(list(bidi), sent)
        t.join(10)
        self.assertEqual(bidi.code, Status.OK)
        with self.assertRaises(RPCError) as cm:  # two requests on a server that echoes each
            c.client_streaming("demo.Echo/Bidi", [b"1", b"2"], timeout=5)
        self.assertEqual(cm.exception.code, Status.INTERNAL)

    def test_four_shapes_asyncio(self) -> None:
        s = self.server()

        async def main() -> None:
            async with baton.aio.Client([s.endpoint], connect_timeout=2.0) as c:
                self.assertEqual(await c.unary("demo.Echo/Unary", b"u", timeout=5), b"u")
                self.assertEqual(await c.client_streaming("demo.Echo/Bidi", [b"c"], timeout=5), b"c")
                self.assertEqual([m async for m in c.server_streaming("demo.Echo/Bidi", b"s", timeout=5)],
                                 [b"s"])
                bidi = c.bidirectional("demo.Echo/Bidi", timeout=10)
                sent = [b"m%d" % i for i in range(300)]

                async def writer() -> None:
                    for m in sent:
                        await bidi.write(m)
                    await bidi.done_writing()

                w = asyncio.ensure_future(writer())
                self.assertEqual([m async for m in bidi], sent)
                await w
                results = await asyncio.gather(*(c.unary("demo.Echo/Wait", b"200", timeout=5)
                                                 for _ in range(20)))
                self.assertEqual(results, [b"200"] * 20)

        start = time.monotonic()
        asyncio.run(asyncio.wait_for(main(), 60))
        self.assertLess(time.monotonic() - start, 30)

    def test_sigterm_failover_all_shapes_asyncio(self) -> None:
        a, b = self.server(), self.server()
        failures: list[BaseException] = []
        counts = {"unary": 0, "bidi": 0, "client": 0}

        async def main() -> None:
            async with baton.aio.Client([a.endpoint, b.endpoint], connect_timeout=2.0) as c:
                stop = asyncio.Event()

                async def unary(i: int) -> None:
                    while not stop.is_set():
                        body = b"u%d" % i
                        if await c.unary("demo.Echo/Unary", body, timeout=5) != body:
                            raise AssertionError("bad unary reply")
                        counts["unary"] += 1

                async def bidi() -> None:
                    while not stop.is_set():
                        call = c.bidirectional("demo.Echo/Bidi", timeout=5)
                        for j in range(5):
                            await call.write(b"%d" % j)
                        await call.done_writing()
                        if [m async for m in call] != [b"%d" % j for j in range(5)]:
                            raise AssertionError("bad stream")
                        counts["bidi"] += 1

                async def client_streaming() -> None:
                    while not stop.is_set():
                        if await c.client_streaming("demo.Echo/Bidi", [b"c"], timeout=5) != b"c":
                            raise AssertionError("bad client-streaming reply")
                        counts["client"] += 1

                async def guard(coro: object) -> None:
                    try:
                        await coro  # type: ignore[misc]
                    except BaseException as e:  # noqa: BLE001
                        failures.append(e)

                tasks = [asyncio.ensure_future(guard(f)) for f in
                         [unary(0), unary(1), bidi(), bidi(), client_streaming()]]
                await asyncio.sleep(0.3)  # load runs on both servers
                a.proc.send_signal(signal.SIGTERM)
                await asyncio.get_running_loop().run_in_executor(None, a.proc.wait, 15)
                await asyncio.sleep(0.3)  # and goes on with B alone
                stop.set()
                await asyncio.gather(*tasks)

        asyncio.run(asyncio.wait_for(main(), 60))
        self.assertEqual(failures, [], f"{len(failures)} failed calls")
        self.assertEqual(a.proc.returncode, 0, a.stderr())
        self.assertTrue(all(n > 5 for n in counts.values()), counts)

    def test_frozen_server_left_by_keepalive(self) -> None:
        a, b = self.server(), self.server()
        c = self.client(a, b, keepalive_interval=0.5, keepalive_timeout=0.5)
        self.assertEqual(c.unary("demo.Echo/Unary", b"to a", timeout=5), b"to a")  # rr: A, then B
        self.assertEqual(c.unary("demo.Echo/Unary", b"to b", timeout=5), b"to b")
        outcome: list[BaseException | bytes] = []
        t = threading.Thread(target=lambda: outcome.append(_outcome(
            lambda: c.unary("demo.Echo/Wait", b"3000", timeout=30))), daemon=True)  # on A's connection
        a.proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            t.start()
            t.join(15)
            elapsed = time.monotonic() - start
            self.assertEqual(len(outcome), 1)
            err = outcome[0]
            self.assertIsInstance(err, RPCError)
            assert isinstance(err, RPCError)
            self.assertEqual(err.code, Status.UNAVAILABLE)
            self.assertIn("keepalive", err.message)
            self.assertLess(elapsed, 10.0)
            # calls go on with B while A stays frozen, and idempotent ones fail over
            for i in range(4):
                self.assertEqual(c.unary("demo.Echo/Unary", b"%d" % i, timeout=5, idempotent=True), b"%d" % i)
        finally:
            a.proc.send_signal(signal.SIGCONT)


    def test_racing_cancels_leave_the_connection_clean(self) -> None:
        # 8 threads x 25 bidirectional calls, each cancelled at a random point (or finished),
        # from its own thread or another: every call ends OK or CANCELLED, nothing hangs, and
        # no stream slot or window credit leaks (the connection still serves 3 MiB after).
        import random
        c = self.client(self.server())
        codes: list[object] = []
        lock = threading.Lock()

        def worker(seed: int) -> None:
            rnd = random.Random(seed)
            for _ in range(25):
                call = c.bidirectional("demo.Echo/Bidi", timeout=20)
                stop_after = rnd.randrange(6)
                try:
                    for j in range(5):
                        if j == stop_after:
                            if rnd.random() < 0.5:
                                threading.Thread(target=call.cancel).start()
                            else:
                                call.cancel()
                            break
                        call.write(b"%d" % j)
                        call.read()
                    else:
                        call.done_writing()
                    while call.read() is not None:
                        pass
                    code: object = call.code
                except RPCError as e:
                    code = e.code
                with lock:
                    codes.append(code)

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in threads), "a call hung")
        self.assertEqual(len(codes), 200)
        self.assertEqual(set(codes) - {Status.OK, Status.CANCELLED}, set(), codes)
        self.assertIn(Status.CANCELLED, codes)
        self.assertIn(Status.OK, codes)
        big = os.urandom(3 * 1024 * 1024)
        self.assertEqual(c.unary("demo.Echo/Unary", big, timeout=20), big)
        conns = [ep for ep in c.endpoints if ep["ready"]]
        self.assertEqual(len(conns), 1)
        for conn in c._pool.conns:  # white box: no stream left open, no slot held
            self.assertEqual((conn._slots, len(conn._streams)), (0, 0))

    def test_racing_task_cancels_asyncio(self) -> None:
        # 100 asyncio bidirectional calls, half of them cancelled (task.cancel()) at a random
        # moment: the rest end OK, nothing hangs, no slot leaks.
        import random
        s = self.server()
        rnd = random.Random(7)

        async def one(c: baton.aio.Client) -> object:
            call = c.bidirectional("demo.Echo/Bidi", timeout=20)
            for j in range(5):
                await call.write(b"%d" % j)
                await call.read()
            await call.done_writing()
            return [m async for m in call] == [] and call.code

        async def main() -> list[object]:
            async with baton.aio.Client([s.endpoint], connect_timeout=2.0) as c:
                tasks = [asyncio.ensure_future(one(c)) for _ in range(100)]
                for t in tasks[::2]:
                    asyncio.get_running_loop().call_later(rnd.random() * 0.05, t.cancel)
                results = await asyncio.gather(*tasks, return_exceptions=True)
                self.assertEqual(await c.unary("demo.Echo/Unary", b"after", timeout=10), b"after")
                for conn in c._pool.conns:
                    self.assertEqual((conn._slots, len(conn._streams)), (0, 0))
                return results

        results = asyncio.run(asyncio.wait_for(main(), 60))
        kinds = {type(r).__name__ if isinstance(r, BaseException) else r for r in results}
        self.assertEqual(kinds - {Status.OK, "CancelledError"}, set(), results)
        self.assertTrue(all(r == Status.OK for r in results[1::2]))

    # --- several servers ---------------------------------------------------------------------

    def test_sigterm_failover_no_failures(self) -> None:
        a, b = self.server(), self.server()
        c = self.client(a, b)
        stop = threading.Event()
        ok, failures = [0], []
        lock = threading.Lock()

        def loop(method: str, body: bytes) -> None:
            while not stop.is_set():
                try:
                    reply = c.unary(method, body, timeout=5)
                    if reply != body:
                        raise AssertionError(f"bad reply {reply!r}")
                    with lock:
                        ok[0] += 1
                except BaseException as e:  # noqa: BLE001
                    with lock:
                        failures.append(e)

        def streams() -> None:  # bidirectional calls, replayed if refused
            while not stop.is_set():
                try:
                    call = c.bidirectional("demo.Echo/Bidi", timeout=5)
                    for j in range(3):
                        call.write(b"%d" % j)
                    call.done_writing()
                    if list(call) != [b"0", b"1", b"2"]:
                        raise AssertionError("bad stream")
                    with lock:
                        ok[0] += 1
                except BaseException as e:  # noqa: BLE001
                    with lock:
                        failures.append(e)

        threads = [threading.Thread(target=loop, args=("demo.Echo/Unary", b"ping-%d" % i)) for i in range(4)]
        threads += [threading.Thread(target=loop, args=("demo.Echo/Wait", b"100")) for _ in range(2)]
        threads += [threading.Thread(target=streams) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        a.proc.send_signal(signal.SIGTERM)
        time.sleep(0.7)
        stop.set()
        for t in threads:
            t.join(10)
        self.assertFalse(any(t.is_alive() for t in threads))
        self.assertEqual(failures, [], f"{len(failures)} failed calls")
        self.assertGreater(ok[0], 50)
        self.assertEqual(a.proc.wait(timeout=15), 0, a.stderr())
        # B alone serves from now on.
        self.assertEqual(c.unary("demo.Echo/Unary", b"after", timeout=5), b"after")

    def test_sigkill_mid_call_fails_unavailable_not_retried(self) -> None:
        a, b = self.server(), self.server()
        c = self.client(a, b)  # the first call goes to the first endpoint, A
        outcome: list[BaseException | bytes] = []
        done = threading.Event()

        self.assertEqual(c.unary("demo.Echo/Unary", b"a", timeout=5), b"a")  # connect A, then B:
        self.assertEqual(c.unary("demo.Echo/Unary", b"b", timeout=5), b"b")  # the next call is A's
        pending = c.unary_call("demo.Echo/Wait", b"3000", timeout=10)

        def call() -> None:
            try:
                outcome.append(pending.result())
            except BaseException as e:  # noqa: BLE001
                outcome.append(e)
            done.set()

        t = threading.Thread(target=call, daemon=True)
        t.start()
        _wait_until_sent(pending)
        killed = time.monotonic()
        a.proc.kill()
        self.assertTrue(done.wait(2.5), "the call did not fail within 2.5 s of the kill")  # not the 3 s Wait
        self.assertLess(time.monotonic() - killed, 2.5)
        t.join(5)
        self.assertEqual(len(outcome), 1)
        err = outcome[0]
        self.assertIsInstance(err, RPCError, f"expected UNAVAILABLE, got {err!r} (retried on B?)")
        assert isinstance(err, RPCError)
        self.assertEqual(err.code, Status.UNAVAILABLE)
        # The next call fails over to B.
        self.assertEqual(c.unary("demo.Echo/Unary", b"next", timeout=5), b"next")

    def test_sigkill_mid_call_idempotent_is_retried(self) -> None:
        a, b = self.server(), self.server()
        c = self.client(a, b)
        outcome: list[BaseException | bytes] = []

        self.assertEqual(c.unary("demo.Echo/Unary", b"a", timeout=5), b"a")  # A, B, then A again
        self.assertEqual(c.unary("demo.Echo/Unary", b"b", timeout=5), b"b")
        pending = c.unary_call("demo.Echo/Wait", b"700", timeout=10, idempotent=True)

        def call() -> None:
            try:
                outcome.append(pending.result())
            except BaseException as e:  # noqa: BLE001
                outcome.append(e)

        t = threading.Thread(target=call, daemon=True)
        t.start()
        _wait_until_sent(pending)
        a.proc.kill()
        t.join(5)
        self.assertEqual(outcome, [b"700"])

    def test_unreachable_endpoint_is_skipped(self) -> None:
        b = self.server()
        dead = self.server()
        dead.kill()  # a port nothing listens on any more
        c = Client([("127.0.0.1", dead.port), b.endpoint], connect_timeout=2.0)
        self.clients.append(c)
        for i in range(10):
            self.assertEqual(c.unary("demo.Echo/Unary", b"%d" % i, timeout=5), b"%d" % i)
        c2 = Client([("127.0.0.1", dead.port)], connect_timeout=0.5)
        self.clients.append(c2)
        with self.assertRaises(RPCError) as cm:
            c2.unary("demo.Echo/Unary", b"x", timeout=0.5)
        self.assertIn(cm.exception.code, (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED))


def _wait_until_sent(call: object) -> None:
    """Until the call's OPEN and request are written (white box: its attempt is published).
    Nothing to await from outside: polled, with a generous bound."""
    end = time.monotonic() + 10
    while getattr(call, "_core").attempt is None and time.monotonic() < end:
        time.sleep(0.001)
    assert getattr(call, "_core").attempt is not None, "the call was not sent within 10 s"


def _outcome(fn: object) -> BaseException | bytes:
    try:
        return fn()  # type: ignore[operator,no-any-return]
    except BaseException as e:  # noqa: BLE001
        return e


if __name__ == "__main__":
    unittest.main()
