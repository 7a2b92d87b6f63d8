"""Copy a backup's files from short-lived signed GET URLs into one S3 object: bounded, parallel, verified.

This is the data path the package exists for. The archive (the sources concatenated in order) is cut
into parts; each part is read with ranged GETs into one exact-size buffer and sent as an ``UploadPart``.
Downloads and uploads overlap as a pipeline (``max_concurrency`` parts downloading while as many
upload), and at most ``2 x max_concurrency`` part buffers exist at once, so memory stays within
``2 x max_concurrency x part_size`` plus a constant for any archive size. A read that breaks resumes at the byte it stopped at; an expired URL (403) is replaced
through the source's ``url_provider``. Every part's byte count is checked and its CRC32 sent to S3; the
upload is completed only when every part is in, and any failure or cancellation aborts it, so the key
ends up holding the whole archive or nothing.

No Airflow here (the operator wraps this module); boto3 is used only through the client passed in.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import http.client
import http.cookiejar
import logging
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import requests
import requests.adapters
import urllib3.exceptions

from airflow_provider_c66.api import RetryPolicy, parse_retry_after, redact_text

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = [
    "ArchiveDigest",
    "CopyCancelled",
    "CopyError",
    "CopyObserver",
    "CopyResult",
    "CopySettings",
    "ObjectExists",
    "ProgressLog",
    "Source",
    "SourceChanged",
    "abort_open_uploads",
    "choose_part_size",
    "copy_to_s3",
    "flexible_checksums",
    "s3_error_code",
    "stored_checksum",
    "write_object",
]

logger = logging.getLogger(__name__)

MiB = 1 << 20
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024 * 1024 * MiB  # 5 TiB
READ_BLOCK = MiB  # one socket read; urllib3 copies each block once into the part buffer
_POLL = 0.2  # how often a waiting thread looks at the cancel event

# Arguments of CreateMultipartUpload/PutObject a caller may set; the engine owns all the others.
EXTRA_ARGS = frozenset(
    {
        "StorageClass",
        "ServerSideEncryption",
        "SSEKMSKeyId",
        "SSEKMSEncryptionContext",
        "BucketKeyEnabled",
        "Tagging",
        "Metadata",
        "ContentType",
        "ObjectLockMode",
        "ObjectLockRetainUntilDate",
        "ObjectLockLegalHoldStatus",
    }
)
# Answers to a conditional write (If-None-Match: *) that mean another write reached the key first.
_CONDITION_LOST = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})

# requests' exceptions derive from OSError; reading ``resp.raw`` raises urllib3's and http.client's own.
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_S3_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
# What S3 answers (400) to a URL signed with temporary credentials whose session has ended.
_SESSION_EXPIRED = frozenset({"ExpiredToken", "TokenRefreshRequired"})
_QUERY = re.compile(r"\?[^\s'\"<>()]*")

_T = TypeVar("_T")
_CRC32_POLY = 0xEDB88320  # the reflected CRC-32 polynomial (zlib's, S3's ChecksumCRC32)


class CopyError(Exception):
    """The copy failed: no partial object was written and no multipart upload is left open.

    The message names the file and byte range (or the S3 operation), never a signed URL's query.
    """


class CopyCancelled(CopyError):
    """The cancel event was set (``on_kill``, SIGTERM): the upload was aborted."""


class ObjectExists(CopyError):
    """A conditional write found the key taken: another run wrote it while this copy ran. Nothing of
    this copy was kept; the other run's object is untouched."""


class SourceChanged(CopyError):
    """The sources are not what they were when the copy began, or not what the caller expected:
    a file grew, shrank, appeared or went. The backup is most likely still being written; nothing
    was completed, and a later try copies it again.
    """


@dataclass(frozen=True)
class Source:
    """One file of the archive, given in concatenation order.

    :param file_id: the Cloud 66 file id (``tar``, ``tar-aa`` ...).
    :param name: the file's name, for messages.
    :param url_provider: fetches a fresh signed GET URL; called right before first use and after a 403.
    """

    file_id: str
    name: str
    url_provider: Callable[[], str]

    @property
    def label(self) -> str:
        return self.name if self.name == self.file_id else f"{self.name} (file {self.file_id})"


@dataclass(frozen=True)
class CopySettings:
    """How one copy runs.

    :param part_size: bytes per S3 part; raised for huge archives so no upload needs 10,000+ parts.
    :param max_concurrency: parts downloading at once, and parts uploading at once; at most
        ``2 x max_concurrency`` part buffers exist, so part memory is at most
        ``2 x max_concurrency x part_size``.
    :param retries: failed attempts tolerated per byte range (and per S3 call) before the copy gives up.
    :param retry_budget: seconds a byte range or an S3 call keeps retrying after its first failure, so
        a two-minute outage of the signed-URL host or of S3 is outlasted; whichever bound comes first
        ends the retries. A cancel (``on_kill``) ends them at once.
    :param backoff_base: first pause (s) after a 5xx, 429 or network error; doubles, with full jitter.
    :param backoff_max: cap on one pause (s).
    :param connect_timeout: seconds to open a connection to a signed URL.
    :param read_timeout: seconds one socket read may wait.
    :param progress_interval: seconds between progress log lines.
    """

    part_size: int = 8 * MiB
    max_concurrency: int = 4
    retries: int = 40
    retry_budget: float = 150.0
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    progress_interval: float = 5.0

    def __post_init__(self) -> None:
        if self.part_size <= 0 or self.max_concurrency <= 0 or self.retries < 0:
            raise ValueError("part_size and max_concurrency must be positive and retries non-negative")
        if (
            min(
                self.backoff_base,
                self.backoff_max,
                self.connect_timeout,
                self.read_timeout,
                self.retry_budget,
            )
            < 0
        ):
            raise ValueError("backoff and timeout settings must be non-negative")


@dataclass(frozen=True)
class CopyResult:
    """What landed in S3, for the manifest: ``sha256`` is over the whole archive, computed in order."""

    bucket: str
    key: str
    size: int
    etag: str
    sha256: str
    parts: int
    source_sizes: tuple[tuple[str, int], ...]  # (file_id, size) in archive order
    crc32: str = ""  # the whole archive's CRC32 (base64, as S3 writes it), computed in order
    s3_checksum: str | None = None  # the checksum S3 stored and reports, e.g. "CRC32 hvthyA== FULL_OBJECT"
    reused: int = 0  # bytes of parts an earlier try had uploaded, checked and not sent again


