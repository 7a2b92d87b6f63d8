"""An in-process HTTP emulator of the Cloud 66 v3 backups API and of its S3 signed file URLs.

Tests, benchmarks and demos talk to it over real sockets instead of Cloud 66, so the provider's HTTP
code (auth, pagination, rate limits, the ``%25`` URL quirk, ranged downloads, dropped connections)
is exercised exactly as in production. It uses the standard library only: importing it must stay
cheap for users' test suites.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import re
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import chain
from random import Random
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, quote, urlsplit

from airflow_provider_c66.testing import content

__all__ = ["Cloud66Emulator", "RecordedRequest"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/3"
FILE_PREFIX = "/c66-backups/"
ACCESS_KEY_ID = "AKIAEMULATOR"
PER_PAGE = 30
DB_TYPES = ("mysql", "postgresql", "redis", "mongodb")
LOG_ENV = "C66_EMULATOR_LOG"
"""Set to 1 to log requests (method, path without query, status) at INFO; tokens never appear."""

_DUMP_TOOLS = {"mysql": "mysqldump", "postgresql": "pg_dump", "redis": "redis-cli", "mongodb": "mongodump"}
_SUFFIX_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
_PROTECTED = ("public", "admin")
_CONN_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)

RequestKind = Literal["api", "file"]


@dataclass(frozen=True, repr=False)
class RecordedRequest:
    """One request the emulator received, with the status it answered.

    Header names are normalised to ``Title-Case`` (``Authorization``, ``X-Account``). The repr
    redacts credentials so a failing assertion never prints a token or a URL signature.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any | None
    status: int
    kind: RequestKind
    body: bytes = b""
    time: float = 0.0
    budget_window: float | None = None
    """For an API request the rate budget counted (served or throttled): the start (epoch seconds) of
    the token's budget window it was counted in; None for file requests and uncounted answers."""

    def __repr__(self) -> str:
        headers = {k: ("<redacted>" if k == "Authorization" else v) for k, v in self.headers.items()}
        query = {k: ("<redacted>" if k == "Signature" else v) for k, v in self.query.items()}
        return (
            f"RecordedRequest(method={self.method!r}, path={self.path!r}, query={query!r}, "
            f"headers={headers!r}, json={self.json!r}, status={self.status!r}, kind={self.kind!r})"
        )


@dataclass
class _Stack:
    uid: str
    name: str
    databases: list[tuple[str, str]]
    created: datetime


@dataclass
class _Backup:
    id: int
    stack_uid: str
    db_type: str
    database_name: str
    size: int
    seed: int
    backup_date: datetime
    status: int
    result: str
    group: int
    gzip: bool
    skip_tables: str
    has_files: bool
    extra_fields: dict[str, Any]
    updated: datetime | None = None  # when the record last changed; None: its backup date
    reported_size: int | None = None  # what backup_size says; None: the files' current size

    @property
    def base_name(self) -> str:
        return re.sub(r"[^A-Za-z0-9_]", "_", self.database_name) or "db"

    @property
    def storage_path(self) -> str:
        account = hashlib.md5(b"emulated-account", usedforsecurity=False).hexdigest()
        stack = hashlib.md5(self.stack_uid.encode(), usedforsecurity=False).hexdigest()
        started = (self.backup_date - timedelta(seconds=2)).strftime("%Y.%m.%d.%H.%M.%S")
        return f"{account}/backups/{stack}/{self.db_type}/{self.base_name}_{self.id}/{started}"


@dataclass(frozen=True)
class _File:
    id: str
    name: str
    offset: int
    length: int


@dataclass
class _Pending:
    due: float
    stack_uid: str
    db_type: str
    database_name: str
    group: int | None
    outcome: str
    size: int
    gzip: bool
    skip_tables: str


@dataclass
class _Growth:
    """A backup still being written: its files grow by ``by`` bytes after ``after`` more downloads."""

    stack_uid: str
    backup_id: int
    by: int
    after: int


# How S3 answers a signed URL whose signature is past its life: plain expiry, or a dead session token.
_EXPIRY_ERRORS = {
    "AccessDenied": (403, "Request has expired"),
    "ExpiredToken": (400, "The provided token has expired."),
    "TokenRefreshRequired": (400, "The provided token must be refreshed."),
}


@dataclass
class _Window:
    start: float = -math.inf
    used: int = 0


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
    """The start of the budget window that counted this API answer (see :class:`RecordedRequest`)."""

    @classmethod
    def of(
        cls, status: int, body: bytes, content_type: str, headers: Sequence[tuple[str, str]] = ()
    ) -> _Reply:
        return cls(status, [("Content-Type", content_type), *headers], len(body), (body,))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _utc_seconds(moment: datetime | None) -> datetime:
    if moment is None:
        moment = datetime.now(UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


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


def _canonical_header(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))


