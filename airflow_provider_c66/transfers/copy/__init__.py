"""Copy a backup's files from short-lived signed GET URLs into one S3 object: bounded, parallel, verified.

This is the data path the package exists for. The archive (the sources concatenated in order) is cut
into parts; each part is read with ranged GETs into one exact-size buffer and sent as an ``UploadPart``.
Downloads and uploads overlap as a pipeline (``max_concurrency`` parts downloading while as many
upload), and at most ``2 x max_concurrency`` part buffers exist at once, so memory stays within
``2 x max_concurrency x part_size`` plus a constant for any archive size. A read that breaks resumes
at the byte it stopped at; an expired URL (403) is replaced through the source's ``url_provider``. Every part's byte count is checked and its CRC32 sent to S3; the
upload is completed only when every part is in, and any failure or cancellation aborts it, so the key
ends up holding the whole archive or nothing.

No Airflow here (the operator wraps this module); boto3 is used only through the client passed in.

One module per role: ``model`` (sources, settings, result, errors), ``planning`` (parts),
``download`` (signed-URL ranges), ``upload`` (one S3 key), ``checksums``, ``pipeline`` (the copy and
its cancellation), ``observers`` (progress). Signed URLs are kept out of its messages and logs by
:mod:`airflow_provider_c66.redaction`, which imports Airflow only inside its masking functions.
"""

from __future__ import annotations

from airflow_provider_c66.transfers.copy.checksums import ArchiveDigest, crc32_combine, stored_checksum
from airflow_provider_c66.transfers.copy.model import (
    EXTRA_ARGS,
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    CopyCancelled,
    CopyError,
    CopyResult,
    CopySettings,
    ObjectExists,
    Source,
    SourceChanged,
    UploadIdStore,
)
from airflow_provider_c66.transfers.copy.observers import CopyObserver, ProgressLog
from airflow_provider_c66.transfers.copy.pipeline import copy_to_s3
from airflow_provider_c66.transfers.copy.planning import choose_part_size
from airflow_provider_c66.transfers.copy.upload import (
    abort_open_uploads,
    flexible_checksums,
    s3_error_code,
    write_object,
)

__all__ = [
    "EXTRA_ARGS",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
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
    "UploadIdStore",
    "abort_open_uploads",
    "choose_part_size",
    "copy_to_s3",
    "crc32_combine",
    "flexible_checksums",
    "s3_error_code",
    "stored_checksum",
    "write_object",
]
