"""An HTTP proxy in front of the local S3 server that can do what the network does to a real one.

The client talks to the proxy as if it were S3 (``endpoint_url``); each request is forwarded to the
upstream server unless a rule says otherwise. A rule sees the request and returns what to do:
``None`` (forward and answer); ``"lose_answer"``: forward it, let S3 act on it, then reset the
connection before a byte of the answer reaches the client, as a dropped link or a dying load
balancer would; or an :class:`Answer`: reply with it and forward nothing, which is how the tests
make the proxy answer as AWS documents where the local server answers otherwise. An ``after`` rule
sees what the server answered and may replace it (AWS answers 403, not 404, for a missing key when
the caller may not list the bucket). ``tests/s3_rules.py`` holds the rules themselves. Everything
stays on 127.0.0.1.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import socket
import ssl
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Answer:
    """A reply the proxy gives itself instead of forwarding."""

    status: int
    code: str
    message: str

    def body(self) -> bytes:
        if self.status < 300:  # a success that did nothing
            return b""
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
# Looks at what the upstream server answered (status) and may replace it, as AWS would answer.
AfterRule = Callable[["ProxiedRequest", int], Answer | None]
# Looks at the response headers the upstream server sent and returns those the client may see.
ShownRule = Callable[["ProxiedRequest", list[tuple[str, str]]], list[tuple[str, str]]]
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}


@dataclass(frozen=True)
class ProxiedRequest:
    """What the client sent: method, path (``/bucket/key``, path style), query, headers (names
    lower-cased) and body."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = field(default=b"", repr=False, compare=False)

    @property
    def bucket(self) -> str:
        return self.path.lstrip("/").split("/", 1)[0]

    @property
    def key(self) -> str:
        """The object key, or "" for a request on the bucket itself."""
        parts = self.path.lstrip("/").split("/", 1)
        return parts[1] if len(parts) == 2 else ""

    @property
    def operation(self) -> str:
        """The S3 operation's name, as AWS's API reference names it."""
        q, method = self.query, self.method
        if not self.key:
            for sub, names in _BUCKET_SUBRESOURCES.items():
                if sub in q:
                    return names.get(method, method)
            return {"GET": "ListObjects", "PUT": "CreateBucket", "HEAD": "HeadBucket"}.get(method, method)
        for sub, names in _OBJECT_SUBRESOURCES.items():
            if sub in q:
                return names.get(method, method)
        if method == "POST" and "uploads" in q:
            return "CreateMultipartUpload"
        if method == "POST" and "uploadId" in q:
            return "CompleteMultipartUpload"
        if method == "PUT" and "partNumber" in q:
            return "UploadPart"
        if method == "GET" and "uploadId" in q:
            return "ListParts"
        if method == "DELETE" and "uploadId" in q:
            return "AbortMultipartUpload"
        return {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
            method, method
        )


_BUCKET_SUBRESOURCES = {
    "uploads": {"GET": "ListMultipartUploads"},
    "object-lock": {"GET": "GetObjectLockConfiguration", "PUT": "PutObjectLockConfiguration"},
    "versioning": {"GET": "GetBucketVersioning", "PUT": "PutBucketVersioning"},
    "location": {"GET": "GetBucketLocation"},
    "versions": {"GET": "ListObjectVersions"},
}
_OBJECT_SUBRESOURCES = {
    "retention": {"GET": "GetObjectRetention", "PUT": "PutObjectRetention"},
    "legal-hold": {"GET": "GetObjectLegalHold", "PUT": "PutObjectLegalHold"},
    "tagging": {"GET": "GetObjectTagging", "PUT": "PutObjectTagging"},
}


class S3Proxy:
    """Forwards to ``upstream`` (``http://127.0.0.1:PORT``); ``rule`` may change what happens.

    With ``tls`` (a server-side context, see :func:`tls_context`) it speaks HTTPS, as AWS does: the
    client's requests are then seen as sent over TLS, which changes how botocore signs them.
    """

    def __init__(self, upstream: str, tls: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rule: Callable[[ProxiedRequest], Action] = lambda request: None
        self.after: AfterRule | None = None
        self.shown: ShownRule | None = None
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
        self.scheme = "http"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

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
        request = replace(request, body=body)
        action = self.rule(request)
        if isinstance(action, Answer):
            self._answer(handler, request, action)
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
        replaced = self.after(request, answer.status) if self.after else None
        if replaced is not None:
            self._answer(handler, request, replaced)
            return
        with self._lock:
            self.seen.append((request, action or str(answer.status)))
        if action == "lose_answer":
            # S3 has acted; the client hears nothing but a reset (linger 0 sends RST, not FIN).
            handler.close_connection = True
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            handler.connection.close()
            return
        handler.send_response(answer.status)
        headers = answer.getheaders()
        for name, value in self.shown(request, headers) if self.shown else headers:
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                handler.send_header(name, value)
        # A HEAD's Content-Length is the object's, not the (empty) body's.
        length_header = answer.getheader("Content-Length") if handler.command == "HEAD" else None
        handler.send_header("Content-Length", length_header or str(len(payload)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(payload)

    def _answer(self, handler: BaseHTTPRequestHandler, request: ProxiedRequest, answer: Answer) -> None:
        with self._lock:
            self.seen.append((request, f"answered {answer.status}"))
        payload = b"" if request.method == "HEAD" else answer.body()
        handler.send_response(answer.status)
        handler.send_header("Content-Type", "application/xml")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def enforce(self, policy: Any, *before: Callable[[ProxiedRequest], Action]) -> None:
        """Authorize every request as ``policy`` (an ``s3_rules.IamPolicy``) does, after the ``before``
        rules: what it denies, how it answers a missing key, and which response headers it lets through."""
        rules = [*before, policy]

        def rule(request: ProxiedRequest) -> Action:
            return next((action for each in rules if (action := each(request)) is not None), None)

        self.rule, self.after, self.shown = rule, policy.after, policy.shown

    def requests(self, operation: str) -> list[ProxiedRequest]:
        """The requests of one operation that reached the proxy, in order."""
        with self._lock:
            return [request for request, _ in self.seen if request.operation == operation]

    def start(self) -> S3Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def tls_context(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context with a fresh self-signed certificate for 127.0.0.1, and the certificate's
    path (a client's CA bundle: the AWS connection's ``verify``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "s3-proxy.crt", directory / "s3-proxy.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context, cert_path


@contextmanager
def s3_proxy(upstream: str, tls: ssl.SSLContext | None = None) -> Iterator[S3Proxy]:
    proxy = S3Proxy(upstream, tls).start()
    try:
        yield proxy
    finally:
        proxy.stop()
