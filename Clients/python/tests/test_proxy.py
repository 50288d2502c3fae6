"""Interruption tests through ``baton proxy``: the SDK against planned faults.

``$BATON_BIN proxy`` stands between the client and a ``$BATON_BIN serve`` and injects the faults
of a plan (see ``baton proxy --help``) at the frames it names. A GOAWAY the proxy sends is made
true: the server never sees the streams above its last id, so the SDK's transparent retry of
them is safe, and the servers' ledgers show each call processed exactly once.

Skipped unless ``BATON_BIN`` names an executable, like the other live tests.
"""

from __future__ import annotations

import os
import select
import subprocess
import tempfile
import time
import unittest

from baton import Client, RPCError, Status

from test_live import BIN, HAVE_BIN, SKIP_REASON, Server


class Proxy:
    """One ``baton proxy`` subprocess in front of ``upstream``, on a free loopback port."""

    def __init__(self, upstream: Server, faults: str | None = None, seed: int = 0) -> None:
        self.log = tempfile.TemporaryFile()
        args = [BIN, "proxy", "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream.port}",
                "--seed", str(seed)]
        if faults is not None:
            args += ["--faults", faults]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        self.port = self._read_port(timeout=10.0)

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        end, line = time.monotonic() + timeout, b""
        while not line.endswith(b"\n"):
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.kill()
                raise AssertionError("proxy did not print 'listening HOST:PORT' in time")
            chunk = os.read(self.proc.stdout.fileno(), 1)
            if not chunk:
                self.kill()
                raise AssertionError(f"proxy exited before listening: {self.stderr()}")
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

    def injected(self) -> list[str]:
        """The proxy's log lines for faults it injected, one per injection."""
        return [line for line in self.stderr().splitlines() if line.startswith("baton info fault injected ")]

    def stop(self) -> int:
        """SIGTERM, then the exit status."""
        self.proc.terminate()
        return self.proc.wait(timeout=10)

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
class ProxyTest(unittest.TestCase):
    def setUp(self) -> None:
        self.processes: list[Server | Proxy] = []
        self.clients: list[Client] = []

    def tearDown(self) -> None:
        for c in self.clients:
            c.close()
        for p in self.processes:
            p.kill()

    def server(self) -> Server:
        s = Server()
        self.processes.append(s)
        return s

    def proxy(self, upstream: Server, faults: str | None = None, seed: int = 0) -> Proxy:
        p = Proxy(upstream, faults, seed)
        self.processes.append(p)
        return p

    def client(self, *endpoints: tuple[str, int]) -> Client:
        c = Client(list(endpoints), connect_timeout=2.0)
        self.clients.append(c)
        return c

    def ledger(self, server: Server) -> list[str]:
        """The ids ``demo.Echo/Ledger`` recorded on ``server``, asked directly (not via a proxy)."""
        c = self.client(server.endpoint)
        return [i for i in c.unary("demo.Echo/LedgerDump", b"", timeout=10).decode().split("\n") if i]

    def test_no_plan_forwards_unchanged(self) -> None:
        proxy = self.proxy(self.server())
        c = self.client(proxy.endpoint)
        self.assertEqual(c.unary("demo.Echo/Unary", b"through", timeout=10), b"through")
        self.assertEqual(list(c.server_streaming("demo.Echo/Bidi", b"one", timeout=10)), [b"one"])
        self.assertEqual(proxy.injected(), [])
        self.assertEqual(proxy.stop(), 0)

    def test_goaway_is_retried_transparently(self) -> None:
        # Two servers; the proxy in front of the first sends GOAWAY(last=3) at its connection's
        # 3rd OPEN (stream 5), which the first server never sees: the SDK retries that call on
        # the second server (or a new connection), and no call fails or runs twice.
        first, second = self.server(), self.server()
        proxy = self.proxy(first, "goaway last=3 after-opens=3", seed=1)
        c = self.client(proxy.endpoint, second.endpoint)
        ids = [f"py-{i}" for i in range(20)]
        failed = []
        for i in ids:
            try:
                self.assertEqual(c.unary("demo.Echo/Ledger", i.encode(), timeout=10), i.encode())
            except RPCError as e:
                failed.append((i, e))
        self.assertEqual(failed, [])
        injected = proxy.injected()
        self.assertEqual(len([line for line in injected if 'action="goaway last=3 NO_ERROR"' in line]), 1,
                         proxy.stderr())
        self.assertTrue(any("stream=5 message=0" in line for line in injected), proxy.stderr())
        processed = self.ledger(first) + self.ledger(second)
        self.assertEqual(sorted(processed), sorted(ids), "every call processed exactly once")
        self.assertEqual(proxy.stop(), 0)
        self.assertIn("baton info stopped proxied=", proxy.stderr())

    def test_stalled_server(self) -> None:
        # The proxy forwards nothing, either way, for 6 s after the first OPEN. A caller with a
        # 300 ms deadline gets DEADLINE_EXCEEDED; the SDK's keepalive (1 s + 2 s by default)
        # then finds the connection dead. A call that was waiting on it may have been processed,
        # so it is retried only because it is declared idempotent, and it waits out the
        # endpoint's reconnect backoff (wait_for_ready) for a new connection, which the plan
        # (connection 1 only) leaves alone.
        proxy = self.proxy(self.server(), "stall 6s after-opens=1")
        c = self.client(proxy.endpoint)
        with self.assertRaises(RPCError) as cm:
            c.unary("demo.Echo/Unary", b"impatient", timeout=0.3)
        self.assertEqual(cm.exception.code, Status.DEADLINE_EXCEEDED)
        self.assertEqual(c.unary("demo.Echo/Unary", b"patient", timeout=30, idempotent=True, wait_for_ready=True), b"patient")
        self.assertEqual(len(proxy.injected()), 1, proxy.stderr())
        self.assertIn('action="stall 6s"', proxy.injected()[0])

    def test_bad_plan_is_a_usage_error(self) -> None:
        upstream = self.server()
        run = subprocess.run([BIN, "proxy", "--listen", "127.0.0.1:0", "--upstream",
                              f"127.0.0.1:{upstream.port}", "--faults", "goaway last=x"],
                             capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
        self.assertEqual(run.returncode, 2)
        self.assertIn("line 1, column 13", run.stderr.decode())


if __name__ == "__main__":
    unittest.main()
