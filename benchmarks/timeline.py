"""Every call of one operator run, timed: where a copy's wall time goes (``copy_to_s3.py --timeline``).

Installed in the run's child process: ``requests`` calls (the Cloud 66 API and the signed file URLs)
and boto3 calls (S3) are recorded with their start and end. A ranged file GET ends when its headers
arrive (the body is read after). Only paths are kept, never a query string: a signed URL's signature
and the API token stay out of the figures.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

Call = tuple[float, float, str]  # start and end (seconds from the run's start), what
PARTS = ("UploadPart", "GET file range")


class Timeline:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.started = time.perf_counter()
        self._lock = threading.Lock()

    def start(self) -> None:
        self.started = time.perf_counter()
        with self._lock:
            self.calls.clear()

    def _add(self, began: float, what: str) -> None:
        ended = time.perf_counter()
        with self._lock:
            self.calls.append((began - self.started, ended - self.started, what))

    def install(self) -> None:
        """Wrap ``requests.Session.send`` and boto3's ``_make_api_call`` in this process."""
        import botocore.client
        import requests

        send, call = requests.Session.send, botocore.client.BaseClient._make_api_call

        def timed_send(session: requests.Session, request: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return send(session, request, **kwargs)
            finally:
                self._add(began, http_label(request.method, request.url, request.headers.get("Range")))

        def timed_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            began = time.perf_counter()
            try:
                return call(client, operation, params)
            finally:
                self._add(began, s3_label(operation, params))

        requests.Session.send = timed_send  # type: ignore[method-assign]
        botocore.client.BaseClient._make_api_call = timed_call  # type: ignore[method-assign]

    def phases(self, total: float) -> list[str]:
        """The calls in order, the parts' calls folded into one line each way, and the gaps."""
        calls = sorted(self.calls)
        lines: list[str] = []
        for kind in PARTS:
            mine = [c for c in calls if c[2] == kind]
            if mine:
                lines.append(
                    f"{mine[0][0]:7.3f} {max(c[1] for c in mine):7.3f}  {len(mine)} x {kind}, first to last"
                )
        lines += [f"{began:7.3f} {ended:7.3f}  {what}" for began, ended, what in calls if what not in PARTS]
        lines.sort()
        busy = _covered([(began, ended) for began, ended, _ in calls])
        lines.append(f"  in all {total:.3f} s; no call in flight for {total - busy:.3f} s of it")
        return lines


def http_label(method: str, url: str, ranged: str | None) -> str:
    """What a ``requests`` call was, from its path alone (a signed URL's query holds its signature)."""
    path = urlsplit(url).path
    if ranged == "bytes=0-0":
        return f"GET file size probe {path.rsplit('/', 1)[-1]}"
    if ranged:
        return "GET file range"
    return f"{method} API {path.split('/api/3', 1)[-1]}"


def s3_label(operation: str, params: dict[str, Any]) -> str:
    """An S3 call: its operation and key (a part is one of many, so its operation alone)."""
    if operation in PARTS:
        return operation
    return f"{operation} {params.get('Key') or params.get('Prefix') or ''}".strip()


def _covered(spans: Sequence[tuple[float, float]]) -> float:
    """Seconds during which at least one span is open."""
    covered, reach = 0.0, 0.0
    for began, ended in sorted(spans):
        if ended > reach:
            covered += ended - max(began, reach)
            reach = ended
    return covered
