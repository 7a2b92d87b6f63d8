"""The public progress interface (like s3transfer's subscribers) and the progress log."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from airflow_provider_c66.transfers.copy.model import CopyResult, MiB


class CopyObserver:
    """What a copy reports as it runs, like s3transfer's subscribers; every method here does nothing.

    Subclass it and override what you need: the operator logs progress through one
    (:class:`ProgressLog`), the tests count parts in flight and inject faults at a chosen moment through
    one, the benchmark counts the bytes sent. Methods are called from the copy's worker threads, so keep
    them quick and thread-safe. What a method raises fails the copy, which leaves nothing in S3.

    Parts are numbered from 1 in archive order; a single-part copy (PutObject) has part 1.
    """

    def copy_started(self, target: str, size: int, part_sizes: Sequence[int]) -> None:
        """The sources were probed and the parts planned; nothing has been read yet."""

    def part_started(self, number: int, size: int) -> None:
        """A part buffer was taken and the part's source bytes are about to be read."""

    def bytes_read(self, count: int) -> None:
        """``count`` more source bytes landed in a part buffer (also when a retry reads them again)."""

    def part_read(self, number: int) -> None:
        """The part is in memory and checksummed; its upload comes next."""

    def part_uploaded(self, number: int, size: int, reused: bool) -> None:
        """S3 holds the part: sent now, or (``reused``) sent by an earlier try and checked to match."""

    def part_released(self, number: int) -> None:
        """The part's buffer was freed: the part was hashed into the archive's digest in order, or
        the copy failed. Parts started and not yet released are the parts held in memory."""

    def copy_finished(self, result: CopyResult, seconds: float) -> None:
        """The object is in S3 and verified."""


class _Observers(CopyObserver):
    """Calls every observer in turn."""

    def __init__(self, observers: Sequence[CopyObserver]) -> None:
        self.observers = tuple(observers)
        self.read = 0  # source bytes read, for the cancel message
        self._lock = threading.Lock()

    def copy_started(self, target: str, size: int, part_sizes: Sequence[int]) -> None:
        for observer in self.observers:
            observer.copy_started(target, size, part_sizes)

    def part_started(self, number: int, size: int) -> None:
        for observer in self.observers:
            observer.part_started(number, size)

    def bytes_read(self, count: int) -> None:
        with self._lock:
            self.read += count
        for observer in self.observers:
            observer.bytes_read(count)

    def part_read(self, number: int) -> None:
        for observer in self.observers:
            observer.part_read(number)

    def part_uploaded(self, number: int, size: int, reused: bool) -> None:
        for observer in self.observers:
            observer.part_uploaded(number, size, reused)

    def part_released(self, number: int) -> None:
        for observer in self.observers:
            observer.part_released(number)

    def copy_finished(self, result: CopyResult, seconds: float) -> None:
        for observer in self.observers:
            observer.copy_finished(result, seconds)


class ProgressLog(CopyObserver):
    """Logs bytes read, done/total, MiB/s and ETA every ``interval`` seconds, and the copy's summary."""

    def __init__(self, log: logging.Logger, interval: float = 5.0) -> None:
        self.log, self.interval = log, interval
        self.target, self.total, self.done = "", 0, 0
        self.started = self._last = time.monotonic()
        self._lock = threading.Lock()

    def copy_started(self, target: str, size: int, part_sizes: Sequence[int]) -> None:
        self.target, self.total = target, size
        self.started = self._last = time.monotonic()

    def bytes_read(self, count: int) -> None:
        with self._lock:
            self.done += count
            now = time.monotonic()
            if now - self._last < self.interval:
                return
            self._last, done = now, self.done
        rate = done / max(now - self.started, 1e-9)
        eta = str(timedelta(seconds=round(max(self.total - done, 0) / rate))) if rate else "unknown"
        percent = 100 * done / max(self.total, 1)
        self.log.info(
            "%s: %s of %s (%.0f%%), %.1f MiB/s, ETA %s",
            self.target,
            _mib(done),
            _mib(self.total),
            percent,
            rate / MiB,
            eta,
        )

    def copy_finished(self, result: CopyResult, seconds: float) -> None:
        self.log.info(
            "Copied %s to s3://%s/%s in %.1f s (%.1f MiB/s), sha256 %s",
            _mib(result.size),
            result.bucket,
            result.key,
            seconds,
            result.size / MiB / max(seconds, 1e-9),
            result.sha256,
        )


def _mib(count: int) -> str:
    return f"{count / MiB:.1f} MiB"
