"""Cloud66ArchiveVerifyOperator: audit an archive this package wrote, long after it was written.

Reading an archive back is the only proof that it still holds the backup: this streams every object
of the archive (one chunk in memory at a time) and compares its size, SHA-256 and CRC32 with the
manifest, and the checksum S3 stored at upload with the bytes read back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_c66 import validation
from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.transfers import archive
from airflow_provider_c66.transfers.backup_to_s3 import MISSING_CODES, read_manifest
from airflow_provider_c66.transfers.copy import (
    ArchiveDigest,
    flexible_checksums,
    s3_error_code,
    stored_checksum,
)

try:
    from airflow.providers.common.compat.sdk import AirflowException, BaseOperator
except ImportError:  # pragma: no cover
    from airflow.sdk import BaseOperator
    from airflow.sdk.exceptions import AirflowException

CHUNK = 1 << 20


class Cloud66ArchiveVerifyOperator(BaseOperator):  # type: ignore[misc]
    """Read an archive back from S3 and check it against its manifest; fail loudly on any difference.

    For each object the manifest lists: it exists, and its size, SHA-256 and CRC32 are those the
    manifest recorded when it was copied; the checksum S3 stored (a full-object CRC32, where the
    store keeps one) matches the bytes read back and is the one recorded. Needs ``s3:GetObject`` only.

    :param archive: where the archive is: an ``s3://`` URI of its manifest, of its prefix or of any of
        its objects, or the list of URIs the archive operator returns (its XCom).
    :param aws_conn_id: the Amazon connection (``S3Hook``).
    :return: ``{"manifest": uri, "objects": n, "bytes": total, "sha256": {uri: hex}}``.
    """

    template_fields: Sequence[str] = ("archive", "aws_conn_id")
    ui_color = "#7fb2e5"

    def __init__(
        self, *, archive: str | Sequence[str], aws_conn_id: str | None = "aws_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.archive = archive
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        bucket, prefix = locate(self.archive)
        manifest_uri = archive.s3_uri(bucket, prefix + archive.MANIFEST_NAME)
        client = S3Hook(aws_conn_id=self.aws_conn_id).get_conn()
        try:
            document = read_manifest(client, bucket, prefix + archive.MANIFEST_NAME)
        except ValueError as exc:
            raise AirflowException(f"{manifest_uri} is damaged ({exc}); nothing to verify against.") from None
        if document is None:
            raise AirflowException(
                f"{manifest_uri} does not exist: the archive was never completed (or was deleted); "
                "nothing to verify against."
            )
        objects = document.get("objects")
        if document.get("format") != archive.MANIFEST_FORMAT or not isinstance(objects, list) or not objects:
            raise AirflowException(
                f"{manifest_uri} is not a manifest this package can read (format {document.get('format')!r})."
            )
        problems: list[str] = []
        digests: dict[str, str] = {}
        for entry in objects:
            uri = archive.s3_uri(bucket, str(entry.get("key")))
            found = self._check(client, bucket, entry)
            problems += [f"{uri}: {problem}" for problem in found[1]]
            if found[0] is not None:
                digests[uri] = found[0]
        total = sum(int(entry.get("size", 0)) for entry in objects)
        if document.get("total_size") != total:
            problems.append(
                f"{manifest_uri}: total_size {document.get('total_size')} is not the objects' sum {total}"
            )
        if problems:
            raise AirflowException(
                f"The archive at s3://{bucket}/{prefix} does not match its manifest:\n- "
                + "\n- ".join(problems)
            )
        self.log.info(
            "Verified %d object(s), %d bytes, under s3://%s/%s against the manifest",
            len(objects),
            total,
            bucket,
            prefix,
        )
        return {"manifest": manifest_uri, "objects": len(objects), "bytes": total, "sha256": digests}

    def _check(self, client: Any, bucket: str, entry: Mapping[str, Any]) -> tuple[str | None, list[str]]:
        """(SHA-256 read back, or None if unreadable; what differs from the manifest)."""
        from botocore.exceptions import ClientError, FlexibleChecksumError

        key = str(entry.get("key"))
        try:
            mode = {"ChecksumMode": "ENABLED"} if flexible_checksums(client) else {}
            head = client.head_object(Bucket=bucket, Key=key, **mode)
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            digest = ArchiveDigest()
            for chunk in body.iter_chunks(CHUNK):
                digest.update(chunk)
        except ClientError as exc:
            if s3_error_code(exc) in MISSING_CODES:
                return None, ["missing"]
            return None, [f"could not be read: {exc}"]
        except FlexibleChecksumError as exc:  # botocore checked S3's checksum of the bytes as they came
            return None, [f"the bytes read back do not match the checksum S3 sent with them ({exc})"]
        problems = []
        for name, recorded, read_back in (
            ("size", entry.get("size"), digest.size),
            ("SHA-256", entry.get("sha256"), digest.sha256),
            ("CRC32", entry.get("crc32"), digest.crc32),
        ):
            if recorded is not None and recorded != read_back:
                problems.append(f"{name} read back is {read_back}, the manifest says {recorded}")
        stored = stored_checksum(head)
        if (
            stored
            and stored.startswith("CRC32 ")
            and stored.endswith(" FULL_OBJECT")
            and stored.split()[1] != digest.crc32
        ):
            problems.append(
                f"S3's stored checksum {stored} does not match the CRC32 {digest.crc32} of the bytes read back"
            )
        if entry.get("s3_checksum") and stored != entry.get("s3_checksum"):
            problems.append(
                f"S3's stored checksum is now {stored}, the manifest recorded {entry.get('s3_checksum')}"
            )
        return digest.sha256, problems


def locate(value: object, field: str = "archive") -> tuple[str, str]:
    """(bucket, archive prefix ending in "/") from a URI of the manifest, the prefix or an object."""
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if not isinstance(value, str) or not value.startswith("s3://"):
        raise Cloud66InputError(
            field, f"must be an s3:// URI of the archive (or the archive task's XCom), got {value!r:.80}"
        )
    bucket, _, key = value[len("s3://") :].partition("/")
    validation.bucket_name(bucket, field)
    if not key or key.startswith("/") or any(part in (".", "..") for part in key.split("/")):
        raise Cloud66InputError(field, f"must name a key under the bucket, got {value!r:.80}")
    prefix = key if key.endswith("/") else key.rsplit("/", 1)[0] + "/"
    if "/" not in key or prefix == "/":
        raise Cloud66InputError(field, f"must name an archive under a prefix, got {value!r:.80}")
    return bucket, prefix