def _suffix(index: int) -> str:
    if index >= len(_SUFFIX_LETTERS) ** 2:
        raise ValueError("more than 676 parts: split's two-letter suffixes are exhausted")
    return _SUFFIX_LETTERS[index // 26] + _SUFFIX_LETTERS[index % 26]


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


def _int_param(params: Mapping[str, Any], name: str, *, minimum: int | None = None) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise _ApiError(
            400, "bad_request", "The request has invalid parameters", f"{name} must be an integer"
        ) from None
    if minimum is not None and number < minimum:
        raise _ApiError(
            400, "bad_request", "The request has invalid parameters", f"{name} must be >= {minimum}"
        )
    return number


def _bool_param(params: Mapping[str, Any], name: str) -> bool | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise _ApiError(400, "bad_request", "The request has invalid parameters", f"{name} must be true or false")


def _db_types(value: Any, *, allow_all: bool) -> list[str]:
    allowed = (*DB_TYPES, "all") if allow_all else DB_TYPES
    names = [part.strip().lower() for part in str(value).split(",") if part.strip()]
    bad = [name for name in names if name not in allowed]
    if not names or bad:
        raise _ApiError(
            400,
            "bad_request",
            "The request has invalid parameters",
            f"db_type {str(value)!r} is invalid: valid options are {', '.join(allowed)}",
        )
    return names


class Cloud66Emulator:
    """A live Cloud 66 API (``/api/3``) and S3 signed-URL file server on 127.0.0.1.

    State (stacks, backups, tokens, injected faults) lives in memory behind one lock. File content is
    generated on the fly from a seed (see :mod:`.content`), so multi-GiB backups cost no memory.
    """

    def __init__(
        self,
        token: str = "test-token",  # noqa: S107 - a fake credential for a local fake server
        *,
        hourly_budget: int = 3000,
        budget_window: float = 3600.0,
        url_ttl: float = 300.0,
        split_threshold: int = 512 * 2**20,
        split_size: int = 256 * 2**20,
        backup_delay: float = 0.5,
        backup_outcome: str = "ok",
        bandwidth_per_connection: float | None = None,
        new_backup_size: int = 1024,
        record_group: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if split_size <= 0 or split_threshold < 0:
            raise ValueError("split_size must be positive and split_threshold non-negative")
        if backup_outcome not in ("ok", "failed"):
            raise ValueError("backup_outcome must be 'ok' or 'failed'")
        self.token = token
        self.hourly_budget = hourly_budget
        self.budget_window = budget_window
        self.url_ttl = url_ttl
        self.split_threshold = split_threshold
        self.split_size = split_size
        self.backup_delay = backup_delay
        self.backup_outcome = backup_outcome
        self.bandwidth_per_connection = bandwidth_per_connection
        self.new_backup_size = new_backup_size
        # The documented records carry no "group" field (the API filters on the parameter itself);
        # True adds one, as an API version that did would.
        self.record_group = record_group
        self.host = host
        self._requested_port = port
        self._lock = threading.RLock()
        self._tokens: dict[str, tuple[str, ...]] = {token: _PROTECTED}
        self._windows: dict[str, _Window] = {}
        self._stacks: dict[str, _Stack] = {}
        self._backups: dict[str, dict[int, _Backup]] = {}
        self._objects: dict[str, tuple[str, int]] = {}  # storage_path -> (stack uid, backup id)
        self._pending: list[_Pending] = []
        self._faults: list[_Fault] = []
        self._log: list[RecordedRequest] = []
        self._next_id = 1
        self._secret = os.urandom(20)
        self._old_secrets: list[tuple[bytes, str]] = []  # (key, the S3 error its URLs now get)
        self._growths: list[_Growth] = []
        self._digests: dict[tuple[int, int], str] = {}
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Cloud66Emulator:
        """Bind an ephemeral port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._stopping.clear()
        server = _Server((self.host, self._requested_port), _Handler, self)
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="cloud66-emulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open keep-alive connections and close the listening socket."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Cloud66Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (kept after :meth:`stop`, so URLs built from it simply stop answering)."""
        if self._port is None:
            raise RuntimeError("emulator not started")
        return self._port

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``: where signed file URLs point."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + API_PREFIX

    # -- setup -------------------------------------------------------------------------------------

    def add_token(self, token: str, scopes: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens[token] = tuple(scopes)

    def add_stack(
        self, uid: str, name: str | None = None, databases: list[tuple[str, str]] | None = None
    ) -> None:
        """Register a stack; ``databases`` are the ``(db_type, database_name)`` pairs it backs up."""
        with self._lock:
            if uid in self._stacks:
                raise ValueError(f"stack {uid!r} already exists")
            dbs = list(databases) if databases is not None else [("mysql", "app_db")]
            self._stacks[uid] = _Stack(uid, name or f"Stack {uid}", dbs, _utc_seconds(None))
            self._backups[uid] = {}

    def add_backup(
        self,
        stack_uid: str,
        *,
        db_type: str = "mysql",
        database_name: str = "app_db",
        size: int = 1024,
        seed: int | None = None,
        backup_date: datetime | None = None,
        status: int = 0,
        result: str = "",
        group: int = 1,
        gzip: bool = False,
        extra_fields: dict[str, Any] | None = None,
        has_files: bool = True,
        skip_tables: str = "",
        updated_at: datetime | None = None,
        backup_size: int | None = None,
    ) -> int:
        """Add a finished backup and return its id; the default seed is the id, so backups differ.

        :param updated_at: the record's ``updated_at_iso`` (default: its backup date).
        :param backup_size: what the record's ``backup_size`` says (default: the files' size).
        """
        if size < 0:
            raise ValueError("size must be non-negative")
        with self._lock:
            self._materialize()
            self._stack(stack_uid)
            backup = self._new_backup(
                stack_uid,
                db_type=db_type,
                database_name=database_name,
                size=size,
                seed=seed,
                backup_date=_utc_seconds(backup_date),
                status=status,
                result=result,
                group=group,
                gzip=gzip,
                has_files=has_files,
                skip_tables=skip_tables,
                extra_fields=dict(extra_fields or {}),
                updated=_utc_seconds(updated_at) if updated_at is not None else None,
                reported_size=backup_size,
            )
            return backup.id

    def grow_backup(self, stack_uid: str, backup_id: int, by: int, *, after_downloads: int = 0) -> None:
        """Write ``by`` more bytes to a backup, as a run that is still uploading would: now, or once
        ``after_downloads`` more file downloads of it have been answered. The bytes already there stay
        the same; a split backup gets a longer last part or a new one, and ``updated_at`` moves on.
        """
        if by <= 0 or after_downloads < 0:
            raise ValueError("by must be positive and after_downloads non-negative")
        with self._lock:
            self._backup(stack_uid, backup_id)
            if after_downloads == 0:
                self._grow(stack_uid, backup_id, by)
            else:
                self._growths.append(_Growth(stack_uid, backup_id, by, after_downloads))

    # -- inspection --------------------------------------------------------------------------------

    def backups(self, stack_uid: str) -> list[dict[str, Any]]:
        """Every backup record of the stack as the API returns them (newest first, unpaginated)."""
        with self._lock:
            self._materialize()
            self._stack(stack_uid)
            return [self._record(b) for b in self._sorted_backups(stack_uid)]

    def group_of(self, stack_uid: str, backup_id: int) -> int:
        """The backup group a backup belongs to (the documented records do not say)."""
        with self._lock:
            return self._backup(stack_uid, backup_id).group

    def file_ids(self, stack_uid: str, backup_id: int) -> list[str]:
        """File ids in archive order (the API lists them scrambled)."""
        with self._lock:
            return [f.id for f in self._files(self._backup(stack_uid, backup_id))]

    def file_names(self, stack_uid: str, backup_id: int) -> list[str]:
        with self._lock:
            return [f.name for f in self._files(self._backup(stack_uid, backup_id))]

    def file_size(self, stack_uid: str, backup_id: int, file_id: str) -> int:
        with self._lock:
            return self._file(self._backup(stack_uid, backup_id), file_id).length

    def file_bytes(self, stack_uid: str, backup_id: int, file_id: str) -> bytes:
        """One file's whole content; refuses files over 256 MiB (use :meth:`iter_archive`)."""
        with self._lock:
            backup = self._backup(stack_uid, backup_id)
            part = self._file(backup, file_id)
        if part.length > 256 * 2**20:
            raise ValueError("file too large to materialise; stream it with iter_archive()")
        return content.content_range(backup.seed, part.offset, part.length)

    def archive_size(self, stack_uid: str, backup_id: int) -> int:
        with self._lock:
            backup = self._backup(stack_uid, backup_id)
            return backup.size if backup.has_files else 0

    def archive_sha256(self, stack_uid: str, backup_id: int) -> str:
        """Hex SHA-256 of all parts concatenated in suffix order, computed by streaming (cached)."""
        with self._lock:
            backup = self._backup(stack_uid, backup_id)
        size = backup.size if backup.has_files else 0
        key = (backup.seed, size)
        if key not in self._digests:
            self._digests[key] = content.sha256_hex(backup.seed, size)
        return self._digests[key]

    def iter_archive(self, stack_uid: str, backup_id: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        """The whole archive in ``chunk``-sized pieces (the last one shorter)."""
        with self._lock:
            backup = self._backup(stack_uid, backup_id)
        size = backup.size if backup.has_files else 0
        pending = bytearray()
        for piece in content.iter_content(backup.seed, 0, size):
            pending += piece
            while len(pending) >= chunk:
                yield bytes(pending[:chunk])
                del pending[:chunk]
        if pending:
            yield bytes(pending)

    def signed_url(self, stack_uid: str, backup_id: int, file_id: str, *, api_quirk: bool = False) -> str:
        """A fresh signed URL for a file; with ``api_quirk`` ``%`` is double-encoded as the API does."""
        with self._lock:
            url = self.sign_url(
                self._backup(stack_uid, backup_id), self._file_by_id(stack_uid, backup_id, file_id)
            )
        return url.replace("%", "%25") if api_quirk else url

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order of their answers (a copy)."""
        with self._lock:
            return list(self._log)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    # -- fault injection ---------------------------------------------------------------------------

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

    def set_remaining(self, n: int) -> None:
        """Set the default token's remaining budget in the current window (0: next call is throttled).

        The hooks of this process forget what they learned of the budget, as if their clocks had
        moved past its reset too: a test's "the hour has passed" reaches both sides.
        """
        from airflow_provider_c66.api import RateBudget

        RateBudget.forget_shared()
        with self._lock:
            window = self._window(self.token, time.time())
            window.used = self.hourly_budget - n

    def budget_resets_at(self, token: str | None = None) -> float:
        """Epoch seconds at which the token's current budget window ends (what a throttled answer's
        ``X-RateLimit-Reset`` says)."""
        with self._lock:
            window = self._window(token or self.token, time.time())
            return window.start + self.budget_window

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

    def expire_urls(self, error: str = "AccessDenied") -> None:
        """Make every signed URL issued so far expired; later ones stay valid.

        :param error: how S3 refuses them: ``AccessDenied`` (403 "Request has expired"), or, for a URL
            signed with temporary credentials whose session ended, ``ExpiredToken`` or
            ``TokenRefreshRequired`` (400).
        """
        if error not in _EXPIRY_ERRORS:
            raise ValueError(f"error must be one of {sorted(_EXPIRY_ERRORS)}")
        with self._lock:
            # Rotate the signing key; URLs signed with an old key answer with that error.
            self._old_secrets.append((self._secret, error))
            self._secret = os.urandom(20)

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

    # -- state helpers (call with the lock held) ---------------------------------------------------

    def _stack(self, uid: str) -> _Stack:
        stack = self._stacks.get(uid)
        if stack is None:
            raise _NotFound(f"Stack '{uid}' not found")
        return stack

    def _backup(self, stack_uid: str, backup_id: int) -> _Backup:
        self._materialize()
        self._stack(stack_uid)
        backup = self._backups[stack_uid].get(backup_id)
        if backup is None:
            raise _NotFound(f"Backup '{backup_id}' not found in stack '{stack_uid}'")
        return backup

    def _files(self, backup: _Backup) -> list[_File]:
        if not backup.has_files:
            return []
        base = backup.base_name
        if backup.size <= self.split_threshold:
            return [_File("tar", f"{base}.tar", 0, backup.size)]
        count = math.ceil(backup.size / self.split_size)
        parts = []
        for index in range(count):
            offset = index * self.split_size
            sfx = _suffix(index)
            parts.append(
                _File(f"tar-{sfx}", f"{base}.tar-{sfx}", offset, min(self.split_size, backup.size - offset))
            )
        return parts

    def _file(self, backup: _Backup, file_id: str) -> _File:
        for part in self._files(backup):
            if part.id == file_id:
                return part
        raise _NotFound(f"File '{file_id}' not found in backup '{backup.id}'")

    def _file_by_id(self, stack_uid: str, backup_id: int, file_id: str) -> _File:
        return self._file(self._backup(stack_uid, backup_id), file_id)

    def _grow(self, stack_uid: str, backup_id: int, by: int) -> None:
        backup = self._backups[stack_uid][backup_id]
        backup.size += by
        backup.has_files = True
        backup.updated = _utc_seconds(None)

    def _downloaded(self, backup: _Backup) -> None:
        """Count one answered download of ``backup`` towards its pending growths."""
        for growth in list(self._growths):
            if (growth.stack_uid, growth.backup_id) == (backup.stack_uid, backup.id):
                growth.after -= 1
                if growth.after <= 0:
                    self._growths.remove(growth)
                    self._grow(backup.stack_uid, backup.id, growth.by)

    def _sorted_backups(self, stack_uid: str) -> list[_Backup]:
        return sorted(self._backups[stack_uid].values(), key=lambda b: (b.backup_date, b.id), reverse=True)

    def _new_backup(self, stack_uid: str, *, seed: int | None, **fields: Any) -> _Backup:
        backup_id = self._next_id
        self._next_id += 1
        backup = _Backup(
            id=backup_id, stack_uid=stack_uid, seed=backup_id if seed is None else seed, **fields
        )
        self._backups[stack_uid][backup_id] = backup
        self._objects[backup.storage_path] = (stack_uid, backup_id)
        return backup

    def _materialize(self) -> None:
        """Turn queued backup tasks whose delay has passed into backup records."""
        now = time.time()
        due = sorted((p for p in self._pending if p.due <= now), key=lambda p: p.due)
        if not due:
            return
        self._pending = [p for p in self._pending if p.due > now]
        for task in due:
            backups = self._backups[task.stack_uid].values()
            # A real run takes minutes, so its date is always past every earlier backup's second.
            date = _utc_seconds(datetime.fromtimestamp(task.due, UTC))
            latest = max((b.backup_date for b in backups), default=None)
            if latest is not None and date <= latest:
                date = latest + timedelta(seconds=1)
            group = task.group
            if group is None:
                same = [
                    b for b in backups if (b.db_type, b.database_name) == (task.db_type, task.database_name)
                ]
                if same:
                    group = max(same, key=lambda b: (b.backup_date, b.id)).group
                else:
                    group = max((b.group for b in backups), default=0) + 1
            failed = task.outcome == "failed"
            tool = _DUMP_TOOLS.get(task.db_type, "backup")
            self._new_backup(
                task.stack_uid,
                db_type=task.db_type,
                database_name=task.database_name,
                size=0 if failed else task.size,
                seed=None,
                backup_date=date,
                status=1 if failed else 0,
                result=f"Backup failed: {tool} exited with status 2 (emulated failure)" if failed else "",
                group=group,
                gzip=task.gzip,
                has_files=not failed,
                skip_tables=task.skip_tables,
                extra_fields={},
            )

    def _record(self, backup: _Backup) -> dict[str, Any]:
        date = _iso(backup.backup_date)
        record: dict[str, Any] = {
            "id": backup.id,
            "server_uid": hashlib.md5(
                f"{backup.stack_uid}:{backup.db_type}".encode(), usedforsecurity=False
            ).hexdigest(),
            "db_type": backup.db_type,
            "database_name": backup.database_name,
            "file_base": "",
            "backup_date_iso": date,
            "backup_status": backup.status,
            "backup_result": backup.result,
            "restore_status": 0,
            "restore_result": None,
            "created_at_iso": date,
            "updated_at_iso": _iso(backup.updated) if backup.updated else date,
            "verify_status": 0,
            "verify_result": None,
            "storage_path": backup.storage_path,
            "skip_tables": backup.skip_tables,
            "backup_size": backup.size if backup.reported_size is None else backup.reported_size,
            "logical_backup": backup.db_type in ("mysql", "postgresql"),
        }
        if self.record_group:
            record["group"] = backup.group
        record.update(backup.extra_fields)
        return record

    def _stack_record(self, stack: _Stack) -> dict[str, Any]:
        return {
            "uid": stack.uid,
            "name": stack.name,
            "environment": "production",
            "status": 1,
            "health": 3,
            "account_id": 1,
            "created_at_iso": _iso(stack.created),
            "updated_at_iso": _iso(stack.created),
        }

    def _window(self, token: str, now: float) -> _Window:
        window = self._windows.setdefault(token, _Window())
        if now >= window.start + self.budget_window:
            window.start, window.used = now, 0
        return window

    def _string_to_sign(self, path: str, expires: int) -> bytes:
        return f"GET\n\n\n{expires}\n{path}".encode()

    def _signature(self, secret: bytes, path: str, expires: int) -> str:
        mac = hmac.new(secret, self._string_to_sign(path, expires), hashlib.sha1)
        return base64.b64encode(mac.digest()).decode()

    def sign_url(self, backup: _Backup, part: _File) -> str:
        """Sign a URL for one file of a backup: every signed URL the emulator hands out (API answers
        and :meth:`signed_url`) is made here, so a subclass or a test wrapping it sees each one."""
        path = FILE_PREFIX + quote(f"{backup.storage_path}/{part.name}")
        expires = int(time.time() + self.url_ttl)
        signature = quote(self._signature(self._secret, path, expires), safe="")
        return f"{self.origin}{path}?AWSAccessKeyId={ACCESS_KEY_ID}&Expires={expires}&Signature={signature}"

    def _paginate(self, items: list[Any], params: Mapping[str, str]) -> dict[str, Any]:
        page = _int_param(params, "page", minimum=1) or 1
        pages = max(1, math.ceil(len(items) / PER_PAGE))
        return {
            "response": items[(page - 1) * PER_PAGE : page * PER_PAGE],
            "count": len(items),
            "pagination": {
                "previous": page - 1 if page > 1 else None,
                "next": page + 1 if page < pages else None,
                "current": page,
                "per_page": PER_PAGE,
                "count": len(items),
                "pages": pages,
            },
        }

    # -- API ---------------------------------------------------------------------------------------

    def _api(
        self,
        method: str,
        path: str,
        params: dict[str, Any],
        headers: Mapping[str, str],
        *,
        bad_body: bool = False,
    ) -> _Reply:
        if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
            return self._error_reply(_ApiError(404, "not_found", f"No route matches {path!r}"), ())
        auth = headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        token = token.strip()
        with self._lock:
            scopes = self._tokens.get(token) if scheme.lower() == "bearer" and token else None
        if scopes is None:
            error = _ApiError(401, "unauthorized", "The access token is missing, invalid or revoked")
            return self._error_reply(
                error, [("WWW-Authenticate", 'Bearer realm="Cloud 66", error="invalid_token"')]
            )
        with self._lock:
            now = time.time()
            window = self._window(token, now)
            if window.used >= self.hourly_budget:
                rate = [
                    ("X-RateLimit-Limit", str(self.hourly_budget)),
                    ("X-RateLimit-Remaining", "0"),
                    ("X-RateLimit-Reset", str(math.ceil(window.start + self.budget_window))),
                ]
                error = _ApiError(503, "throttled", "Too many requests: the hourly API limit is exhausted")
                throttled = self._error_reply(error, rate)
                throttled.budget_window = window.start
                return throttled
            window.used += 1
            counted_in = window.start
            rate = [
                ("X-RateLimit-Limit", str(self.hourly_budget)),
                ("X-RateLimit-Remaining", str(max(0, self.hourly_budget - window.used))),
            ]
        if bad_body:
            reply = self._error_reply(
                _ApiError(400, "bad_request", "The request body is not valid JSON"), rate
            )
            reply.budget_window = counted_in
            return reply
        route = path[len(API_PREFIX) :]
        if route.endswith(".json"):
            route = route[: -len(".json")]
        segments = [seg for seg in route.split("/") if seg]
        try:
            with self._lock:
                self._materialize()
                payload = self.route_api(method, segments, params, scopes)
        except _ApiError as error:
            reply = self._error_reply(error, rate)
        else:
            reply = _Reply.of(200, _json_body(payload), "application/json; charset=utf-8", rate)
        reply.budget_window = counted_in
        return reply

    def _error_reply(self, error: _ApiError, headers: Sequence[tuple[str, str]]) -> _Reply:
        body = {"error": error.error, "error_description": error.description, "details": error.details}
        return _Reply.of(error.status, _json_body(body), "application/json; charset=utf-8", headers)

    def route_api(
        self, method: str, segments: list[str], params: dict[str, Any], scopes: tuple[str, ...]
    ) -> Any:
        """Answer an authenticated, counted API request: the JSON payload of a 200, or raise the error.

        ``segments`` is the path after ``/api/3`` without ``.json``, split on ``/``. Called with the
        lock held; a subclass may override it to change answers (``super().route_api(...)`` first).
        """
        read = method in ("GET", "HEAD")
        if read and "public" not in scopes:
            raise _ApiError(403, "insufficient_scope", "This action requires the 'public' scope")
        match segments:
            case ["ping", "auth"] if read:
                return {"response": {"ok": True, "message": "pong"}}
            case ["stacks"] if read:
                return self._paginate([self._stack_record(s) for s in self._stacks.values()], params)
            case ["stacks", uid] if read:
                return {"response": self._stack_record(self._stack(uid))}
            case ["stacks", uid, "backups"] if read:
                return self._list_backups(uid, params)
            case ["stacks", uid, "backups"] if method == "POST":
                if "admin" not in scopes:
                    raise _ApiError(403, "insufficient_scope", "This action requires the 'admin' scope")
                return self._post_backups(uid, params)
            case ["stacks", uid, "backups", backup_id] if read:
                return {"response": self._record(self._backup(uid, self._backup_id(uid, backup_id)))}
            case ["stacks", uid, "backups", backup_id, "files"] if read:
                backup = self._backup(uid, self._backup_id(uid, backup_id))
                parts = self._files(backup)
                order = list(range(len(parts)))
                if len(parts) > 1:
                    # Scrambled (deterministically) so clients must sort parts by suffix themselves.
                    Random(backup.id).shuffle(order)
                    if order == sorted(order):
                        order.reverse()
                items = [{"id": parts[i].id, "name": parts[i].name} for i in order]
                return self._paginate(items, params)
            case ["stacks", uid, "backups", backup_id, "files", file_id] if read:
                backup = self._backup(uid, self._backup_id(uid, backup_id))
                url = self.sign_url(backup, self._file(backup, file_id))
                # The real API double-encodes every % of the signed URL.
                return {"response": {"ok": True, "public_url": url.replace("%", "%25")}}
        raise _NotFound(f"No route matches {method} {API_PREFIX}/{'/'.join(segments)}")

    def _backup_id(self, stack_uid: str, text: str) -> int:
        self._stack(stack_uid)
        if not text.isdigit():
            raise _NotFound(f"Backup '{text}' not found in stack '{stack_uid}'")
        return int(text)

    def _list_backups(self, uid: str, params: Mapping[str, Any]) -> Any:
        self._stack(uid)
        backups = self._sorted_backups(uid)
        if params.get("db_type"):
            types = _db_types(params["db_type"], allow_all=True)
            if "all" not in types:
                backups = [b for b in backups if b.db_type in types]
        group = _int_param(params, "group")
        if group is not None:
            backups = [b for b in backups if b.group == group]
        return self._paginate([self._record(b) for b in backups], params)

    def _post_backups(self, uid: str, params: Mapping[str, Any]) -> Any:
        stack = self._stack(uid)
        due = time.time() + self.backup_delay
        gzip = _bool_param(params, "gzip")
        size = self.new_backup_size
        if params.get("remote_url"):
            group = _int_param(params, "group")
            if group is None:
                raise _ApiError(400, "bad_request", "The request has invalid parameters", "group is required")
            if not params.get("db_type"):
                raise _ApiError(
                    400, "bad_request", "The request has invalid parameters", "db_type is required"
                )
            types = _db_types(params["db_type"], allow_all=False)
            if len(types) != 1:
                detail = "an import takes exactly one db_type"
                raise _ApiError(400, "bad_request", "The request has invalid parameters", detail)
            names = [name for db_type, name in stack.databases if db_type == types[0]]
            stem = urlsplit(str(params["remote_url"])).path.rsplit("/", 1)[-1].split(".", 1)[0]
            name = names[0] if names else (stem or "imported_db")
            self._pending.append(
                _Pending(due, uid, types[0], name, group, self.backup_outcome, size, bool(gzip), "")
            )
            return {"response": {"ok": True, "message": "Your external backup queued for upload"}}
        types = _db_types(params.get("db_type") or "all", allow_all=True)
        frequency = params.get("frequency")
        if frequency is not None and len(str(frequency).split()) != 5:
            detail = "frequency must be a cron schedule with 5 fields"
            raise _ApiError(400, "bad_request", "The request has invalid parameters", detail)
        _int_param(params, "keep_count", minimum=1)
        _bool_param(params, "run_on_replica_server")
        skip = str(params.get("excluded_tables") or "")
        for db_type, name in stack.databases:
            if "all" in types or db_type in types:
                self._pending.append(
                    _Pending(
                        due, uid, db_type, name, None, self.backup_outcome, size, gzip is not False, skip
                    )
                )
        return {"response": {"ok": True, "message": "queued for creation"}}

    # -- signed file URLs --------------------------------------------------------------------------

    def file_reply(
        self, method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], ignore_range: bool
    ) -> _Reply:
        """Answer a request for a signed file URL as S3 would (``ignore_range``: send the whole file).

        Public so that a test may wrap it (on the class or on one emulator) to act on an answer, for
        example expire the URLs once a download has been accepted.
        """
        xml = "application/xml"
        if "Authorization" in headers:
            message = (
                "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query "
                "string parameter or the Authorization header should be specified"
            )
            body = _s3_error("InvalidArgument", message, ArgumentName="Authorization")
            return _Reply.of(400, body, xml)
        if not all(query.get(k) for k in ("AWSAccessKeyId", "Expires", "Signature")):
            message = (
                "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters"
            )
            return _Reply.of(403, _s3_error("AccessDenied", message), xml)
        if query["AWSAccessKeyId"] != ACCESS_KEY_ID:
            message = "The AWS Access Key Id you provided does not exist in our records."
            return _Reply.of(403, _s3_error("InvalidAccessKeyId", message), xml)
        now = time.time()
        try:
            expires = int(query["Expires"])
        except ValueError:
            return _Reply.of(
                403, _s3_error("AccessDenied", "Invalid date (should be seconds since epoch)"), xml
            )
        with self._lock:
            current, old = self._secret, list(self._old_secrets)
        provided = query["Signature"].encode()

        def signed_with(secret: bytes) -> bool:
            return hmac.compare_digest(self._signature(secret, path, expires).encode(), provided)

        valid = signed_with(current)
        expired = "AccessDenied" if now > expires else None
        if not valid:
            expired = next((error for secret, error in old if signed_with(secret)), expired)
        if expired is not None:
            status, message = _EXPIRY_ERRORS[expired]
            stamp = _iso(datetime.fromtimestamp(expires, UTC))
            body = _s3_error(expired, message, Expires=stamp, ServerTime=_iso(_utc_seconds(None)))
            return _Reply.of(status, body, xml)
        # The method is part of the string to sign: a GET-signed URL never matches HEAD, PUT, ...
        if method != "GET" or not valid:
            message = (
                "The request signature we calculated does not match the signature you provided. "
                "Check your key and signing method."
            )
            return _Reply.of(403, _s3_error("SignatureDoesNotMatch", message), xml)
        directory, _, name = path[len(FILE_PREFIX) :].rpartition("/")
        with self._lock:
            located = self._objects.get(directory)
            backup = self._backups[located[0]][located[1]] if located else None
            parts = [p for p in self._files(backup) if p.name == name] if backup else []
            if backup is not None and parts:
                self._downloaded(backup)  # a growth lands after this answer's length is fixed
        if backup is None or not parts:
            return _Reply.of(404, _s3_error("NoSuchKey", "The specified key does not exist."), xml)
        part = parts[0]
        total = part.length
        etag = hashlib.md5(f"{backup.seed}:{part.offset}:{total}".encode(), usedforsecurity=False).hexdigest()
        common = [
            ("Content-Type", "application/x-tar"),
            ("Accept-Ranges", "bytes"),
            ("ETag", f'"{etag}"'),
            ("Last-Modified", formatdate(backup.backup_date.timestamp(), usegmt=True)),
            ("x-amz-request-id", uuid.uuid4().hex[:16].upper()),
        ]
        start, end = 0, total - 1
        status = 200
        requested = headers.get("Range")
        if requested and not ignore_range:
            parsed = _parse_range(requested.strip(), total)
            if parsed == "unsatisfiable":
                body = _s3_error(
                    "InvalidRange",
                    "The requested range is not satisfiable",
                    RangeRequested=requested,
                    ActualObjectSize=str(total),
                )
                return _Reply.of(416, body, xml, [("Content-Range", f"bytes */{total}")])
            if parsed is not None:
                start, end = parsed
                status = 206
                common.append(("Content-Range", f"bytes {start}-{end}/{total}"))
        length = max(0, end - start + 1)
        seed, after = backup.seed, part.offset + start + length
        left = total - start - length

        def tail(extra: int) -> Iterator[bytes | memoryview]:
            # Real content while the file lasts, then zeros.
            yield from content.iter_content(seed, after, min(extra, left))
            if extra > left:
                yield bytes(extra - left)

        chunks = content.iter_content(seed, part.offset + start, length)
        return _Reply(status, common, length, chunks, paced=True, tail=tail)


def _parse_range(header: str, total: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """Parse a single ``bytes=`` range as S3 does; None means "ignore it and send the whole file"."""
    match = _RANGE_RE.fullmatch(header)
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        suffix = int(last)
        if suffix == 0 or total == 0:
            return "unsatisfiable"
        return max(0, total - suffix), total - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= total:
        return "unsatisfiable"
    return start, min(int(last) if last else total - 1, total - 1)


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
            entry = RecordedRequest(
                method, path, query, headers, parsed, status, kind, body, time.time(), window
            )
            with emu._lock:
                emu._log.append(entry)

        slow = emu._take_fault(["slow"], path, method, kind)
        if slow is not None and emu._stopping.wait(slow.seconds):
            self.close_connection = True
            return
        try:
            reply = self._injected_reply(path, method, kind)
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
                    self._send(emu._error_reply(error, ()), None, head_only=method == "HEAD")

    def _injected_reply(self, path: str, method: str, kind: RequestKind) -> _Reply | None:
        fault = self._emu._take_fault(["fail", "rate_limit", "malformed"], path, method, kind)
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
