"""What a copy is given and returns: its sources, settings, result, errors and S3's limits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from airflow_provider_c66 import validation
from airflow_provider_c66.api import RetryPolicy

logger = logging.getLogger("airflow_provider_c66.transfers.copy")


MiB = 1 << 20
MIN_PART_SIZE = 5 * MiB  # S3's floor for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
MAX_OBJECT_SIZE = 5 * 1024 * 1024 * MiB  # 5 TiB
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


_T = TypeVar("_T")


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


class UploadIdStore(Protocol):
    """Where a copy records the UploadId of the multipart upload it works on, keyed by object key.

    Given to :func:`copy_to_s3`, a resume continues exactly the upload recorded there (Airflow 3.3's
    task state store keeps it across a task's tries) instead of looking for one among the key's open
    uploads, which may belong to a concurrent copy. A failing store is logged and never fails a copy.
    """

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, upload_id: str) -> None: ...

    def drop(self, key: str) -> None: ...


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

    @property
    def retry_policy(self) -> RetryPolicy:
        """One byte range's or S3 call's policy: ``retries + 1`` attempts within ``retry_budget`` s."""
        return RetryPolicy(
            max_attempts=self.retries + 1,
            backoff_base=self.backoff_base,
            backoff_max=self.backoff_max,
            total_timeout=self.retry_budget,
        )

    def __post_init__(self) -> None:
        """Refuse a setting the copy cannot run with, naming it (Cloud66InputError)."""
        validation.positive_int(self.part_size, "part_size")
        validation.positive_int(self.max_concurrency, "max_concurrency")
        validation.integer(self.retries, "retries", minimum=0)
        for name in ("retry_budget", "backoff_base", "backoff_max", "connect_timeout", "read_timeout"):
            validation.seconds(getattr(self, name), name, allow_zero=True)
        validation.seconds(self.progress_interval, "progress_interval")


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
