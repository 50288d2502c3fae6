"""Benchmarks of the Python client against ``baton bench server``, beside the Swift client.

    python -m baton.bench --server /path/to/baton            # starts its own bench server
    python -m baton.bench --port P [--swift /path/to/baton]  # against a running one

Scenarios (the Swift client's ``baton bench unary`` and ``baton bench stream`` measure the same):

* ``unary``: C callers in closed loops (call, wait for the reply, repeat) over one client, for
  C = 1 and 16, with the blocking client (threads) and the asyncio client (tasks).
* ``stream``: one bidirectional ``bench.Echo/Stream`` call; one writer sends B-byte messages as
  fast as flow control allows, one reader counts the echoes.

Each prints one ``RESULT ...`` line in the format of ``baton bench``. With ``--swift BIN`` the
Swift client's runs follow, against the same server, in the same run. ``--rounds N`` runs the
unary scenarios N times in turn (Python blocking, Python asyncio, Swift, again...), so that a
change in the machine's load falls on all of them alike, and ends with one ``MEDIAN ...`` line
per client: the median over the rounds of each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import select
import subprocess
import sys
import threading
import time

from . import aio
from .client import Client
from .errors import RPCError


def _percentiles(lat: list[float]) -> str:
    if not lat:
        return "p50_us=0 p90_us=0 p99_us=0 max_us=0"
    lat.sort()

    def at(q: float) -> int:
        return int(lat[min(len(lat) - 1, int(q * len(lat)))] * 1e6)

    return f"p50_us={at(0.5)} p90_us={at(0.9)} p99_us={at(0.99)} max_us={int(lat[-1] * 1e6)}"


def _line(kind: str, impl: str, conc: int, size: int, secs: float, lat: list[float], errors: int) -> str:
    return (f"RESULT {kind} impl={impl} conc={conc} size={size} secs={secs:g} calls={len(lat)} "
            f"errors={errors} rps={int(len(lat) / secs)} {_percentiles(lat)}")


def unary_blocking(port: int, conc: int, secs: float, warmup: float, size: int) -> str:
    payload = os.urandom(size)
    lat: list[float] = []
    errors = [0]
    with Client([("127.0.0.1", port)]) as client:
        client.unary("bench.Echo/Unary", payload, timeout=10, wait_for_ready=True)
        start = time.perf_counter()
        measure_from, end = start + warmup, start + warmup + secs

        def caller() -> None:
            mine: list[float] = []
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    break
                try:
                    client.unary("bench.Echo/Unary", payload, timeout=10)
                except RPCError:
                    errors[0] += 1
                    continue
                t1 = time.perf_counter()
                if t0 >= measure_from and t1 <= end:
                    mine.append(t1 - t0)
            lat.extend(mine)

        threads = [threading.Thread(target=caller) for _ in range(conc)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return _line("unary", "python", conc, size, secs, lat, errors[0])


def unary_asyncio(port: int, conc: int, secs: float, warmup: float, size: int) -> str:
    payload = os.urandom(size)
    lat: list[float] = []
    errors = [0]

    async def main() -> None:
        async with aio.Client([("127.0.0.1", port)]) as client:
            await client.unary("bench.Echo/Unary", payload, timeout=10, wait_for_ready=True)
            start = time.perf_counter()
            measure_from, end = start + warmup, start + warmup + secs

            async def caller() -> None:
                while True:
                    t0 = time.perf_counter()
                    if t0 >= end:
                        break
                    try:
                        await client.unary("bench.Echo/Unary", payload, timeout=10)
                    except RPCError:
                        errors[0] += 1
                        continue
                    t1 = time.perf_counter()
                    if t0 >= measure_from and t1 <= end:
                        lat.append(t1 - t0)

            await asyncio.gather(*(caller() for _ in range(conc)))

    asyncio.run(main())
    return _line("unary", "python-asyncio", conc, size, secs, lat, errors[0])


def stream(port: int, secs: float, warmup: float, size: int) -> str:
    payload = os.urandom(size)
    with Client([("127.0.0.1", port)]) as client:
        call = client.bidirectional("bench.Echo/Stream", wait_for_ready=True)
        start = time.perf_counter()
        measure_from, end = start + warmup, start + warmup + secs

        def writer() -> None:
            while time.perf_counter() < end:
                for _ in range(64):
                    if not call.write(payload):
                        return
            call.done_writing()

        t = threading.Thread(target=writer)
        t.start()
        measured = 0
        try:
            for _ in call:
                now = time.perf_counter()
                if measure_from <= now <= end:
                    measured += 1
        except RPCError as e:
            return f"RESULT stream impl=python size={size} error={e.code_name}"
        t.join()
    rate = measured / secs
    return (f"RESULT stream impl=python size={size} secs={secs:g} msgs={measured} "
            f"msgs_per_s={int(rate)} MB_per_s={rate * size / 1e6:.2f}")


def _start_server(binary: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen([binary, "bench", "server", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = b""
    end = time.monotonic() + 30
    while not line.endswith(b"\n"):
        if time.monotonic() > end or not select.select([proc.stdout], [], [], 1.0)[0] and proc.poll() is not None:
            proc.kill()
            raise SystemExit("bench server did not start")
        line += os.read(proc.stdout.fileno(), 1)
    return proc, int(line.decode().strip().rsplit(":", 1)[1])


def _fields(line: str) -> dict[str, str]:
    return dict(f.split("=", 1) for f in line.split() if "=" in f)


def _medians(lines: list[str]) -> str:
    """One ``MEDIAN`` line: per figure, the median over the rounds' ``RESULT`` lines."""
    rows = [_fields(ln) for ln in lines]
    first = rows[0]
    out = [f"MEDIAN unary impl={first.get('impl', '?')} conc={first.get('conc', '?')} rounds={len(rows)}"]
    for key in ("rps", "p50_us", "p90_us", "p99_us"):
        values = [float(r[key]) for r in rows if key in r]
        if values:
            out.append(f"{key}={statistics.median(values):g}")
    return " ".join(out)


