"""What the emulator answers with: a :class:`_Reply`, Cloud 66's JSON error envelope, S3's XML errors."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class _Reply:
    """A response: status, headers and a body of exactly ``length`` bytes, possibly streamed."""

    status: int
    headers: list[tuple[str, str]]
    length: int
    chunks: Iterable[bytes | memoryview]
    paced: bool = False
    tail: Callable[[int], Iterable[bytes | memoryview]] | None = None
    """For the overlong fault: the ``n`` bytes that follow the body."""
    budget_window: float | None = None
    """The start of the budget window that counted this API answer (see :class:`.RecordedRequest`)."""

    @classmethod
    def of(
        cls, status: int, body: bytes, content_type: str, headers: Sequence[tuple[str, str]] = ()
    ) -> _Reply:
        return cls(status, [("Content-Type", content_type), *headers], len(body), (body,))


def _json_body(payload: Any) -> bytes:
    # Rails escapes these in JSON strings (``\u0026`` between the signed URL's parameters).
    text = json.dumps(payload, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e").encode()


def _s3_error(code: str, message: str, **extra: str) -> bytes:
    parts = "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    request_id = uuid.uuid4().hex[:16].upper()
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>{parts}"
        f"<RequestId>{request_id}</RequestId><HostId>emulated</HostId></Error>"
    ).encode()


class _ApiError(Exception):
    """Raised inside API handlers to answer with the Cloud 66 error envelope."""

    def __init__(self, status: int, error: str, description: str, details: str = "") -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.details = details

    def __str__(self) -> str:
        return self.description


class _NotFound(_ApiError, KeyError):
    """A 404 that is also a KeyError, so the Python-side accessors fail the usual way."""

    def __init__(self, description: str) -> None:
        super().__init__(404, "not_found", description)


def _error_reply(error: _ApiError, headers: Sequence[tuple[str, str]]) -> _Reply:
    """The Cloud 66 error envelope for ``error``, with ``headers`` after the content type."""
    body = {"error": error.error, "error_description": error.description, "details": error.details}
    return _Reply.of(error.status, _json_body(body), "application/json; charset=utf-8", headers)
