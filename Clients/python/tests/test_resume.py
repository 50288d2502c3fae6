"""Resumable streams (protocol 1.1, PROTOCOL.md section 18) against real servers: a
server-streaming watch continues across servers that stop or die, with no gap and no duplicate.

Skipped unless ``BATON_BIN`` names the ``baton`` executable (see test_live.py)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

import asyncio

import baton.aio
from baton import Client

BIN = os.environ.get("BATON_BIN", "")
HAVE_BIN = bool(BIN) and os.path.isfile(BIN) and os.access(BIN, os.X_OK)


class Server:
    """``baton serve`` with a health port, whose ``/drainz`` says how many calls it runs."""

    def __init__(self) -> None:
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([BIN, "serve", "--port", "0", "--health-port", "0", "--quiet"],
                                     stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL)
        self.port, self.health = self._read_ports(timeout=10.0)

    def _read_ports(self, timeout: float) -> tuple[int, int]:
        assert self.proc.stdout is not None
        end, text = time.monotonic() + timeout, b""
        while text.count(b"\n") < 2:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise AssertionError("server did not print its listening and health lines in time")
            chunk = os.read(self.proc.stdout.fileno(), 256)
            if not chunk:
                raise AssertionError("server exited before listening")
            text += chunk
        ports = {line.split()[0]: int(line.rsplit(":", 1)[1]) for line in text.decode().splitlines()[:2]}
        return ports["listening"], ports["health"]

    def open_streams(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health}/drainz", timeout=2) as answer:
                return int(json.load(answer)["open_streams"])
        except OSError:
            return -1

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


@unittest.skipUnless(HAVE_BIN, "needs BATON_BIN=/path/to/baton")
class ResumeTest(unittest.TestCase):
    def setUp(self) -> None:
        self.servers = [Server() for _ in range(4)]

    def tearDown(self) -> None:
        for s in self.servers:
            s.kill()

    def carrier(self) -> Server:
        """The server running the test's one stream (seen through /drainz)."""
        end = time.monotonic() + 10
        while time.monotonic() < end:
            for s in self.servers:
                if s.proc.poll() is None and s.open_streams() == 1:
                    return s
            time.sleep(0.01)
        raise AssertionError("no server shows the stream")

    def test_10000_numbers_through_three_stops(self) -> None:
        # 10,000 numbers, one a millisecond; at 2,500, 5,000 and 7,500 the server carrying the
        # stream is stopped with SIGTERM (a graceful stop): it ends the stream at its next
        # checkpoint, and the client continues it on another server.
        with Client([("127.0.0.1", s.port) for s in self.servers], connect_timeout=2.0) as c:
            call = c.server_streaming("demo.Echo/Watch", b"10000 1", timeout=120)
            numbers: list[int] = []
            for message in call:
                numbers.append(int(message))
                if len(numbers) in (2500, 5000, 7500):
                    self.carrier().proc.send_signal(signal.SIGTERM)
            self.assertEqual(numbers, list(range(10000)), "every number once, in order")
            self.assertEqual(call.resumed, 3)

    def test_watch_survives_a_killed_server(self) -> None:
        # SIGKILL: no GOAWAY, the connection is lost after a checkpoint; the stream resumes.
        with Client([("127.0.0.1", s.port) for s in self.servers], connect_timeout=2.0) as c:
            # An endless watch, read until it has moved: under load the server may send far
            # ahead of the reader before the kill. Bounded: one that never moves stops at 10,000.
            call = c.server_streaming("demo.Echo/Watch", b"0 1", timeout=60)
            numbers = []
            for message in call:
                numbers.append(int(message))
                if len(numbers) == 200:
                    self.carrier().proc.kill()
                if len(numbers) >= 600 and call.resumed > 0 or len(numbers) == 10000:
                    break
            call.cancel()
            self.assertEqual(numbers, list(range(len(numbers))), "every number once, in order")
            self.assertEqual(call.resumed, 1)

    def test_asyncio_watch_through_a_stop(self) -> None:
        async def run() -> tuple[list[int], int]:
            async with baton.aio.Client([("127.0.0.1", s.port) for s in self.servers],
                                        connect_timeout=2.0) as c:
                # Endless, read until it has moved (see the SIGKILL test); at most 10,000.
                call = c.server_streaming("demo.Echo/Watch", b"0 1", timeout=60)
                numbers: list[int] = []
                async for message in call:
                    numbers.append(int(message))
                    if len(numbers) == 300:
                        carrier = await asyncio.get_running_loop().run_in_executor(None, self.carrier)
                        carrier.proc.send_signal(signal.SIGTERM)
                    if len(numbers) >= 800 and call.resumed > 0 or len(numbers) == 10000:
                        break
                call.cancel()
                return numbers, call.resumed

        numbers, resumed = asyncio.run(run())
        self.assertEqual(numbers, list(range(len(numbers))), "every number once, in order")
        self.assertEqual(resumed, 1)


if __name__ == "__main__":
    unittest.main()
