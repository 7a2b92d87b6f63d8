"""Failure and cancellation shared by every thread of one copy: the first error wins."""

from __future__ import annotations

import threading
import time

from airflow_provider_c66.transfers.copy.model import _POLL, CopyCancelled


class _Stopped(Exception):
    """Raised in a worker once another part has failed: that first failure is the one reported."""


class _Coordinator:
    """Owns failure and cancellation: the first error wins and every thread stops at its next check."""

    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel
        self.error: BaseException | None = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None and not isinstance(exc, _Stopped):
                self.error = exc
        self._stopped.set()

    def check(self) -> None:
        """Called between reads and before S3 calls, in any thread."""
        if self.cancel.is_set():
            raise CopyCancelled("cancelled")
        if self._stopped.is_set():
            raise _Stopped()

    def check_main(self) -> None:
        """The main thread's check: re-raise the first worker failure, or stop on cancel."""
        if self.error is not None:
            raise self.error
        if self.cancel.is_set():
            raise CopyCancelled("cancelled")

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.check()
            self.cancel.wait(min(left, _POLL))
        self.check()
