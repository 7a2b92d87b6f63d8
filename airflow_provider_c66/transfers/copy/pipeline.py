"""The copy itself: downloads and uploads overlapped, memory bounded, all or nothing."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

from airflow_provider_c66.transfers.copy.checksums import (
    ArchiveDigest,
    _composite_crc32,
    _multipart_etag,
    stored_checksum,
)
from airflow_provider_c66.transfers.copy.coordination import _Coordinator
from airflow_provider_c66.transfers.copy.download import _Downloader
from airflow_provider_c66.transfers.copy.model import (
    _POLL,
    _T,
    EXTRA_ARGS,
    CopyCancelled,
    CopyError,
    CopyResult,
    CopySettings,
    Source,
    SourceChanged,
    UploadIdStore,
    logger,
)
from airflow_provider_c66.transfers.copy.observers import CopyObserver, ProgressLog, _mib, _Observers
from airflow_provider_c66.transfers.copy.planning import _Part, _plan_parts, choose_part_size
from airflow_provider_c66.transfers.copy.upload import _holds, _Key, _resumable_failure, s3_error_code


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
        keep_upload_on_failure: bool | Callable[[BaseException], bool] = False,
        upload_ids: UploadIdStore | None = None,
    ) -> None:
        self.client, self.bucket, self.key, self.extra = client, bucket, key, extra_args
        self.resume, self.keep_upload_on_failure = resume, keep_upload_on_failure
        self.upload_ids = upload_ids
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

        ``before_complete`` runs once every byte is read and before the object can appear: the
        sources are probed again first, so a file still being written never completes an object. A
        multipart copy looks while its last parts upload (the bytes it sends are the ones it has read).
        """

        def settle() -> None:
            self.downloader.check_sizes_unchanged()
            before_complete()

        if len(parts) == 1:
            etag, digest, version = self._put(parts[0], settle)
        else:
            etag, digest, version = self._multipart(parts, settle)
        head = self.dest.verify(sum(part.length for part in parts), version)
        # Some stores (radosgw 16) answer CompleteMultipartUpload with an empty ETag; HEAD has it.
        etag = etag.strip('"') or str(head.get("ETag", "")).strip('"')
        return etag, digest, stored_checksum(head)

    def _put(self, part: _Part, settle: Callable[[], None]) -> tuple[str, ArchiveDigest, str | None]:
        data, integrity = self._read(part)
        try:
            md5 = base64.b64decode(integrity["ContentMD5"]).hex() if "ContentMD5" in integrity else None
            settle()
            self.coordinator.check_main()  # a cancel that arrives now still leaves nothing behind
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
        if found is None:
            upload_id, full_object = self._create()
            found = upload_id, full_object, {}
            if self.upload_ids is not None:
                self._ledger("record", self.upload_ids.put, self.key, upload_id)
        upload_id, full_object, earlier = found
        pools = _Pipeline(self.settings.max_concurrency)
        try:
            completed, digest = self._upload_parts(pools, upload_id, parts, earlier, settle)
            self.coordinator.check_main()  # a cancel that arrives now still leaves nothing behind
            answer = self._complete(upload_id, completed, digest, full_object)
        except BaseException as exc:
            keep = self.keep_upload_on_failure
            if (keep(exc) if callable(keep) else keep) and _resumable_failure(exc):
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
            self._forget()
            raise
        pools.shutdown()
        self._forget()
        return answer.get("ETag", ""), digest, answer.get("VersionId")

    def _forget(self) -> None:
        if self.upload_ids is not None:
            self._ledger("forget", self.upload_ids.drop, self.key)

    def _resumable(self, parts: Sequence[_Part]) -> tuple[str, bool, dict[int, Any]] | None:
        """An open upload an earlier try left on this key that this copy can continue, with its parts.

        With an :class:`UploadIdStore`, only the upload recorded there (this task's own); without,
        the newest open upload on the key made the same way. Only an upload made the same way
        qualifies (checksum algorithm, storage class); its parts are used only where S3 holds a part
        of the planned size whose checksum matches the source's bytes (checked in
        :meth:`_read_part`), so a different part plan or stale bytes are uploaded again.
        """
        if self.upload_ids is not None:
            recorded = self._ledger("get", self.upload_ids.get, self.key)
            return self._continue(parts, recorded, None) if recorded else None
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.key
            )
            uploads = [u for page in pages for u in page.get("Uploads", []) if u.get("Key") == self.key]
        except Exception as exc:
            self.log.info("%s: could not list open uploads to resume (%s); starting afresh", self.target, exc)
            return None
        for upload in sorted(uploads, key=lambda u: str(u.get("Initiated", "")), reverse=True):
            found = self._continue(parts, str(upload.get("UploadId", "")), upload)
            if found is not None:
                return found
        return None

    def _continue(
        self, parts: Sequence[_Part], upload_id: str, listed: Mapping[str, Any] | None
    ) -> tuple[str, bool, dict[int, Any]] | None:
        """The upload and its parts when it can be continued (``listed``: its ListMultipartUploads
        entry, when it was found that way); None when it is gone or made another way."""
        try:
            paginator = self.client.get_paginator("list_parts")
            listing: list[dict[str, Any]] = [
                dict(page)
                for page in paginator.paginate(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
            ]
        except Exception as exc:
            # Gone (completed, aborted, expired: NoSuchUpload, or another code on some stores) or not
            # listable: a new upload is made, and recorded in place of this one.
            self.log.info(
                "%s: could not list the parts of the open upload an earlier try left (%s); starting afresh",
                self.target,
                s3_error_code(exc) or exc,
            )
            return None
        about: Mapping[str, Any] = listed or (listing[0] if listing else {})
        reported_class = about.get("StorageClass") or "STANDARD"  # some stores always say STANDARD
        # Some stores (nanio, radosgw) report no algorithm for any upload; AWS does. An upload whose
        # algorithm differs refuses this copy's parts (400), which aborts it rather than keeping it.
        reported = about.get("ChecksumAlgorithm")
        algorithm = "CRC32" if self.dest.flexible else None
        if (reported is not None and reported != algorithm) or reported_class not in (
            "STANDARD",
            self.extra.get("StorageClass", "STANDARD"),
        ):
            self.log.info(
                "%s: an open upload on the key was made another way; not continuing it", self.target
            )
            return None
        earlier = {int(p["PartNumber"]): p for page in listing for p in page.get("Parts", [])}
        kind = next((page.get("ChecksumType") for page in listing if page.get("ChecksumType")), None)
        full_object = (kind or about.get("ChecksumType")) == "FULL_OBJECT"
        usable = sum(1 for part in parts if earlier.get(part.number, {}).get("Size") == part.length)
        self.log.info(
            "%s: resuming the multipart upload an earlier try left open: %d of %d part(s) in S3 have "
            "the planned size and are checked against the source before use",
            self.target,
            usable,
            len(parts),
        )
        return upload_id, full_object, earlier

    def _ledger(self, action: str, call: Callable[..., _T], *args: str) -> _T | None:
        """One call to the UploadIdStore: what it raises is logged, never the copy's failure (without
        the record, a later try starts afresh)."""
        try:
            return call(*args)
        except Exception as exc:
            self.log.warning("%s: could not %s the upload's id in its store (%s)", self.target, action, exc)
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
        self,
        pools: _Pipeline,
        upload_id: str,
        parts: Sequence[_Part],
        earlier: Mapping[int, Any],
        settle: Callable[[], None],
    ) -> tuple[list[CompletedPartTypeDef], ArchiveDigest]:
        """Run the pipeline; collect the parts in order to hash the archive.

        Up to ``max_concurrency`` parts download while up to ``max_concurrency`` others upload, so on a
        capped link both directions stay busy. At most ``2 x max_concurrency`` parts are between the
        start of their download and their collection here: that, times the part size, bounds memory.
        ``settle`` runs once the last part is read, while the last uploads still run: the downloads
        finish first, and the sources' second look then costs no time of its own.
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
            for read in window:  # the download stage: its result is the upload's future, or the part
                self._wait(read)
            settle()
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
        try:
            data, integrity = self._read(part)
        except BaseException as exc:
            self.coordinator.fail(exc)
            raise
        try:
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

    def _read(self, part: _Part) -> tuple[bytearray, dict[str, str]]:
        """Take a buffer and fill it with the part's source bytes, checksummed; freed if that fails."""
        self.observers.part_started(part.number, part.length)
        data = self.buffers.take(part.length)
        try:
            self._fill(part, data)
            integrity = self.dest.integrity(data)
            self.observers.part_read(part.number)
        except BaseException:
            self._release(part.number, data)
            raise
        return data, integrity

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
    keep_upload_on_failure: bool | Callable[[BaseException], bool] = False,
    observers: Sequence[CopyObserver] = (),
    upload_ids: UploadIdStore | None = None,
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
    :param before_complete: called with the sources' sizes once every byte is read (the last parts
        may still be uploading), after the sources were probed again and found unchanged, and before
        the object can appear; what it raises aborts the copy (the caller's last look at the source,
        e.g. its file list).
    :param if_none_match: the key was free when the caller looked: write with ``If-None-Match: *`` so
        that a concurrent run's object is never overwritten (stores that answer 501 get a plain write).
    :param resume: continue a multipart upload an earlier try left open on the key: its parts whose
        size and checksum match the source's bytes are not uploaded again (the source is still read,
        so the SHA-256 stays exact).
    :param keep_upload_on_failure: another try follows: on a failure (not a cancel, not a changed
        source) leave the multipart upload open for it to resume instead of aborting it. A callable
        decides per failure (e.g. a spent API budget: the task runs again after the reset).
    :param observers: told of the copy's progress (:class:`CopyObserver`), after the progress log.
    :param upload_ids: where the multipart upload's id is recorded once created and dropped once it
        completes or is aborted; a resume then continues only the recorded upload (the task's own),
        never another open upload on the key. Without it, a resume takes the newest matching one.
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
            upload_ids,
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
