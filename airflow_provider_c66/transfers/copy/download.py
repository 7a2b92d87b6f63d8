"""Reading byte ranges of the sources' short-lived signed URLs: retries, expiry, short bodies."""

from __future__ import annotations

import contextlib
import http.client
import http.cookiejar
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests
import requests.adapters
import urllib3.exceptions

from airflow_provider_c66.api import RetryState, parse_retry_after
from airflow_provider_c66.redaction import describe_error, redact_message, redact_urllib3_logs
from airflow_provider_c66.transfers.copy.coordination import _Coordinator
from airflow_provider_c66.transfers.copy.model import (
    _POLL,
    _T,
    CopyError,
    CopySettings,
    MiB,
    Source,
    SourceChanged,
)

READ_BLOCK = MiB  # one socket read; urllib3 copies each block once into the part buffer


# requests' exceptions derive from OSError; reading ``resp.raw`` raises urllib3's and http.client's own.
_TRANSPORT_ERRORS = (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError)
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_S3_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")


# What S3 answers (400) to a URL signed with temporary credentials whose session has ended.
_SESSION_EXPIRED = frozenset({"ExpiredToken", "TokenRefreshRequired"})


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
            message = f"{self.source.label}: could not get a signed URL: {redact_message(str(exc))}"
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
        self.session = _plain_session(settings.max_concurrency)
        redact_urllib3_logs()

    def close(self) -> None:
        self.session.close()

    def probe_sizes(self) -> list[int]:
        """Learn every source's size with ``Range: bytes=0-0``: a GET-signed URL answers HEAD with 403."""
        self.sizes = self._probe_all("size probe")
        return self.sizes

    def check_sizes_unchanged(self) -> None:
        """Probe every source again: a file that grew or shrank since the copy began is still being written."""
        for index, (before, now) in enumerate(zip(self.sizes, self._probe_all("size check"), strict=True)):
            if now != before:
                raise SourceChanged(
                    f"{self.urls[index].source.label} was {before} bytes when the copy began and is "
                    f"{now} bytes now: it is still being written"
                )

    def _probe_all(self, what: str) -> list[int]:
        """Every source's size, the sources probed at once: each probe may first fetch a signed URL, so
        one after another they cost two round trips per file before the first byte (or the completion).
        The first failure, a probe's or (during the second look) a part's, stops the other probes at
        their next check and is the one raised."""

        def probe(index: int) -> int:
            try:
                return self._retrying(index, lambda: what, self._probe)
            except BaseException as exc:
                self.coordinator.fail(exc)
                raise

        workers = min(len(self.urls), self.settings.max_concurrency)
        with ThreadPoolExecutor(workers, thread_name_prefix="c66-probe") as pool:
            probes = [pool.submit(probe, index) for index in range(len(self.urls))]
        self.coordinator.check_main()
        return [future.result() for future in probes]

    def fill(self, index: int, offset: int, view: memoryview, on_bytes: Callable[[int], None]) -> None:
        """Fill ``view`` with bytes ``offset..`` of source ``index``, resuming where a failed read stopped."""
        target = _Fill(offset, view)
        if len(view):
            self._retrying(index, target.where, lambda url: self._read(url, index, target, on_bytes))

    def _retrying(self, index: int, where: Callable[[], str], attempt: Callable[[str], _T]) -> _T:
        signed = self.urls[index]
        retry = RetryState(self.settings.retry_policy)
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
                what = f"{signed.source.label}, {where()}"
                if retry.gives_up():
                    raise CopyError(
                        f"{what}: giving up after {retry.failures} failed attempts over {retry.spent:.0f} s; "
                        f"last: {exc}"
                    ) from None
                if exc.expired:
                    self.log.info("%s: %s; fetching a fresh signed URL", what, exc)
                    signed.refresh(generation)
                    continue
                delay = retry.delay(exc.retry_after)
                self.log.warning(
                    "%s: %s; retry %d of %d in %.1f s",
                    what,
                    exc,
                    retry.failures,
                    self.settings.retries,
                    delay,
                )
                self.coordinator.sleep(delay)

    def _get(self, url: str, first: int, last: int) -> requests.Response:
        timeout = (self.settings.connect_timeout, self.settings.read_timeout)
        try:
            return self.session.get(
                url, headers={"Range": f"bytes={first}-{last}"}, stream=True, timeout=timeout
            )
        except _TRANSPORT_ERRORS as exc:
            raise _Retry(describe_error(exc)) from None

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
                raise _Retry(describe_error(exc)) from None


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
