"""An HTTP proxy in front of the local S3 server that can do what the network does to a real one.

The client talks to the proxy as if it were S3 (``endpoint_url``); each request is forwarded to the
upstream server unless a rule says otherwise. A rule sees the request and returns what to do:
``None`` (forward and answer); ``"lose_answer"``: forward it, let S3 act on it, then reset the
connection before a byte of the answer reaches the client, as a dropped link or a dying load
balancer would; or an :class:`Answer`: reply with it and forward nothing, which is how the tests
make the proxy answer as AWS documents where the local server answers otherwise. Everything stays
on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Answer:
    """A reply the proxy gives itself instead of forwarding."""

    status: int
    code: str
    message: str

    def body(self) -> bytes:
        return (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{self.code}</Code>'
            f"<Message>{self.message}</Message></Error>"
        ).encode()


NO_SUCH_UPLOAD = Answer(
    404,
    "NoSuchUpload",
    "The specified upload does not exist. The upload ID may be invalid, or the upload may have been "
    "aborted or completed.",
)
Action = Literal["lose_answer"] | Answer | None
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}


@dataclass(frozen=True)
class ProxiedRequest:
    """What the client sent: method, path, query and headers (names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]

    @property
    def operation(self) -> str:
        """The S3 operation's name, for the requests the tests care about."""
        q = self.query
        if self.method == "POST" and "uploads" in q:
            return "CreateMultipartUpload"
        if self.method == "POST" and "uploadId" in q:
            return "CompleteMultipartUpload"
        if self.method == "PUT" and "partNumber" in q:
            return "UploadPart"
        if self.method == "DELETE" and "uploadId" in q:
            return "AbortMultipartUpload"
        return {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
            self.method, self.method
        )


class S3Proxy:
    """Forwards to ``upstream`` (``http://127.0.0.1:PORT``); ``rule`` may change what happens."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rule: Callable[[ProxiedRequest], Action] = lambda request: None
        self.seen: list[tuple[ProxiedRequest, str]] = []  # (request, what happened)
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def _relay(self) -> None:
                proxy._relay(self)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def operations(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(request.operation, outcome) for request, outcome in self.seen]

    def _relay(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        request = ProxiedRequest(
            handler.command, split.path, dict(parse_qsl(split.query, keep_blank_values=True)), headers
        )
        length = int(headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        action = self.rule(request)
        if isinstance(action, Answer):
            with self._lock:
                self.seen.append((request, f"answered {action.status}"))
            payload = action.body()
            handler.send_response(action.status)
            handler.send_header("Content-Type", "application/xml")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
            return
        upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            upstream.request(
                handler.command,
                handler.path,
                body=body,
                headers={k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP},
            )
            answer = upstream.getresponse()
            payload = answer.read()
        finally:
            upstream.close()
        with self._lock:
            self.seen.append((request, action or str(answer.status)))
        if action == "lose_answer":
            # S3 has acted; the client hears nothing but a reset (linger 0 sends RST, not FIN).
            handler.close_connection = True
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            return
        handler.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                handler.send_header(name, value)
        # A HEAD's Content-Length is the object's, not the (empty) body's.
        length_header = answer.getheader("Content-Length") if handler.command == "HEAD" else None
        handler.send_header("Content-Length", length_header or str(len(payload)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)

    def start(self) -> S3Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def s3_proxy(upstream: str) -> Iterator[S3Proxy]:
    proxy = S3Proxy(upstream).start()
    try:
        yield proxy
    finally:
        proxy.stop()