def choose_part_size(total: int, requested: int) -> int:
    """The part size for ``total`` bytes: at least ``requested``, few enough parts for S3, whole MiB."""
    if total < 0 or requested <= 0:
        raise ValueError("total must be non-negative and requested positive")
    if total > MAX_OBJECT_SIZE:
        raise ValueError(f"{total} bytes is more than S3's 5 TiB object limit")
    size = max(requested, MIN_PART_SIZE, -(-total // MAX_PARTS))
    return min(-(-size // MiB) * MiB, MAX_PART_SIZE)


def abort_open_uploads(
    client: S3Client,
    bucket: str,
    *,
    keys: Sequence[str] = (),
    prefix: str | None = None,
    initiated_before: datetime | None = None,
    log: logging.Logger | None = None,
) -> int:
    """Abort the open multipart uploads on exact ``keys``, or under ``prefix``: the one way to clean up.

    They are left by a killed try (SIGKILL cannot clean up) or by a concurrent copy of the same backup
    that is now redundant, and are billed until aborted. This is clean-up, never the reason a task
    fails: an upload that is already gone is skipped, and a listing or abort S3 refuses is logged.

    :param keys: exact keys (an upload on ``key.bak`` is not one on ``key``).
    :param prefix: every key under it (not empty: that would be the whole bucket).
    :param initiated_before: only uploads started before this (aware) time, e.g. this run's start.
    :return: how many uploads were aborted.
    """
    if bool(keys) == (prefix is not None):
        raise ValueError("give either keys or a prefix")
    if prefix == "":
        raise ValueError("an empty prefix would abort every upload in the bucket")
    log = log or logger
    aborted = 0
    for listed in [*keys] or [str(prefix)]:
        try:
            pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=listed)
            uploads = [u for page in pages for u in page.get("Uploads", [])]
        except Exception as exc:
            log.warning("Could not list open multipart uploads under s3://%s/%s: %s", bucket, listed, exc)
            continue
        for upload in uploads:
            key, upload_id = upload.get("Key", ""), upload.get("UploadId", "")
            started = upload.get("Initiated")
            if not upload_id or (key != listed if keys else not key.startswith(listed)):
                continue
            if initiated_before is not None and started is not None and started >= initiated_before:
                continue
            try:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception as exc:
                if s3_error_code(exc) != "NoSuchUpload":  # NoSuchUpload: completed or aborted meanwhile
                    log.warning("Could not abort an open upload of s3://%s/%s: %s", bucket, key, exc)
                continue
            log.info("Aborted an open multipart upload of s3://%s/%s (started %s)", bucket, key, started)
            aborted += 1
    return aborted


@dataclass(frozen=True)
class _Segment:
    """The bytes of one source that fall into one part."""

    source: int
    offset: int
    length: int


@dataclass(frozen=True)
class _Part:
    """One S3 part: ``length`` bytes of the archive from ``start``; it may span two or more sources."""

    number: int
    start: int
    length: int
    segments: tuple[_Segment, ...]

    def describe(self) -> str:
        return f"part {self.number}, archive bytes {self.start}-{self.start + self.length - 1}"


def _plan_parts(sizes: Sequence[int], part_size: int) -> list[_Part]:
    """Cut the concatenated sources into parts; an empty archive is one empty part."""
    parts: list[_Part] = []
    segments: list[_Segment] = []
    start = filled = 0
    for index, size in enumerate(sizes):
        offset = 0
        while offset < size:
            take = min(size - offset, part_size - filled)
            segments.append(_Segment(index, offset, take))
            offset, filled = offset + take, filled + take
            if filled == part_size:
                parts.append(_Part(len(parts) + 1, start, filled, tuple(segments)))
                segments, start, filled = [], start + filled, 0
    if filled or not parts:
        parts.append(_Part(len(parts) + 1, start, filled, tuple(segments)))
    return parts


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


class _SignedUrl:
    """A source's current signed URL, shared by all parts so an expiry costs one fetch, not one per part.

    One part fetches while the others wait; every waiter still looks at the cancel event, so a kill
    never waits for an API call that is itself waiting out an outage.
    """

    def __init__(self, source: Source, coordinator: _Coordinator) -> None:
        self.source = source
        self.coordinator = coordinator
        self.generation = 0  # URLs fetched so far
        self._url = ""
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        while not self._lock.acquire(timeout=_POLL):
            self.coordinator.check()
        try:
            yield
        finally:
            self._lock.release()

    def get(self) -> tuple[str, int]:
        with self._held():
            if not self._url:
                self._fetch()
            return self._url, self.generation

    def refresh(self, stale: int) -> None:
        """Fetch a new URL unless another part has already replaced generation ``stale``."""
        with self._held():
            if self.generation == stale:
                self._fetch()

    def _fetch(self) -> None:
        self.coordinator.check()
        try:
            url = self.source.url_provider()
        except Exception as exc:
            self.coordinator.check()  # a provider interrupted by the cancel: report the cancel
            message = f"{self.source.label}: could not get a signed URL: {_scrub(str(exc))}"
            raise CopyError(message) from exc
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise CopyError(f"{self.source.label}: the URL provider returned no http(s) URL")
        self._url, self.generation = url, self.generation + 1


class _Retry(Exception):
    """One attempt failed in a way a new attempt may fix (resume, fresh URL, or wait)."""

    def __init__(self, reason: str, *, expired: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.expired = expired
        self.retry_after = retry_after


class _Fatal(Exception):
    """One attempt failed in a way no retry of this copy can fix (404, a refused range ...)."""


class _Changed(_Fatal):
    """The file's size is not the one probed: it changed during the copy."""


@dataclass
class _Fill:
    """A byte range of one source being read into a buffer; ``done`` is where a retry resumes."""

    offset: int
    view: memoryview
    done: int = 0

    @property
    def first(self) -> int:
        return self.offset + self.done

    @property
    def last(self) -> int:
        return self.offset + len(self.view) - 1

    def where(self) -> str:
        return f"bytes {self.first}-{self.last}"


class _Downloader:
    """Reads byte ranges of the sources' signed URLs into buffers; owns the HTTP session and retries."""

    def __init__(
        self,
        sources: Sequence[Source],
        settings: CopySettings,
        coordinator: _Coordinator,
        log: logging.Logger,
    ) -> None:
        self.urls = [_SignedUrl(source, coordinator) for source in sources]
        self.sizes: list[int] = []
        self.settings = settings
        self.coordinator = coordinator
        self.log = log
        self.policy = RetryPolicy(backoff_base=settings.backoff_base, backoff_max=settings.backoff_max)
        self.session = _plain_session(settings.max_concurrency)
        _redact_urllib3_logs()

    def close(self) -> None:
        self.session.close()

    def probe_sizes(self) -> list[int]:
        """Learn every source's size with ``Range: bytes=0-0``: a GET-signed URL answers HEAD with 403."""
        self.sizes = [self._retrying(i, lambda: "size probe", self._probe) for i in range(len(self.urls))]
        return self.sizes

    def check_sizes_unchanged(self) -> None:
        """Probe every source again: a file that grew or shrank since the copy began is still being written."""
        for index, before in enumerate(self.sizes):
            now = self._retrying(index, lambda: "size check", self._probe)
            if now != before:
                raise SourceChanged(
                    f"{self.urls[index].source.label} was {before} bytes when the copy began and is "
                    f"{now} bytes now: it is still being written"
                )

    def fill(self, index: int, offset: int, view: memoryview, on_bytes: Callable[[int], None]) -> None:
        """Fill ``view`` with bytes ``offset..`` of source ``index``, resuming where a failed read stopped."""
        target = _Fill(offset, view)
        if len(view):
            self._retrying(index, target.where, lambda url: self._read(url, index, target, on_bytes))

    def _retrying(self, index: int, where: Callable[[], str], attempt: Callable[[str], _T]) -> _T:
        signed = self.urls[index]
        failures, first_failure = 0, 0.0
        while True:
            self.coordinator.check()
            url, generation = signed.get()
            try:
                return attempt(url)
            except _Changed as exc:
                raise SourceChanged(
                    f"{signed.source.label}, {where()}: {exc}; it is still being written"
                ) from None
            except _Fatal as exc:
                raise CopyError(f"{signed.source.label}, {where()}: {exc}") from None
            except _Retry as exc:
                failures += 1
                first_failure = first_failure or time.monotonic()
                what = f"{signed.source.label}, {where()}"
                spent = time.monotonic() - first_failure
                if failures > self.settings.retries or spent > self.settings.retry_budget:
                    raise CopyError(
                        f"{what}: giving up after {failures} failed attempts over {spent:.0f} s; last: {exc}"
                    ) from None
                if exc.expired:
                    self.log.info("%s: %s; fetching a fresh signed URL", what, exc)
                    signed.refresh(generation)
                    continue
                delay = self._backoff(failures, exc.retry_after)
                self.log.warning(
                    "%s: %s; retry %d of %d in %.1f s", what, exc, failures, self.settings.retries, delay
                )
                self.coordinator.sleep(delay)

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        """The package's one backoff curve (:class:`~airflow_provider_c66.api.RetryPolicy`)."""
        delay = self.policy.backoff(failures)
        return max(delay, min(retry_after, self.policy.backoff_max)) if retry_after is not None else delay

    def _get(self, url: str, first: int, last: int) -> requests.Response:
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        try:
            return self.session.get(
                url, headers={"Range": f"bytes={first}-{last}"}, stream=True, timeout=timeout
            )
        except _TRANSPORT_ERRORS as exc:
            raise _Retry(_describe(exc)) from None

    def _probe(self, url: str) -> int:
        with self._get(url, 0, 0) as resp:  # closed unread: a 200 here would be the whole file
            _check_status(resp)
            if resp.status_code == 206:
                total = _content_range(resp)[2]
                if total is None:
                    raise _Fatal("the server does not say the file's size (Content-Range total '*')")
                return total
            if resp.status_code == 416 and resp.headers.get("Content-Range", "").strip() == "bytes */0":
                return 0
            length = _content_length(resp)
            if resp.status_code == 200 and length is not None:
                return length
            raise _Fatal(f"HTTP {resp.status_code} {resp.reason} to a ranged GET")

    def _read(self, url: str, index: int, target: _Fill, on_bytes: Callable[[int], None]) -> None:
        size, view = self.sizes[index], target.view
        first, last = target.first, target.last
        with self._get(url, first, last) as resp:
            _check_status(resp)
            announced = _content_length(resp)
            if resp.status_code == 206:
                got_first, got_last, total = _content_range(resp)
                if total is not None and total != size:
                    raise _Changed(f"the file's size changed from {size} to {total} bytes during the copy")
                if (got_first, got_last) != (first, last):
                    raise _Retry(
                        f"asked for bytes {first}-{last}, got Content-Range bytes {got_first}-{got_last}"
                    )
                if announced is not None and announced != last - first + 1:
                    raise _Retry(f"Content-Length {announced} for a {last - first + 1}-byte range")
                skip = 0
            elif resp.status_code == 200:  # Range ignored: the whole file follows
                if announced is not None and announced != size:
                    raise _Changed(
                        f"the file's size changed from {size} to {announced} bytes during the copy"
                    )
                skip = first
            elif resp.status_code == 416:
                raise _Changed(f"range not satisfiable: the file is no longer {size} bytes long")
            else:
                raise _Fatal(f"HTTP {resp.status_code} {resp.reason}")
            try:
                while skip:
                    self.coordinator.check()
                    dropped = len(resp.raw.read(min(skip, READ_BLOCK)))
                    if not dropped:
                        raise _Retry(f"the body ended {skip} bytes before byte {first}")
                    skip -= dropped
                while target.done < len(view):
                    self.coordinator.check()
                    count = resp.raw.readinto(view[target.done : target.done + READ_BLOCK])
                    if not count:
                        raise _Retry(f"the body ended {len(view) - target.done} bytes short")
                    target.done += count
                    on_bytes(count)
                if resp.status_code == 206 and resp.raw.read(1):
                    raise _Retry("the body is longer than the range asked for")
            except _TRANSPORT_ERRORS as exc:
                raise _Retry(_describe(exc)) from None


def _check_status(resp: requests.Response) -> None:
    """Raise for answers worth another attempt: 403 (expired URL), 400 ExpiredToken (the signing
    session ended), 408, 429 and 5xx."""
    status = resp.status_code
    if status == 403:
        raise _Retry("HTTP 403: the signed URL has expired or was refused", expired=True)
    if status == 400:
        code = _s3_error_code(resp)
        if code in _SESSION_EXPIRED:
            raise _Retry(f"HTTP 400 {code}: the signed URL's session token has expired", expired=True)
        raise _Fatal(f"HTTP 400 {code or resp.reason}")
    if status in (408, 429) or status >= 500:
        raise _Retry(f"HTTP {status} {resp.reason}", retry_after=parse_retry_after(resp.headers))


def _s3_error_code(resp: requests.Response) -> str | None:
    """The ``<Code>`` of an S3 error body (a few hundred bytes; at most 64 KiB are read)."""
    try:
        match = _S3_CODE.search(resp.raw.read(64 * 1024))
    except _TRANSPORT_ERRORS:
        return None
    return match.group(1).decode("ascii", "replace") if match else None


def _content_range(resp: requests.Response) -> tuple[int, int, int | None]:
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    if match is None:
        raise _Retry(
            f"a 206 answer with an unreadable Content-Range {resp.headers.get('Content-Range')!r:.60}"
        )
    total = match.group(3)
    return int(match.group(1)), int(match.group(2)), None if total == "*" else int(total)


def _content_length(resp: requests.Response) -> int | None:
    value = resp.headers.get("Content-Length", "").strip()
    return int(value) if value.isdigit() else None


def _no_auth(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """Session auth that adds nothing: keeps ``.netrc`` credentials off signed URLs (S3 refuses two auths)."""
    request.headers.pop("Authorization", None)
    return request


def _plain_session(pool_size: int) -> requests.Session:
    """A session for signed URLs: no auth, no cookies, no compression (bytes are counted as sent)."""
    session = requests.Session()
    session.auth = _no_auth
    session.headers["Accept-Encoding"] = "identity"
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _scrub(text: str) -> str:
    """Free text fit for a message: signed-URL credentials and whole query strings blanked out."""
    return _QUERY.sub("?[redacted]", redact_text(text))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_scrub(str(exc))}"


class _RedactSignedUrls(logging.Filter):
    """urllib3 logs every request's full path at DEBUG, and a signed URL's query string is a credential."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def _redact_urllib3_logs() -> None:
    # A logger's filters see only records logged on that very logger, so each module's logger gets one.
    for name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager", "urllib3.connection"):
        target = logging.getLogger(name)
        if not any(isinstance(existing, _RedactSignedUrls) for existing in target.filters):
            target.addFilter(_RedactSignedUrls())


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


class _PartBuffers:
    """Hands out part buffers and counts them: the memory bound, made checkable.

    Buffers are reused: a fresh 8 MiB ``bytearray`` per part costs a zero-fill each, and glibc keeps
    freed ones resident per thread arena, which raised peak RSS by about 30 MiB (``make bench``).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = self.peak = 0
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        with self._lock:
            self.in_use += 1
            self.peak = max(self.peak, self.in_use)
            assert self.in_use <= self.limit, f"{self.in_use} part buffers in use, limit {self.limit}"
            for index, buffer in enumerate(self._free):
                if len(buffer) == size:  # every byte is overwritten by _fill, and the count checked
                    return self._free.pop(index)
        return bytearray(size)  # bytearray: botocore sends it as is (memoryview is refused)

    def give_back(self, buffer: bytearray) -> None:
        with self._lock:
            self.in_use -= 1
            if len(self._free) + self.in_use < self.limit:
                self._free.append(buffer)


@dataclass
class _Uploaded:
    """A part S3 has accepted; ``data`` stays alive until the main thread has hashed it in order."""

    number: int
    etag: str
    checksum: str | None  # the part's CRC32, when flexible checksums are sent
    data: bytearray


class ArchiveDigest:
    """SHA-256 and CRC32 of an archive, fed in order (the same bytes a reader gets back)."""

    def __init__(self) -> None:
        self._sha256 = hashlib.sha256()
        self._crc = 0
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview, crc32: str | None = None) -> None:
        """Add the next bytes; ``crc32`` (base64, as sent to S3) is their CRC-32 when already known,
        which saves a second CRC pass over them."""
        self._sha256.update(data)
        if crc32 is None:
            self._crc = zlib.crc32(data, self._crc)
        else:
            self._crc = crc32_combine(self._crc, int.from_bytes(base64.b64decode(crc32), "big"), len(data))
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def crc32(self) -> str:
        """Base64 of the big-endian CRC-32, as S3's ``ChecksumCRC32``."""
        return base64.b64encode(self._crc.to_bytes(4, "big")).decode("ascii")


def _gf2_times(matrix: tuple[int, ...], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_gf2_times(matrix, matrix[n]) for n in range(32))


@functools.lru_cache(maxsize=8)
def _zeros_operator(length: int) -> tuple[int, ...]:
    """The GF(2) matrix that advances a CRC-32 register over ``length`` zero bytes (zlib's method)."""
    result = tuple(1 << n for n in range(32))  # identity
    power = _gf2_square(_gf2_square(_gf2_square((_CRC32_POLY, *(1 << n for n in range(31))))))  # 1 byte
    while length:
        if length & 1:
            result = tuple(_gf2_times(power, column) for column in result)
        length >>= 1
        if length:
            power = _gf2_square(power)
    return result


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of A+B from crc(A), crc(B) and len(B), without reading the bytes again."""
    return _gf2_times(_zeros_operator(length2), crc1) ^ crc2 if length2 else crc1


def stored_checksum(head: Mapping[str, Any]) -> str | None:
    """What a HeadObject with ``ChecksumMode=ENABLED`` says S3 stored: "CRC32 <value> <type>".

    The type is the one S3 states (``FULL_OBJECT`` or ``COMPOSITE``); a composite value without a
    stated type shows by its "-N"; anything else is ``UNTYPED`` and is not taken for a whole-object
    checksum (older stores answer with a value of unknown meaning).
    """
    for algorithm in ("CRC64NVME", "CRC32", "CRC32C", "SHA256", "SHA1"):
        value = head.get(f"Checksum{algorithm}")
        if value:
            kind = head.get("ChecksumType") or ("COMPOSITE" if "-" in str(value) else "UNTYPED")
            return f"{algorithm} {value} {kind}"
    return None


def flexible_checksums(client: Any) -> bool:
    """Whether the client sends ``x-amz-checksum-*`` headers: botocore's default, unless the user set
    ``request_checksum_calculation="when_required"`` (client Config, the Amazon connection's
    ``config_kwargs`` extra, or ``AWS_REQUEST_CHECKSUM_CALCULATION``) for a store that refuses them."""
    mode = getattr(
        getattr(getattr(client, "meta", None), "config", None), "request_checksum_calculation", None
    )
    return mode != "when_required"


def _md5_b64(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


class _Key:
    """One destination key and the rules every write to it follows, shared by the archive's objects
    and the manifest: a checksum S3 verifies on each body, the conditional write, the final check,
    Object Lock actually applied, and clean-up of what this copy wrote and could not verify."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        extra: Mapping[str, Any],
        *,
        if_none_match: bool,
        log: logging.Logger,
        patience: tuple[CopySettings, Callable[[float], None]] | None = None,
    ) -> None:
        self.client, self.bucket, self.key, self.extra, self.log = client, bucket, key, dict(extra), log
        self.target = f"s3://{bucket}/{key}"
        self.flexible = flexible_checksums(client)
        self.conditional = if_none_match
        self.patience = patience  # (settings, a cancellable sleep): S3 outages are waited out

    def integrity(self, data: bytes | bytearray) -> dict[str, str]:
        """A checksum of one body that S3 checks before storing it: CRC32 where the store takes flexible
        checksums, else Content-MD5, which every store takes. Object Lock writes require one of them."""
        if not self.flexible:
            return {"ContentMD5": _md5_b64(data)}
        # The algorithm header too: AWS requires "Content-MD5 or x-amz-sdk-checksum-algorithm" on lock writes.
        return {"ChecksumAlgorithm": "CRC32", "ChecksumCRC32": _crc32(data)}

    def write(
        self,
        operation: str,
        call: Callable[..., Any],
        is_ours: Callable[[], dict[str, Any] | None],
        **kwargs: Any,
    ) -> dict[str, Any]:
        """PutObject or CompleteMultipartUpload, with ``If-None-Match: *`` when the key was free.

        An answer that says the write did not happen because the key is taken (412, 409) or the upload
        is gone (NoSuchUpload, after botocore resent a Complete whose answer was lost) is looked into:
        the object at the key is accepted when it is this copy's, else :class:`ObjectExists`.
        """
        condition = {"IfNoneMatch": "*"} if self.conditional else {}
        try:
            return dict(self.s3(operation, call, **condition, **kwargs))
        except CopyError as exc:
            code = s3_error_code(exc.__cause__ or exc)
            if condition and code == "NotImplemented":
                self.log.warning(
                    "%s: the store does not implement conditional writes (If-None-Match); writing without",
                    self.target,
                )
                self.conditional = False
                return dict(self.s3(operation, call, **kwargs))
            if code not in _CONDITION_LOST and code != "NoSuchUpload":
                raise
            head = is_ours()
            if head is not None:
                self.log.warning(
                    "%s: %s answered %s, but the object at the key is this copy's (size, checksum, metadata): "
                    "its first answer was lost; accepting it",
                    self.target,
                    operation,
                    code,
                )
                return head
            if code in _CONDITION_LOST:
                raise ObjectExists(
                    f"{self.target}: another run wrote this key while this copy ran (S3 answered {code} to a "
                    "conditional write); this copy kept nothing and the other object is untouched"
                ) from exc
            raise

    def head_matches(self, size: int, crc: str | None, etag: str | None) -> dict[str, Any] | None:
        """The object at the key, if it holds these bytes as far as S3's answer shows (else None)."""
        mode: dict[str, Any] = {"ChecksumMode": "ENABLED"} if self.flexible else {}
        try:
            head = dict(self.client.head_object(Bucket=self.bucket, Key=self.key, **mode))
        except Exception:
            return None
        expected_meta: dict[str, str] = self.extra.get("Metadata") or {}
        metadata = cast("dict[str, str]", head.get("Metadata") or {})
        if head.get("ContentLength") != size or any(metadata.get(k) != v for k, v in expected_meta.items()):
            return None
        stored = head.get("ChecksumCRC32")
        if crc and stored:
            return head if stored in (crc, crc.rsplit("-", 1)[0]) else None  # some stores leave out "-N"
        if etag and str(head.get("ETag", "")).strip('"') != etag:
            return None
        return head

    def verify(self, size: int, version: str | None) -> dict[str, Any]:
        """HeadObject must show the size written, and the Object Lock asked for, before the write counts.

        The latest version is read (``s3:GetObject``); only when another write has meanwhile put a newer
        version on the key is this copy's version named, which AWS authorizes as ``s3:GetObjectVersion``.
        """
        head = self._head(version)
        if head.get("ContentLength") != size:
            self.discard(version)
            raise CopyError(
                f"{self.target}: S3 reports {head.get('ContentLength')} bytes after the upload, "
                f"expected {size}; the object was deleted"
            )
        if not self._locked_as_asked(head):
            self._apply_lock(version)
            if not self._locked_as_asked(self._head(version)):
                self.discard(version)
                raise CopyError(
                    f"{self.target}: the store does not apply Object Lock (HeadObject shows no such retention or "
                    "legal hold even after PutObjectRetention/PutObjectLegalHold); the object was deleted, "
                    "as it would not be protected"
                )
        return head

    def _head(self, version: str | None) -> dict[str, Any]:
        mode: dict[str, Any] = {"ChecksumMode": "ENABLED"} if self.flexible else {}
        head = dict(self.s3("HeadObject", self.client.head_object, **mode))
        latest = head.get("VersionId")
        if version and version != "null" and latest and latest != version:
            head = dict(self.s3("HeadObject", self.client.head_object, VersionId=version, **mode))
        return head

    def _locked_as_asked(self, head: Mapping[str, Any]) -> bool:
        mode, until = self.extra.get("ObjectLockMode"), self.extra.get("ObjectLockRetainUntilDate")
        if mode and until is not None:
            held_until = head.get("ObjectLockRetainUntilDate")
            if (
                head.get("ObjectLockMode") != mode
                or held_until is None
                or held_until < until - timedelta(seconds=1)
            ):
                return False
        hold = self.extra.get("ObjectLockLegalHoldStatus")
        return not hold or head.get("ObjectLockLegalHoldStatus") == hold

    def _apply_lock(self, version: str | None) -> None:
        """Some stores (and moto) drop lock parameters given to CreateMultipartUpload: set them afterwards."""
        which: dict[str, Any] = {"VersionId": version} if version and version != "null" else {}
        if self.extra.get("ObjectLockMode"):
            retention = {
                "Mode": self.extra["ObjectLockMode"],
                "RetainUntilDate": self.extra["ObjectLockRetainUntilDate"],
            }
            self.s3("PutObjectRetention", self.client.put_object_retention, Retention=retention, **which)
        if self.extra.get("ObjectLockLegalHoldStatus"):
            hold = {"Status": self.extra["ObjectLockLegalHoldStatus"]}
            self.s3("PutObjectLegalHold", self.client.put_object_legal_hold, LegalHold=hold, **which)
        self.log.info(
            "%s: the store did not apply the Object Lock given with the upload; set it afterwards",
            self.target,
        )

    def discard(self, version: str | None) -> None:
        """Delete this copy's version. Naming it needs ``s3:DeleteObjectVersion``; without that
        permission a delete marker hides it, and S3 keeps the bad version as noncurrent."""
        if version and version != "null":
            try:
                self.s3("DeleteObject", self.client.delete_object, VersionId=version)
                return
            except CopyError as exc:
                if s3_error_code(exc.__cause__ or exc) != "AccessDenied":
                    raise
                self.log.warning(
                    "%s: not allowed to delete version %s (s3:DeleteObjectVersion); a delete marker hides it",
                    self.target,
                    version,
                )
        self.s3("DeleteObject", self.client.delete_object)

    def s3(self, operation: str, call: Callable[..., _T], **kwargs: Any) -> _T:
        """Call an S3 operation on this key; any failure becomes a CopyError naming the key.

        With patience, an outage (5xx, throttling, a dropped connection) that outlasts botocore's own
        retries is waited out within the settings' ``retries`` and ``retry_budget``. Every call here is
        safe to repeat: writes are conditional or checked (:meth:`write`), and an upload created twice
        is aborted once the archive is complete.
        """
        failures, first_failure = 0, 0.0
        while True:
            try:
                return call(Bucket=self.bucket, Key=self.key, **kwargs)
            except Exception as exc:
                if self.patience is None or not _transient(exc):
                    raise CopyError(f"{self.target}: S3 {operation} failed: {exc}") from exc
                settings, sleep = self.patience
                failures += 1
                first_failure = first_failure or time.monotonic()
                spent = time.monotonic() - first_failure
                if failures > settings.retries or spent > settings.retry_budget:
                    raise CopyError(
                        f"{self.target}: S3 {operation} failed {failures} times over {spent:.0f} s: {exc}"
                    ) from exc
                delay = RetryPolicy(
                    backoff_base=settings.backoff_base, backoff_max=settings.backoff_max
                ).backoff(failures)
                self.log.warning(
                    "%s: S3 %s failed (%s); retry %d in %.1f s", self.target, operation, exc, failures, delay
                )
                sleep(delay)


def write_object(
    client: S3Client,
    bucket: str,
    key: str,
    body: bytes,
    *,
    extra_args: Mapping[str, Any] | None = None,
    if_none_match: bool = False,
    log: logging.Logger | None = None,
) -> None:
    """Write a small object (the manifest) under the same rules as the archive: checksum, condition,
    final check and Object Lock. :raises ObjectExists: the key was taken by another run."""
    unknown = sorted(set(extra_args or {}) - EXTRA_ARGS)
    if unknown:
        raise ValueError(f"unsupported extra_args {unknown}; allowed: {sorted(EXTRA_ARGS)}")
    dest = _Key(client, bucket, key, extra_args or {}, if_none_match=if_none_match, log=log or logger)
    integrity = dest.integrity(body)
    md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
    answer = dest.write(
        "PutObject",
        client.put_object,
        lambda: dest.head_matches(len(body), integrity.get("ChecksumCRC32"), md5),
        Body=body,
        **integrity,
        **dest.extra,
    )
    dest.verify(len(body), answer.get("VersionId"))


class _Pipeline:
    """The copy's two stages: ``max_concurrency`` threads download parts, as many upload them.

    Each stage runs its parts in submission (archive) order. A download hands its filled buffer to the
    upload stage and takes the next part at once, so neither direction waits for the other.
    """

    def __init__(self, max_concurrency: int) -> None:
        self.download = ThreadPoolExecutor(max_concurrency, thread_name_prefix="c66-read")
        self.upload = ThreadPoolExecutor(max_concurrency, thread_name_prefix="c66-send")

    def shutdown(self) -> None:
        """Wait for the running parts (each stops at its next check once the copy failed or was
        cancelled) and drop the queued ones; downloads first, since a download may queue an upload."""
        self.download.shutdown(wait=True, cancel_futures=True)
        self.upload.shutdown(wait=True, cancel_futures=True)


class _ArchiveCopy:
    """Moves one planned archive into one key (PutObject or multipart) and owns that upload's cleanup."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        extra_args: dict[str, Any],
        settings: CopySettings,
        downloader: _Downloader,
        coordinator: _Coordinator,
        observers: _Observers,
        log: logging.Logger,
        if_none_match: bool = False,
        resume: bool = False,
        keep_upload_on_failure: bool = False,
    ) -> None:
        self.client, self.bucket, self.key, self.extra = client, bucket, key, extra_args
        self.resume, self.keep_upload_on_failure = resume, keep_upload_on_failure
        self.reused = 0
        self._reused_lock = threading.Lock()
        self.settings, self.downloader, self.coordinator = settings, downloader, coordinator
        self.observers, self.log = observers, log
        self.target = f"s3://{bucket}/{key}"
        # The pipeline's memory bound: a part holds a buffer from the start of its download until the
        # main thread has hashed it, and at most 2 x max_concurrency parts are between those points.
        self.buffers = _PartBuffers(2 * settings.max_concurrency)
        self.dest = _Key(
            client,
            bucket,
            key,
            extra_args,
            if_none_match=if_none_match,
            log=log,
            patience=(settings, coordinator.sleep),
        )

    def run(
        self, parts: Sequence[_Part], before_complete: Callable[[], None]
    ) -> tuple[str, ArchiveDigest, str | None]:
        """Upload and verify; return (ETag, the archive's digest, the checksum S3 stored). Nothing is
        left behind when this raises.

        ``before_complete`` runs once every byte is uploaded and before the object can appear: the
        sources are probed again first, so a file still being written never completes an object.
        """

        def settle() -> None:
            self.downloader.check_sizes_unchanged()
            before_complete()
            self.coordinator.check_main()  # a cancel that arrives now still leaves nothing behind

        if len(parts) == 1:
            etag, digest, version = self._put(parts[0], settle)
        else:
            etag, digest, version = self._multipart(parts, settle)
        head = self.dest.verify(sum(part.length for part in parts), version)
        # Some stores (radosgw 16) answer CompleteMultipartUpload with an empty ETag; HEAD has it.
        etag = etag.strip('"') or str(head.get("ETag", "")).strip('"')
        return etag, digest, stored_checksum(head)

    def _put(self, part: _Part, settle: Callable[[], None]) -> tuple[str, ArchiveDigest, str | None]:
        self.observers.part_started(part.number, part.length)
        data = self.buffers.take(part.length)
        try:
            self._fill(part, data)
            integrity = self.dest.integrity(data)
            self.observers.part_read(part.number)
            md5 = base64.b64decode(integrity["ContentMD5"]).hex() if "ContentMD5" in integrity else None
            settle()
            answer = self.dest.write(
                "PutObject",
                self.client.put_object,
                lambda: self.dest.head_matches(part.length, integrity.get("ChecksumCRC32"), md5),
                Body=data,
                **integrity,
                **self.extra,
            )
            self.observers.part_uploaded(part.number, part.length, False)
            digest = ArchiveDigest()
            digest.update(data, integrity.get("ChecksumCRC32"))
        finally:
            self._release(part.number, data)
        return answer["ETag"], digest, answer.get("VersionId")

    def _multipart(
        self, parts: Sequence[_Part], settle: Callable[[], None]
    ) -> tuple[str, ArchiveDigest, str | None]:
        found = self._resumable(parts) if self.resume else None
        upload_id, full_object, earlier = found or (*self._create(), {})
        pools = _Pipeline(self.settings.max_concurrency)
        try:
            completed, digest = self._upload_parts(pools, upload_id, parts, earlier)
            settle()
            answer = self._complete(upload_id, completed, digest, full_object)
        except BaseException as exc:
            if self.keep_upload_on_failure and _resumable_failure(exc):
                # Another try follows: the parts in S3 are its head start (it checks each against the
                # source before using it). The last try, a cancel or a changed source abort instead.
                pools.shutdown()
                self.log.warning(
                    "%s: the multipart upload stays open for the next try to resume (it aborts it if it "
                    "cannot use it); a bucket lifecycle rule for incomplete uploads removes any left behind",
                    self.target,
                )
                raise
            # Abort at once, without waiting for the workers: one may be stuck in a read or an API
            # call, and a kill must not outlast Airflow's grace period. Once they have stopped, abort
            # again: a part that was in flight during the first abort may still have been stored.
            self._abort(upload_id)
            pools.shutdown()
            self._abort(upload_id, quiet=True)
            raise
        pools.shutdown()
        return answer.get("ETag", ""), digest, answer.get("VersionId")

    def _resumable(self, parts: Sequence[_Part]) -> tuple[str, bool, dict[int, Any]] | None:
        """An open upload an earlier try left on this key that this copy can continue, with its parts.

        Only an upload made the same way qualifies (checksum algorithm, storage class); its parts are
        used only where S3 holds a part of the planned size whose checksum matches the source's bytes
        (checked in :meth:`_upload_part`), so a different part plan or stale bytes are uploaded again.
        """
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.key
            )
            uploads = [u for page in pages for u in page.get("Uploads", []) if u.get("Key") == self.key]
        except Exception as exc:
            self.log.info("%s: could not list open uploads to resume (%s); starting afresh", self.target, exc)
            return None
        wanted_class = self.extra.get("StorageClass", "STANDARD")
        algorithm = "CRC32" if self.dest.flexible else None
        for upload in sorted(uploads, key=lambda u: str(u.get("Initiated", "")), reverse=True):
            reported_class = upload.get("StorageClass") or "STANDARD"  # some stores always say STANDARD
            # Some stores (nanio, radosgw) report no algorithm for any upload; AWS does. An upload whose
            # algorithm differs refuses this copy's parts (400), which aborts it rather than keeping it.
            reported = upload.get("ChecksumAlgorithm")
            if (reported is not None and reported != algorithm) or reported_class not in (
                "STANDARD",
                wanted_class,
            ):
                continue
            upload_id = str(upload.get("UploadId", ""))
            try:
                paginator = self.client.get_paginator("list_parts")
                listing: list[dict[str, Any]] = [
                    dict(page)
                    for page in paginator.paginate(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
                ]
            except Exception as exc:
                self.log.info(
                    "%s: could not list the parts of an open upload (%s); starting afresh", self.target, exc
                )
                continue
            earlier = {int(p["PartNumber"]): p for page in listing for p in page.get("Parts", [])}
            kind = next((page.get("ChecksumType") for page in listing if page.get("ChecksumType")), None)
            full_object = (kind or upload.get("ChecksumType")) == "FULL_OBJECT"
            usable = sum(1 for part in parts if earlier.get(part.number, {}).get("Size") == part.length)
            self.log.info(
                "%s: resuming the multipart upload an earlier try left open: %d of %d part(s) in S3 have "
                "the planned size and are checked against the source before use",
                self.target,
                usable,
                len(parts),
            )
            return upload_id, full_object, earlier
        return None

    def _create(self) -> tuple[str, bool]:
        """CreateMultipartUpload; True when S3 keeps a full-object CRC32 (``ChecksumType=FULL_OBJECT``).

        S3 then checks the whole object's CRC32 at completion and clients (``aws s3 cp``, boto3) check
        it on download. The CRC is computed in order alongside the SHA-256, so no extra pass is needed.
        A store that does not know the type either refuses it (asked again without) or does not echo
        it back (the composite checksum stays).
        """
        create = self.client.create_multipart_upload
        if not self.dest.flexible:
            return self._s3("CreateMultipartUpload", create, **self.extra)["UploadId"], False
        try:
            answer = self._s3(
                "CreateMultipartUpload",
                create,
                ChecksumAlgorithm="CRC32",
                ChecksumType="FULL_OBJECT",
                **self.extra,
            )
        except CopyError as exc:
            if s3_error_code(exc.__cause__ or exc) not in (
                "NotImplemented",
                "InvalidArgument",
                "InvalidRequest",
            ):
                raise
            self.log.info("%s: the store refuses full-object checksums; using per-part ones", self.target)
            answer = self._s3("CreateMultipartUpload", create, ChecksumAlgorithm="CRC32", **self.extra)
        return answer["UploadId"], answer.get("ChecksumType") == "FULL_OBJECT"

    def _complete(
        self, upload_id: str, completed: list[CompletedPartTypeDef], digest: ArchiveDigest, full_object: bool
    ) -> dict[str, Any]:
        """CompleteMultipartUpload; an answer lost on the way is recognised by the object it made.

        When the answer to a Complete is lost, botocore sends it again and S3 says ``NoSuchUpload``
        (or, with the condition, ``PreconditionFailed``): the upload is gone because it completed.
        The object is then accepted if it is this copy's.
        """
        crcs = [part.get("ChecksumCRC32") for part in completed]
        expected = _composite_crc32([c for c in crcs if c]) if all(crcs) else None
        whole: dict[str, str] = {}
        if full_object:
            expected = digest.crc32
            whole = {"ChecksumCRC32": digest.crc32, "ChecksumType": "FULL_OBJECT"}
        etag = _multipart_etag([str(part["ETag"]) for part in completed])
        return self.dest.write(
            "CompleteMultipartUpload",
            self.client.complete_multipart_upload,
            lambda: self.dest.head_matches(digest.size, expected, etag),
            UploadId=upload_id,
            MultipartUpload={"Parts": completed},
            **whole,
        )

    def _upload_parts(
        self, pools: _Pipeline, upload_id: str, parts: Sequence[_Part], earlier: Mapping[int, Any]
    ) -> tuple[list[CompletedPartTypeDef], ArchiveDigest]:
        """Run the pipeline; collect the parts in order to hash the archive.

        Up to ``max_concurrency`` parts download while up to ``max_concurrency`` others upload, so on a
        capped link both directions stay busy. At most ``2 x max_concurrency`` parts are between the
        start of their download and their collection here: that, times the part size, bounds memory.
        """
        digest = ArchiveDigest()
        completed: list[CompletedPartTypeDef] = []
        window: deque[Future[_Uploaded | Future[_Uploaded]]] = deque()
        try:
            for part in parts:
                if len(window) == self.buffers.limit:
                    completed.append(self._collect(window.popleft(), digest))
                self.coordinator.check_main()
                window.append(pools.download.submit(self._read_part, pools, upload_id, part, earlier))
            while window:
                completed.append(self._collect(window.popleft(), digest))
        except BaseException as exc:
            self.coordinator.fail(exc)  # running workers stop at their next read
            raise
        return completed, digest

    def _collect(
        self, future: Future[_Uploaded | Future[_Uploaded]], digest: ArchiveDigest
    ) -> CompletedPartTypeDef:
        read = self._wait(future)
        uploaded = self._wait(read) if isinstance(read, Future) else read
        try:
            digest.update(uploaded.data, uploaded.checksum)
        finally:
            self._release(uploaded.number, uploaded.data)
        part: CompletedPartTypeDef = {"PartNumber": uploaded.number, "ETag": uploaded.etag}
        if uploaded.checksum:
            part["ChecksumCRC32"] = uploaded.checksum
        return part

    def _wait(self, future: Future[_T]) -> _T:
        while not wait([future], timeout=_POLL).done:
            self.coordinator.check_main()  # a later part's failure or a cancel need not wait for this one
        if future.exception() is not None:
            self.coordinator.check_main()
        return future.result()

    def _read_part(
        self, pools: _Pipeline, upload_id: str, part: _Part, earlier: Mapping[int, Any]
    ) -> _Uploaded | Future[_Uploaded]:
        """The download stage: fill the part's buffer, checksum it, hand it to the upload stage.

        A part an earlier try left in S3 that holds exactly these bytes is kept without an upload.
        """
        self.coordinator.check()
        self.observers.part_started(part.number, part.length)
        data = self.buffers.take(part.length)
        try:
            self._fill(part, data)
            integrity = self.dest.integrity(data)
            self.observers.part_read(part.number)
            self.coordinator.check()
            held = earlier.get(part.number)
            if held is not None and _holds(held, part.length, integrity, data):
                with self._reused_lock:
                    self.reused += part.length
                self.observers.part_uploaded(part.number, part.length, True)
                return _Uploaded(part.number, str(held["ETag"]), integrity.get("ChecksumCRC32"), data)
            return pools.upload.submit(self._send_part, upload_id, part, data, integrity)
        except BaseException as exc:
            self._release(part.number, data)
            self.coordinator.fail(exc)
            raise

    def _send_part(
        self, upload_id: str, part: _Part, data: bytearray, integrity: Mapping[str, str]
    ) -> _Uploaded:
        """The upload stage: one UploadPart, its echoed checksum checked."""
        try:
            self.coordinator.check()
            answer = self._s3(
                f"UploadPart ({part.describe()})",
                self.client.upload_part,
                UploadId=upload_id,
                PartNumber=part.number,
                Body=data,
                **integrity,
            )
            checksum = integrity.get("ChecksumCRC32")
            echoed = answer.get("ChecksumCRC32")
            if checksum and echoed and echoed != checksum:
                raise CopyError(
                    f"{self.target}: S3 stored {part.describe()} with CRC32 {echoed}, sent {checksum}"
                )
            self.observers.part_uploaded(part.number, part.length, False)
            return _Uploaded(part.number, answer["ETag"], checksum, data)
        except BaseException as exc:
            self._release(part.number, data)
            self.coordinator.fail(exc)
            raise

    def _release(self, number: int, data: bytearray) -> None:
        self.buffers.give_back(data)
        self.observers.part_released(number)

    def _fill(self, part: _Part, data: bytearray) -> None:
        view, at = memoryview(data), 0
        for segment in part.segments:
            chunk = view[at : at + segment.length]
            self.downloader.fill(segment.source, segment.offset, chunk, self.observers.bytes_read)
            at += segment.length

    def _abort(self, upload_id: str, *, quiet: bool = False) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
            self.log.info("Aborted the multipart upload of %s", self.target)
        except Exception as exc:
            if s3_error_code(exc) == "NoSuchUpload":  # aborted just before, or by a concurrent copy that won
                if not quiet:
                    self.log.info("The multipart upload of %s was already gone", self.target)
                return
            self.log.error(
                "Could not abort multipart upload %s of %s (%s); the run that completes the archive aborts it",
                upload_id,
                self.target,
                exc,
            )

    def _s3(self, operation: str, call: Callable[..., _T], **kwargs: Any) -> _T:
        return self.dest.s3(operation, call, **kwargs)


def _holds(earlier: Mapping[str, Any], length: int, integrity: Mapping[str, str], data: bytearray) -> bool:
    """Whether a part an earlier try uploaded (a ListParts entry) holds exactly these bytes."""
    if earlier.get("Size") != length:
        return False
    listed = earlier.get("ChecksumCRC32")
    if listed and "ChecksumCRC32" in integrity:
        return bool(listed == integrity["ChecksumCRC32"])
    etag = str(earlier.get("ETag", "")).strip('"')  # an MD5 of the part, where the store makes it so
    return etag == hashlib.md5(data, usedforsecurity=False).hexdigest()


def _transient(exc: BaseException) -> bool:
    """An S3 failure worth waiting out: a 5xx, 429 or 408 answer, or no answer at all."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return True
    response = getattr(exc, "response", None)
    status = (
        response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    )
    # 501 Not Implemented is a store's lasting answer (a header it does not support), not an outage.
    return isinstance(status, int) and (status >= 500 or status in (408, 429)) and status != 501


def _resumable_failure(exc: BaseException) -> bool:
    """A failure after which the next try may continue the upload: a transient one (a 5xx, throttling,
    a timeout, a dropped connection, the source's host failing), not a cancel, a source that changed,
    another run's object at the key, or S3 refusing the request (a 4xx would refuse it again)."""
    if not isinstance(exc, Exception) or isinstance(
        exc, (CopyCancelled, SourceChanged, ObjectExists, _Stopped)
    ):
        return False
    response = getattr(exc.__cause__, "response", None)
    status = (
        response.get("ResponseMetadata", {}).get("HTTPStatusCode") if isinstance(response, dict) else None
    )
    return not isinstance(status, int) or (status >= 500 and status != 501) or status in (408, 429)


def s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError, without importing botocore."""
    response = getattr(exc, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    code = error.get("Code") if isinstance(error, dict) else None
    return str(code) if code is not None else None


def _crc32(data: bytes | bytearray) -> str:
    """S3's ChecksumCRC32: base64 of the big-endian CRC-32."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode("ascii")


def _composite_crc32(part_checksums: Sequence[str]) -> str:
    """S3's checksum of a multipart object: the CRC-32 of the parts' CRC-32s, then ``-N``."""
    joined = b"".join(base64.b64decode(checksum) for checksum in part_checksums)
    return f"{_crc32(joined)}-{len(part_checksums)}"


def _multipart_etag(part_etags: Sequence[str]) -> str | None:
    """S3's ETag of a multipart object (MD5 of the parts' MD5s, then ``-N``), or None when a part's
    ETag is not an MD5 (some encryption modes, some stores) and so cannot be combined."""
    digests = [etag.strip('"') for etag in part_etags]
    if not all(re.fullmatch(r"[0-9a-fA-F]{32}", d) for d in digests):
        return None
    combined = hashlib.md5(b"".join(bytes.fromhex(d) for d in digests), usedforsecurity=False)
    return f"{combined.hexdigest()}-{len(digests)}"


def copy_to_s3(
    sources: Sequence[Source],
    client: S3Client,
    bucket: str,
    key: str,
    *,
    settings: CopySettings | None = None,
    extra_args: Mapping[str, Any] | None = None,
    cancel: threading.Event | None = None,
    log: logging.Logger | None = None,
    expected_size: int | None = None,
    before_complete: Callable[[Sequence[int]], None] | None = None,
    if_none_match: bool = False,
    resume: bool = False,
    keep_upload_on_failure: bool = False,
    observers: Sequence[CopyObserver] = (),
) -> CopyResult:
    """Copy ``sources``, concatenated in order, to ``s3://bucket/key``; all or nothing.

    :param sources: the archive's files in order (one file: a plain copy).
    :param client: a boto3 S3 client.
    :param settings: part size, concurrency, retries, timeouts.
    :param extra_args: object arguments, from :data:`EXTRA_ARGS` (StorageClass, SSE, Tagging, Metadata ...).
    :param cancel: set it (``on_kill``) to stop: the upload is aborted and :class:`CopyCancelled` raised.
    :param log: where progress and retries are logged.
    :param expected_size: the archive's size as its record states it: another total fails the copy
        with :class:`SourceChanged` before anything is uploaded.
    :param before_complete: called with the sources' sizes once every byte is uploaded, after the
        sources were probed again and found unchanged, and before the object can appear; what it
        raises aborts the copy (the caller's last look at the source, e.g. its file list).
    :param if_none_match: the key was free when the caller looked: write with ``If-None-Match: *`` so
        that a concurrent run's object is never overwritten (stores that answer 501 get a plain write).
    :param resume: continue a multipart upload an earlier try left open on the key: its parts whose
        size and checksum match the source's bytes are not uploaded again (the source is still read,
        so the SHA-256 stays exact).
    :param keep_upload_on_failure: another try follows: on a failure (not a cancel, not a changed
        source) leave the multipart upload open for it to resume instead of aborting it.
    :param observers: told of the copy's progress (:class:`CopyObserver`), after the progress log.
    :raises ObjectExists: another run wrote the key meanwhile; nothing of this copy is left.
    :raises SourceChanged: the sources changed during the copy or disagree with ``expected_size``.
    :raises CopyError: the copy failed; no object and no multipart upload were left behind.
    """
    if not sources:
        raise ValueError("no sources to copy")
    unknown = sorted(set(extra_args or {}) - EXTRA_ARGS)
    if unknown:
        raise ValueError(f"unsupported extra_args {unknown}; allowed: {sorted(EXTRA_ARGS)}")
    settings = settings or CopySettings()
    log = log or logger
    target = f"s3://{bucket}/{key}"
    coordinator = _Coordinator(cancel or threading.Event())
    downloader = _Downloader(sources, settings, coordinator, log)
    watch = _Observers([ProgressLog(log, settings.progress_interval), *observers])
    started = time.monotonic()
    try:
        sizes = downloader.probe_sizes()
        total = sum(sizes)
        if expected_size is not None and expected_size != total:
            raise SourceChanged(
                f"{target}: the files hold {total} bytes but the backup's record says {expected_size}; "
                "nothing was uploaded"
            )
        part_size = choose_part_size(total, settings.part_size)
        parts = _plan_parts(sizes, part_size)
        log.info(
            "Copying %d file(s), %s, to %s in %d part(s) of up to %s, %d at a time",
            len(sources),
            _mib(total),
            target,
            len(parts),
            _mib(part_size),
            settings.max_concurrency,
        )
        watch.copy_started(target, total, tuple(part.length for part in parts))
        copy = _ArchiveCopy(
            client,
            bucket,
            key,
            dict(extra_args or {}),
            settings,
            downloader,
            coordinator,
            watch,
            log,
            if_none_match,
            resume,
            keep_upload_on_failure,
        )
        etag, digest, s3_checksum = copy.run(
            parts, lambda: before_complete(sizes) if before_complete else None
        )
    except CopyCancelled:
        raise CopyCancelled(
            f"{target}: cancelled after {_mib(watch.read)} read; nothing was left in S3"
        ) from None
    finally:
        downloader.close()
    ids = tuple(source.file_id for source in sources)
    result = CopyResult(
        bucket,
        key,
        total,
        etag,
        digest.sha256,
        len(parts),
        tuple(zip(ids, sizes, strict=True)),
        digest.crc32,
        s3_checksum,
        copy.reused,
    )
    watch.copy_finished(result, time.monotonic() - started)
    return result
