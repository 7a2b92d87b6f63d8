"""Fault injection: the next ``count`` requests whose path matches a pattern fail in a chosen way.

A fault is taken (counted down) by the server's request handler as it answers: ``slow`` before
anything else; ``fail``, ``rate_limit`` and ``malformed`` instead of the answer
(:meth:`_Faults._injected_reply`); ``drop``, ``truncate`` and ``overlong`` while the body is written;
``ignore_range`` by the signed-URL answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_c66.testing.emulator.replies import _json_body, _Reply
from airflow_provider_c66.testing.emulator.state import RequestKind, _State


@dataclass
class _Fault:
    kind: str
    remaining: int
    pattern: re.Pattern[str]
    method: str | None = None
    status: int = 503
    error: str = "internal_error"
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    after_bytes: int = 0
    extra: int = 0


_FAULT_KINDS: dict[str, tuple[RequestKind, ...]] = {
    "fail": ("api", "file"),
    "rate_limit": ("api", "file"),
    "slow": ("api", "file"),
    "drop": ("api", "file"),
    "truncate": ("api", "file"),
    "malformed": ("api",),
    "overlong": ("file",),
    "ignore_range": ("file",),
}


class _Faults(_State):
    """The fault injectors (``*_next``) and :meth:`clear_faults`."""

    _faults: list[_Fault]

    def _add_fault(self, kind: str, count: int, path_pattern: str, **kwargs: Any) -> None:
        if count <= 0:
            raise ValueError("count must be positive")
        with self._lock:
            self._faults.append(_Fault(kind, count, re.compile(path_pattern), **kwargs))

    def fail_next(
        self,
        count: int,
        path_pattern: str,
        status: int = 503,
        *,
        error: str = "internal_error",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status`` (JSON envelope, or ``body`` raw)."""
        self._add_fault(
            "fail",
            count,
            path_pattern,
            status=status,
            error=error,
            body=body,
            headers=dict(headers or {}),
            method=method.upper() if method else None,
        )

    def rate_limit_next(
        self, count: int, path_pattern: str, retry_after: float = 1, *, method: str | None = None
    ) -> None:
        """Answer 429 with ``Retry-After`` (as a proxy in front of Cloud 66 might)."""
        self._add_fault(
            "rate_limit", count, path_pattern, seconds=retry_after, method=method.upper() if method else None
        )

    def drop_connection_next(
        self, count: int, path_pattern: str, after_bytes: int, *, method: str | None = None
    ) -> None:
        """Announce the full Content-Length, send ``after_bytes`` of body, then reset the connection."""
        self._add_fault("drop", count, path_pattern, after_bytes=after_bytes, method=method)

    def truncate_next(
        self, count: int, path_pattern: str, after_bytes: int, *, method: str | None = None
    ) -> None:
        """Like :meth:`drop_connection_next` but the server closes cleanly (FIN) after the short body."""
        self._add_fault("truncate", count, path_pattern, after_bytes=after_bytes, method=method)

    def overlong_next(self, count: int, path_pattern: str, extra: int, *, method: str | None = None) -> None:
        """File download: headers announce the requested length; the body carries ``extra`` more bytes."""
        self._add_fault("overlong", count, path_pattern, extra=extra, method=method)

    def ignore_range_next(self, count: int, path_pattern: str, *, method: str | None = None) -> None:
        """File download: answer 200 with the whole file whatever the ``Range`` header asked."""
        self._add_fault("ignore_range", count, path_pattern, method=method)

    def slow_next(self, count: int, path_pattern: str, delay: float, *, method: str | None = None) -> None:
        """Sleep ``delay`` seconds before answering (to exercise client timeouts)."""
        self._add_fault("slow", count, path_pattern, seconds=delay, method=method)

    def malformed_json_next(self, count: int, path_pattern: str, *, method: str | None = None) -> None:
        """API: answer 200 ``application/json`` with a body that does not parse."""
        self._add_fault("malformed", count, path_pattern, method=method)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, kinds: Sequence[str], path: str, method: str, kind: RequestKind) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind not in kinds or kind not in _FAULT_KINDS[fault.kind]:
                    continue
                if fault.method is not None and fault.method.upper() != method:
                    continue
                if not fault.pattern.search(path):
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _injected_reply(self, path: str, method: str, kind: RequestKind) -> _Reply | None:
        """The answer of a ``fail``, ``rate_limit`` or ``malformed`` fault that matches, taking it."""
        fault = self._take_fault(["fail", "rate_limit", "malformed"], path, method, kind)
        if fault is None:
            return None
        if fault.kind == "rate_limit":
            body = _json_body({"error": "too_many_requests", "error_description": "Rate limit exceeded"})
            return _Reply.of(429, body, "application/json", [("Retry-After", f"{fault.seconds:g}")])
        if fault.kind == "malformed":
            return _Reply.of(
                200, b'{"response": [{"id": 1, "db_type": "mysql"', "application/json; charset=utf-8"
            )
        extra = list(fault.headers.items())
        if fault.body is not None:
            content_type = fault.headers.get("Content-Type", "text/html; charset=utf-8")
            extra = [(k, v) for k, v in extra if k.lower() != "content-type"]
            return _Reply.of(fault.status, fault.body, content_type, extra)
        description = f"Emulated failure ({fault.status})"
        body = _json_body({"error": fault.error, "error_description": description, "details": ""})
        return _Reply.of(fault.status, body, "application/json; charset=utf-8", extra)
