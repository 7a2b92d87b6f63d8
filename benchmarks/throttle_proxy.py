"""A throttling TCP proxy on 127.0.0.1 for the benchmark's WAN scenario, and its self-test.

    python benchmarks/throttle_proxy.py --target 127.0.0.1:PORT [--cap-mib 16] [--rtt-ms 30] [--port 0]
    python benchmarks/throttle_proxy.py --selftest [--cap-mib 16] [--rtt-ms 30] [--size-mib 32]

The proxy listens on 127.0.0.1 (prints ``listening on PORT`` once it does) and relays every connection
to ``--target`` through two links of its own, one each way, each modelled as a WAN link:

* **Bandwidth**: each direction of each connection is capped at ``--cap-mib`` MiB/s. A chunk read from
  one side (up to 64 KiB, as it arrives) is serialized at the cap behind the chunks before it.
* **Delay**: every chunk is then held half the round trip more (``--rtt-ms`` / 2 each way), as on a
  link with a fixed propagation delay. Pipelined: a steady stream still flows at the cap, a
  request and its answer pay the whole round trip once.
* **Handshake**: a new connection's first bytes wait one round trip more, as behind TCP's handshake.
* **Backpressure**: each direction holds at most ``max(1 MiB, 2 x cap x RTT)``; past that the proxy
  stops reading, so the sender's TCP stalls as it would against a full window.

Not modelled: loss, TCP slow start and congestion windows, TLS. The proxy is pure Python: four threads
a connection (a reader and a writer each way), 64 KiB chunks; the benchmark prints its CPU time.

``--selftest`` starts a proxy in a child process in front of a local source/sink server, and measures
the steady rate (first byte to last, at the receiving end) of one connection each way and of eight
at once (four each way), and the round trip of a one-byte ping. It prints one line of JSON with the
figures and the proxy process's CPU seconds while the eight ran.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MiB = 1 << 20
CHUNK = 64 * 1024


class Link:
    """One direction of one proxied connection: read from ``src``, delay and pace, write to ``dst``."""

    def __init__(self, pair: Pair, src: socket.socket, dst: socket.socket, opened: float) -> None:
        self.pair, self.src, self.dst = pair, src, dst
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.held, self.eof = 0, False
        self.ready = threading.Condition()
        self.free_at = opened + pair.proxy.rtt  # the handshake: the first bytes leave one RTT late

    def read(self) -> None:
        proxy = self.pair.proxy
        try:
            while True:
                with self.ready:
                    while self.held >= proxy.limit and not self.pair.closed:
                        self.ready.wait()
                    if self.pair.closed:
                        return
                data = self.src.recv(CHUNK)
                if not data:
                    return
                start = max(time.monotonic(), self.free_at)
                self.free_at = start + len(data) / proxy.rate if proxy.rate else start
                with self.ready:
                    self.queue.append((self.free_at + proxy.rtt / 2, data))
                    self.held += len(data)
                    self.ready.notify_all()
        except OSError:
            self.pair.close()
        finally:
            with self.ready:
                self.eof = True
                self.ready.notify_all()

    def write(self) -> None:
        try:
            while True:
                with self.ready:
                    while not self.queue and not self.eof and not self.pair.closed:
                        self.ready.wait()
                    if self.pair.closed or not self.queue:
                        break
                    due, data = self.queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self.dst.sendall(data)
                with self.ready:
                    self.queue.popleft()
                    self.held -= len(data)
                    self.ready.notify_all()
            if not self.pair.closed:
                self.dst.shutdown(socket.SHUT_WR)  # pass the sender's half-close on
        except OSError:
            self.pair.close()
        finally:
            self.pair.link_done()


class Pair:
    """A client connection and the proxy's connection to the target, relayed both ways."""

    def __init__(self, proxy: Proxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy, self.client, self.server = proxy, client, server
        self.closed, self.open_links = False, 2
        self.lock = threading.Lock()
        opened = time.monotonic()
        self.links = (Link(self, client, server, opened), Link(self, server, client, opened))
        for link in self.links:
            for target in (link.read, link.write):
                threading.Thread(target=target, daemon=True).start()

    def link_done(self) -> None:
        with self.lock:
            self.open_links -= 1
            last = self.open_links == 0
        if last:
            self.close()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
            sock.close()
        for link in self.links:
            with link.ready:
                link.ready.notify_all()


class Proxy:
    def __init__(self, target: tuple[str, int], cap_mib: float, rtt_ms: float, port: int = 0) -> None:
        self.target, self.rate, self.rtt = target, cap_mib * MiB, rtt_ms / 1000
        self.limit = max(MiB, int(2 * self.rate * self.rtt))
        self.listener = socket.create_server(("127.0.0.1", port), backlog=128)
        self.port = int(self.listener.getsockname()[1])

    def serve(self) -> None:
        while True:
            client, _ = self.listener.accept()
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            Pair(self, client, server)


# --- self-test -----------------------------------------------------------------------------------------
def test_server() -> tuple[socket.socket, int]:
    """A local server: ``D n`` sends n bytes; ``U n`` reads n bytes and answers the rate it saw them
    arrive at; ``P n`` echoes n one-byte pings."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    block = bytes(MiB)

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            head = conn.recv(9, socket.MSG_WAITALL)
            kind, count = head[:1], struct.unpack("!Q", head[1:])[0]
            if kind == b"D":
                view = memoryview(block)
                while count:
                    conn.sendall(view[: min(count, MiB)])
                    count -= min(count, MiB)
            elif kind == b"U":
                conn.sendall(struct.pack("!d", receive(conn, count)))
            else:
                for _ in range(count):
                    conn.sendall(conn.recv(1))

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener, int(listener.getsockname()[1])


def receive(sock: socket.socket, count: int) -> float:
    """Read ``count`` bytes; the steady rate in MiB/s: the bytes after the first read, over the time
    from the first read to the last (the round trip and the handshake are the ping's to measure)."""
    buffer, left = bytearray(MiB), count
    first, started = 0, 0.0
    while left:
        got = sock.recv_into(buffer, min(left, MiB))
        if not got:
            raise ConnectionError(f"short transfer: {left} bytes missing")
        if not first:
            first, started = got, time.perf_counter()
        left -= got
    return (count - first) / MiB / (time.perf_counter() - started)


def transfer(port: int, kind: bytes, count: int) -> float:
    """One connection through the proxy: download (D) or upload (U) ``count`` bytes; steady MiB/s."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(kind + struct.pack("!Q", count))
        if kind == b"D":
            return receive(sock, count)
        view, left = memoryview(bytes(MiB)), count
        while left:
            sock.sendall(view[: min(left, MiB)])
            left -= min(left, MiB)
        rate: float = struct.unpack("!d", sock.recv(8, socket.MSG_WAITALL))[0]  # as the server saw it
        return rate


def ping(port: int, count: int) -> list[float]:
    """Round trips of one byte over one connection (after its first, which pays the handshake), ms."""
    times = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"P" + struct.pack("!Q", count + 1))
        for number in range(count + 1):
            started = time.perf_counter()
            sock.sendall(b"x")
            assert sock.recv(1) == b"x"
            if number:
                times.append((time.perf_counter() - started) * 1000)
    return times


def selftest(cap_mib: float, rtt_ms: float, size_mib: float) -> dict[str, Any]:
    import psutil

    listener, target = test_server()
    command = [sys.executable, str(Path(__file__).resolve()), "--target", f"127.0.0.1:{target}"]
    command += ["--cap-mib", str(cap_mib), "--rtt-ms", str(rtt_ms)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[-1])
        proxy = psutil.Process(proc.pid)
        count = int(size_mib * MiB)

        def cpu() -> float:
            return float(sum(proxy.cpu_times()[:2]))

        figures: dict[str, Any] = {"cap_mib": cap_mib, "rtt_ms": rtt_ms, "size_mib": size_mib}
        figures["rtt_measured_ms"] = statistics.median(ping(port, 10))
        for name, kind in (("one_down", b"D"), ("one_up", b"U")):
            figures[name] = transfer(port, kind, count)
        before, started = cpu(), time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            eight = list(pool.map(lambda kind: transfer(port, kind, count), [b"D", b"U"] * 4))
        seconds = time.perf_counter() - started
        figures.update(eight_each_min=min(eight), eight_total=sum(eight))
        figures.update(eight_proxy_cpu=cpu() - before, eight_seconds=seconds)
        figures["eight_proxy_cpu_share"] = figures["eight_proxy_cpu"] / seconds
        return figures
    finally:
        proc.terminate()
        proc.wait()
        listener.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", help="HOST:PORT to relay to")
    parser.add_argument("--port", type=int, default=0, help="port to listen on, 127.0.0.1 (0: a free one)")
    parser.add_argument(
        "--cap-mib", type=float, default=16.0, help="MiB/s, each direction of each connection"
    )
    parser.add_argument("--rtt-ms", type=float, default=30.0, help="round-trip delay added, ms")
    parser.add_argument("--selftest", action="store_true", help="measure the proxy; print JSON")
    parser.add_argument("--size-mib", type=float, default=32.0, help="self-test: MiB each connection moves")
    args = parser.parse_args(argv)
    if args.selftest:
        print(json.dumps(selftest(args.cap_mib, args.rtt_ms, args.size_mib)), flush=True)
        return 0
    if not args.target:
        parser.error("--target is required")
    host, _, port = args.target.rpartition(":")
    proxy = Proxy((host, int(port)), args.cap_mib, args.rtt_ms, args.port)
    print(f"listening on {proxy.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        proxy.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
