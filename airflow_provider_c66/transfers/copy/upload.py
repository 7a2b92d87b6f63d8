"""Writing to one S3 key: checksums, conditional writes, Object Lock, patience, clean-up."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from airflow_provider_c66.api import RetryState

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

from airflow_provider_c66.transfers.copy.checksums import _crc32, _md5_b64
from airflow_provider_c66.transfers.copy.coordination import _Stopped
from airflow_provider_c66.transfers.copy.model import (
    _T,
    EXTRA_ARGS,
    CopyCancelled,
    CopyError,
    CopySettings,
    ObjectExists,
    SourceChanged,
    logger,
)

# Answers to a conditional write (If-None-Match: *) that mean another write reached the key first.
_CONDITION_LOST = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})


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


def _content_md5_instead(request: Any, **_: Any) -> None:
    """botocore handler (before-sign): replace the flexible checksum headers of a body S3 requires a
    checksum on by Content-MD5, for stores that refuse ``x-amz-checksum-*``."""
    for name in list(request.headers.keys()):
        if name.lower().startswith("x-amz-checksum-") or name.lower() == "x-amz-sdk-checksum-algorithm":
            del request.headers[name]
    body = request.body if isinstance(request.body, (bytes, bytearray)) else b""
    request.headers["Content-MD5"] = _md5_b64(body)


def flexible_checksums(client: Any) -> bool:
    """Whether the client sends ``x-amz-checksum-*`` headers: botocore's default, unless the user set
    ``request_checksum_calculation="when_required"`` (client Config, the Amazon connection's
    ``config_kwargs`` extra, or ``AWS_REQUEST_CHECKSUM_CALCULATION``) for a store that refuses them."""
    mode = getattr(
        getattr(getattr(client, "meta", None), "config", None), "request_checksum_calculation", None
    )
    return mode != "when_required"


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
            head = {**head, **self._read_lock(version)}
        if not self._locked_as_asked(head):
            try:
                self._apply_lock(version)
                applied = self._locked_as_asked({**self._head(version), **self._read_lock(version)})
            except CopyError:
                self.discard(version)
                raise
            if not applied:
                self.discard(version)
                raise CopyError(
                    f"{self.target}: the store does not apply Object Lock (HeadObject shows no such retention or "
                    "legal hold even after PutObjectRetention/PutObjectLegalHold); the object was deleted, "
                    "as it would not be protected"
                )
        return head

    def _read_lock(self, version: str | None) -> dict[str, Any]:
        """The lock asked for, read with GetObjectRetention/GetObjectLegalHold where HeadObject shows
        none: AWS shows it in HeadObject only to callers allowed to read it, and so do these calls.

        :raises CopyError: the caller may not read it (the object is left as written: AWS applied the
            lock given with the write, and a locked version could not be deleted anyway).
        """
        which: dict[str, Any] = {"VersionId": version} if version and version != "null" else {}
        asked = [
            (
                "GetObjectRetention",
                self.client.get_object_retention,
                "ObjectLockMode",
                "s3:GetObjectRetention",
            ),
            (
                "GetObjectLegalHold",
                self.client.get_object_legal_hold,
                "ObjectLockLegalHoldStatus",
                "s3:GetObjectLegalHold",
            ),
        ]
        found: dict[str, Any] = {}
        for operation, call, field, permission in asked:
            if not self.extra.get(field):
                continue
            try:  # botocore's retries only: a store that fails these (moto answers 500) falls back to HEAD
                answer = cast("dict[str, Any]", call(Bucket=self.bucket, Key=self.key, **which))
            except Exception as exc:
                code = s3_error_code(exc) or type(exc).__name__
                if code == "AccessDenied":
                    raise CopyError(
                        f"{self.target}: cannot check the Object Lock asked for: S3 shows it only to callers "
                        f"allowed {permission}, which these credentials are not (see the README's archive-lock "
                        "policy); the object was written with the lock and is left as it is"
                    ) from exc
                self.log.info(
                    "%s: %s answered %s; judging the lock by HeadObject", self.target, operation, code
                )
                continue
            if operation == "GetObjectRetention":
                retention = answer.get("Retention") or {}
                found["ObjectLockMode"] = retention.get("Mode")
                found["ObjectLockRetainUntilDate"] = retention.get("RetainUntilDate")
            else:
                found["ObjectLockLegalHoldStatus"] = (answer.get("LegalHold") or {}).get("Status")
        return {k: v for k, v in found.items() if v is not None}

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
        """Some stores (and moto) drop lock parameters given to CreateMultipartUpload: set them afterwards.

        botocore adds ``x-amz-checksum-crc32`` to these calls in every checksum mode (S3 requires a
        checksum on them); a client told to send checksums only when required gets Content-MD5 instead.
        """
        which: dict[str, Any] = {"VersionId": version} if version and version != "null" else {}
        if not self.flexible:
            for operation in ("PutObjectRetention", "PutObjectLegalHold"):
                self.client.meta.events.register(
                    f"before-sign.s3.{operation}", _content_md5_instead, unique_id=f"c66-md5-{operation}"
                )
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
        retry: RetryState | None = None
        while True:
            try:
                return call(Bucket=self.bucket, Key=self.key, **kwargs)
            except Exception as exc:
                if self.patience is None or not _transient(exc):
                    raise CopyError(f"{self.target}: S3 {operation} failed: {exc}") from exc
                settings, sleep = self.patience
                retry = retry or RetryState(settings.retry_policy)
                if retry.gives_up():
                    raise CopyError(
                        f"{self.target}: S3 {operation} failed {retry.failures} times over "
                        f"{retry.spent:.0f} s: {exc}"
                    ) from exc
                delay = retry.delay()
                self.log.warning(
                    "%s: S3 %s failed (%s); retry %d in %.1f s",
                    self.target,
                    operation,
                    exc,
                    retry.failures,
                    delay,
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
