"""The signed file URLs: S3 query-string signatures (v2), their expiry, and the answer to a download.

Every signed URL is made by :meth:`_Files.sign_url` and every request for one is answered by
:meth:`_Files.file_reply`; both are public so that a test may wrap them. :meth:`_Files.expire_urls`
rotates the signing key, so the URLs signed before it answer as S3 answers expired ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Literal
from urllib.parse import quote

from airflow_provider_c66.testing import content
from airflow_provider_c66.testing.emulator.replies import _Reply, _s3_error
from airflow_provider_c66.testing.emulator.state import (
    FILE_PREFIX,
    _Backup,
    _File,
    _iso,
    _State,
    _utc_seconds,
)

ACCESS_KEY_ID = "AKIAEMULATOR"

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")

# How S3 answers a signed URL whose signature is past its life: plain expiry, or a dead session token.
_EXPIRY_ERRORS = {
    "AccessDenied": (403, "Request has expired"),
    "ExpiredToken": (400, "The provided token has expired."),
    "TokenRefreshRequired": (400, "The provided token must be refreshed."),
}


def _signature(secret: bytes, path: str, expires: int) -> str:
    string_to_sign = f"GET\n\n\n{expires}\n{path}".encode()
    return base64.b64encode(hmac.new(secret, string_to_sign, hashlib.sha1).digest()).decode()


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


class _Files(_State):
    """Signed file URLs: :meth:`signed_url`, :meth:`sign_url`, :meth:`expire_urls`, :meth:`file_reply`."""

    url_ttl: float
    _secret: bytes
    _old_secrets: list[tuple[bytes, str]]  # (key, the S3 error its URLs now get)

    def signed_url(self, stack_uid: str, backup_id: int, file_id: str, *, api_quirk: bool = False) -> str:
        """A fresh signed URL for a file; with ``api_quirk`` ``%`` is double-encoded as the API does."""
        with self._lock:
            url = self.sign_url(
                self._backup(stack_uid, backup_id), self._file_by_id(stack_uid, backup_id, file_id)
            )
        return url.replace("%", "%25") if api_quirk else url

    def sign_url(self, backup: _Backup, part: _File) -> str:
        """Sign a URL for one file of a backup: every signed URL the emulator hands out (API answers
        and :meth:`signed_url`) is made here, so a subclass or a test wrapping it sees each one."""
        path = FILE_PREFIX + quote(f"{backup.storage_path}/{part.name}")
        expires = int(time.time() + self.url_ttl)
        signature = quote(_signature(self._secret, path, expires), safe="")
        return f"{self.origin}{path}?AWSAccessKeyId={ACCESS_KEY_ID}&Expires={expires}&Signature={signature}"

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
            return hmac.compare_digest(_signature(secret, path, expires).encode(), provided)

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