def _swift(binary: str, args: list[str]) -> str:
    out = subprocess.run([binary, "bench", *args], capture_output=True, text=True, timeout=120)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")]
    return lines[-1] if lines else f"RESULT swift error: {out.stdout.strip()} {out.stderr.strip()[-200:]}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m baton.bench", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="port of a running `baton bench server` on 127.0.0.1")
    where.add_argument("--server", metavar="BIN", help="start `BIN bench server --port 0` for the run")
    p.add_argument("--swift", metavar="BIN", help="also run the Swift client's `BIN bench unary/stream`")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--only", choices=["unary", "stream"], help="run one scenario")
    p.add_argument("--rounds", type=int, default=1,
                   help="run the unary scenarios this many times in turn, then print their medians")
    a = p.parse_args(argv)
    proc = None
    port = a.port
    if a.server:
        proc, port = _start_server(a.server)
        a.swift = a.swift or a.server
    try:
        common = ["--port", str(port), "--seconds", f"{a.seconds:g}", "--warmup", f"{a.warmup:g}",
                  "--size", str(a.size)]
        if a.only in (None, "unary"):
            for conc in a.concurrency:
                runs: dict[str, list[str]] = {"python": [], "python-asyncio": [], "swift": []}
                for _ in range(max(1, a.rounds)):
                    lines = [("python", unary_blocking(port, conc, a.seconds, a.warmup, a.size)),
                             ("python-asyncio", unary_asyncio(port, conc, a.seconds, a.warmup, a.size))]
                    if a.swift:
                        lines.append(("swift", _swift(a.swift, ["unary", "--concurrency", str(conc), *common])))
                    for impl, line in lines:
                        print(line, flush=True)
                        if "errors=" in line:
                            runs[impl].append(line)
                if a.rounds > 1:
                    for impl_lines in runs.values():
                        if impl_lines:
                            print(_medians(impl_lines), flush=True)
        if a.only in (None, "stream"):
            print(stream(port, a.seconds, a.warmup, a.size), flush=True)
            if a.swift:
                print(_swift(a.swift, ["stream", *common]), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
