"""The HTTP server: a threading server on 127.0.0.1 and its request handler.

The handler parses a request, takes the faults that match it (:mod:`.faults`), asks the emulator for
the answer (:meth:`.Cloud66Emulator.file_reply` under ``/c66-backups/``, the API otherwise), records
the request and writes the answer, paced to ``bandwidth_per_connection`` and cut short, reset or
lengthened as a fault says.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import chain
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlsplit

from airflow_provider_c66.testing.emulator.faults import _Fault
from airflow_provider_c66.testing.emulator.replies import _ApiError, _error_reply, _Reply
from airflow_provider_c66.testing.emulator.state import FILE_PREFIX, RecordedRequest, RequestKind

if TYPE_CHECKING:
    from airflow_provider_c66.testing.emulator.core import Cloud66Emulator

log = logging.getLogger(__name__)

LOG_ENV = "C66_EMULATOR_LOG"
"""Set to 1 to log requests (method, path without query, status) at INFO; tokens never appear."""

_CONN_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


def _canonical_header(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], emulator: Cloud66Emulator
    ):
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall without a network.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("emulator connection error", exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Cloud66Emulator/1.0"
    sys_version = ""
    timeout = 300  # idle keep-alive connections give their thread back eventually
    _replied = False

    @property
    def _emu(self) -> Cloud66Emulator:
        return cast(_Server, self.server).emulator

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        if os.environ.get(LOG_ENV):
            # Query strings carry URL signatures: never let them reach a log.
            log.info("cloud66-emulator: %s", re.sub(r"\?\S*", "?<redacted>", format % args))

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if os.environ.get(LOG_ENV):
            log.info("cloud66-emulator: %s %s %s", self.command, self.path.split("?", 1)[0], code)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = bytearray()
            while True:
                size = int(self.rfile.readline(1024).split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline(1024)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _handle(self) -> None:
        emu = self._emu
        self._replied = False
        method = self.command.upper()
        target = self.path
        if "://" in target.split("?", 1)[0]:  # absolute-form request target
            parts = urlsplit(target)
            target = parts.path + ("?" + parts.query if parts.query else "")
        path, _, raw_query = target.partition("?")
        query = dict(parse_qsl(raw_query, keep_blank_values=True))
        headers = {_canonical_header(k): v for k, v in self.headers.items()}
        kind: RequestKind = "file" if path.startswith(FILE_PREFIX) else "api"
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        parsed: Any = None
        params: dict[str, Any] = dict(query)
        bad_body = False
        if body:
            content_type = headers.get("Content-Type", "").lower()
            if "x-www-form-urlencoded" in content_type:
                parsed = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            else:
                try:
                    parsed = json.loads(body)
                except ValueError:
                    bad_body = True
            if isinstance(parsed, dict):
                params.update(parsed)
            elif parsed is not None:
                bad_body = True

        def record(status: int, window: float | None = None) -> None:
            emu._log_request(
                RecordedRequest(method, path, query, headers, parsed, status, kind, body, time.time(), window)
            )

        slow = emu._take_fault(["slow"], path, method, kind)
        if slow is not None and emu._stopping.wait(slow.seconds):
            self.close_connection = True
            return
        try:
            reply = emu._injected_reply(path, method, kind)
            body_fault = None
            if reply is None:
                body_fault = emu._take_fault(["drop", "truncate", "overlong"], path, method, kind)
                if kind == "file":
                    ignore = emu._take_fault(["ignore_range"], path, method, kind) is not None
                    reply = emu.file_reply(method, path, query, headers, ignore)
                else:
                    reply = emu._api(method, path, params, headers, bad_body=bad_body)
            record(reply.status, reply.budget_window)
            self._send(reply, body_fault, head_only=method == "HEAD")
        except _CONN_ERRORS:
            self.close_connection = True
        except Exception:
            log.exception("cloud66 emulator failed on %s %s", method, path)
            self.close_connection = True
            if not self._replied:  # an emulator bug: say so rather than hang up silently
                error = _ApiError(500, "internal_error", "The emulator failed; see its log")
                with contextlib.suppress(*_CONN_ERRORS):
                    record(500)
                    self._send(_error_reply(error, ()), None, head_only=method == "HEAD")

    def _send(self, reply: _Reply, fault: _Fault | None, *, head_only: bool) -> None:
        self._replied = True
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(reply.length))
        self.end_headers()
        if head_only:
            return
        limit: int | None = None
        chunks: Iterable[bytes | memoryview] = reply.chunks
        if fault is not None and fault.kind in ("drop", "truncate"):
            limit = min(fault.after_bytes, reply.length)
        elif fault is not None and fault.kind == "overlong" and reply.tail is not None:
            chunks = chain(chunks, reply.tail(fault.extra))
        rate = self._emu.bandwidth_per_connection if reply.paced else None
        self._write(chunks, limit, rate)
        if fault is None:
            return
        self.close_connection = True
        if fault.kind == "drop":
            # Linger 0: close() sends RST instead of FIN, as a crashed proxy or a network fault would.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()

    def _write(self, chunks: Iterable[bytes | memoryview], limit: int | None, rate: float | None) -> int:
        stopping = self._emu._stopping
        step = max(1024, min(64 * 1024, int(rate / 50))) if rate else 1 << 20
        sent = 0
        started = time.monotonic()
        for piece in chunks:
            view = memoryview(piece)
            while len(view):
                if limit is not None and sent >= limit:
                    return sent
                size = min(len(view), step)
                if limit is not None:
                    size = min(size, limit - sent)
                self.wfile.write(view[:size])
                sent += size
                view = view[size:]
                if rate:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0 and stopping.wait(ahead):
                        raise ConnectionAbortedError("emulator stopping")
                elif stopping.is_set():
                    raise ConnectionAbortedError("emulator stopping")
        return sent
