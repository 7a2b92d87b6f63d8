"""Full-object checksums and the audit of an archive: emulator and moto over HTTP, real Airflow.

AWS: with ``ChecksumType=FULL_OBJECT`` S3 checks the whole object's CRC32 at
CompleteMultipartUpload and keeps it, and ``aws s3 cp``/boto3 check it on download.
"""

from __future__ import annotations

import base64
import json
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest

from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from airflow_provider_c66.transfers.verify_archive import Cloud66ArchiveVerifyOperator, locate
from tests.s3_proxy import S3Proxy, s3_proxy

MiB = 1024 * 1024
DATE = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def _moto_before(version: str) -> bool:
    from importlib.metadata import version as installed

    return tuple(int(p) for p in installed("moto").split(".")[:2]) < tuple(int(p) for p in version.split("."))


# botocore checks the full-object CRC32 S3 sends with a GET; moto before 5.2 sends a wrong one for
# multipart objects (real S3 sends a composite "-N" checksum there, or the right full one).
WRONG_MULTIPART_CRC = pytest.mark.skipif(
    _moto_before("5.2"), reason="moto before 5.2 answers GetObject of a multipart object with a wrong CRC32"
)


def full_object_supported(s3_client: Any, bucket: str) -> bool:
    """Whether the server keeps full-object checksums (it echoes ChecksumType); moto 5.2+ and AWS do."""
    upload = s3_client.create_multipart_upload(
        Bucket=bucket, Key="probe", ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT"
    )
    s3_client.abort_multipart_upload(Bucket=bucket, Key="probe", UploadId=upload["UploadId"])
    return upload.get("ChecksumType") == "FULL_OBJECT"


@pytest.fixture
def emu(cloud66_emulator_factory: Any) -> Any:
    return cloud66_emulator_factory(split_threshold=6 * MiB, split_size=5 * MiB + 123)


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def archive(bucket: str, bid: int, **kwargs: Any) -> list[str]:
    op = Cloud66BackupToS3Operator(
        task_id="archive",
        stack_id="stack-1",
        backup_id=bid,
        s3_bucket=bucket,
        part_size=5 * MiB,
        asset_alias=None,
        **kwargs,
    )
    result: list[str] = op.execute({})
    return result


def verify(target: Any) -> dict[str, Any]:
    result: dict[str, Any] = Cloud66ArchiveVerifyOperator(task_id="verify", archive=target).execute({})
    return result


def manifest(s3_client: Any, bucket: str, uri: str) -> dict[str, Any]:
    key = uri.split("/", 3)[3].rsplit("/", 1)[0] + "/manifest.json"
    document: dict[str, Any] = json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())
    return document


def test_multipart_archive_carries_a_full_object_crc32_that_s3_keeps(
    emu: Any, s3_server: str, s3_client: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole archive's CRC32 goes with CompleteMultipartUpload (``ChecksumType=FULL_OBJECT``),
    is what S3 reports afterwards, and is recorded in the manifest next to the SHA-256."""
    bid = emu.add_backup("stack-1", size=12 * MiB + 7, backup_date=DATE)
    data = b"".join(emu.iter_archive("stack-1", bid))
    with s3_proxy(s3_server) as proxy:
        _connect(monkeypatch, proxy)
        (uri,) = archive(s3_bucket, bid)
        (create,) = proxy.requests("CreateMultipartUpload")
        (complete,) = proxy.requests("CompleteMultipartUpload")
    assert create.headers["x-amz-checksum-type"] == "FULL_OBJECT"
    (entry,) = manifest(s3_client, s3_bucket, uri)["objects"]
    assert entry["crc32"] == crc32(data), "recorded whatever the store keeps"
    if not full_object_supported(s3_client, s3_bucket):
        # The store did not take the type: the composite checksum stays, and nothing claims otherwise.
        assert "x-amz-checksum-type" not in complete.headers
        assert entry["s3_checksum"] is None or not entry["s3_checksum"].endswith("FULL_OBJECT")
        return
    assert complete.headers["x-amz-checksum-type"] == "FULL_OBJECT"
    assert complete.headers["x-amz-checksum-crc32"] == crc32(data)
    head = s3_client.head_object(Bucket=s3_bucket, Key=uri.split("/", 3)[3], ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32(data)
    assert entry["s3_checksum"] == f"CRC32 {crc32(data)} FULL_OBJECT"


def _connect(monkeypatch: pytest.MonkeyPatch, proxy: S3Proxy) -> None:
    extra = {"endpoint_url": proxy.endpoint, "region_name": "us-east-1"}
    connection = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))


@pytest.mark.parametrize(
    "size", [2048, pytest.param(12 * MiB + 7, marks=WRONG_MULTIPART_CRC)], ids=["single-put", "multipart"]
)
def test_verify_reads_the_archive_back_and_agrees_with_the_manifest(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str, size: int
) -> None:
    bid = emu.add_backup("stack-1", size=size, backup_date=DATE)
    uris = archive(s3_bucket, bid)
    data = b"".join(emu.iter_archive("stack-1", bid))
    result = verify(uris)
    import hashlib

    assert result["objects"] == 1 and result["bytes"] == len(data)
    assert result["sha256"] == {uris[0]: hashlib.sha256(data).hexdigest()}
    assert result["manifest"] == uris[0].rsplit("/", 1)[0] + "/manifest.json"


@pytest.mark.reliability(
    area="upload", fault="an archived object changed in S3 after the copy", outcome="clear error"
)
def test_verify_fails_loudly_on_changed_bytes_of_the_same_size(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    bid = emu.add_backup("stack-1", size=12 * MiB, backup_date=DATE)
    (uri,) = archive(s3_bucket, bid)
    key = uri.split("/", 3)[3]
    data = bytearray(s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    data[7 * MiB] ^= 0xFF  # one bit flipped, size unchanged
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=bytes(data))
    with pytest.raises(Exception, match="does not match its manifest") as info:
        verify(uri)
    message = str(info.value)
    assert f"{uri}: SHA-256 read back is" in message
    assert f"{uri}: CRC32 read back is {crc32(bytes(data))}" in message
    assert "S3's stored checksum is now" in message
    assert "size" not in message.split("SHA-256")[0]


@pytest.mark.reliability(
    area="upload", fault="an archived object truncated or deleted", outcome="clear error"
)
def test_verify_fails_on_a_truncated_or_missing_object(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    bid = emu.add_backup("stack-1", size=12 * MiB, backup_date=DATE)
    (uri,) = archive(s3_bucket, bid)
    key = uri.split("/", 3)[3]
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"short")
    with pytest.raises(Exception, match=f"{uri}: size read back is 5, the manifest says {12 * MiB}"):
        verify(uri)
    s3_client.delete_object(Bucket=s3_bucket, Key=key)
    with pytest.raises(Exception, match=f"{uri}: missing"):
        verify(uri)


def test_verify_without_a_manifest_says_the_archive_is_incomplete(
    s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="cloud66/s/mysql/db/2026/03/04/9/db.tar", Body=b"x")
    with pytest.raises(Exception, match=r"manifest\.json does not exist: the archive was never completed"):
        verify(f"s3://{s3_bucket}/cloud66/s/mysql/db/2026/03/04/9/db.tar")


@WRONG_MULTIPART_CRC
def test_verify_runs_after_the_archive_in_a_dag(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str, run_dag: Any
) -> None:
    from airflow.sdk import DAG

    bid = emu.add_backup("stack-1", size=12 * MiB, backup_date=DATE)
    with DAG("archive_and_verify", schedule=None) as dag:
        copied = Cloud66BackupToS3Operator(
            task_id="archive", stack_id="stack-1", backup_id=bid, s3_bucket=s3_bucket, part_size=5 * MiB
        )
        copied >> Cloud66ArchiveVerifyOperator(task_id="verify", archive=copied.output)
    dagrun = run_dag(dag)
    assert dagrun.state == "success"
    states = {ti.task_id: ti.state for ti in dagrun.get_task_instances()}
    assert states == {"archive": "success", "verify": "success"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("s3://lake/a/b/42/db.tar", ("lake", "a/b/42/")),
        ("s3://lake/a/b/42/manifest.json", ("lake", "a/b/42/")),
        ("s3://lake/a/b/42/", ("lake", "a/b/42/")),
        (["s3://lake/a/42/db.tar-aa", "s3://lake/a/42/db.tar-ab"], ("lake", "a/42/")),
    ],
)
def test_locate_finds_the_archive_prefix(value: Any, expected: tuple[str, str]) -> None:
    assert locate(value) == expected


@pytest.mark.parametrize(
    "value", ["lake/a/db.tar", "s3://lake/db.tar", "s3://Bad_Bucket/a/b", "s3://lake/a/../b", [], 42]
)
def test_locate_refuses_what_is_not_an_archive_uri(value: Any) -> None:
    with pytest.raises(Cloud66InputError) as info:
        locate(value)
    assert info.value.field == "archive"


def test_verify_says_a_damaged_manifest_is_damaged(
    s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="cloud66/s/9/manifest.json", Body=b"{not json")
    with pytest.raises(Exception, match=r"manifest\.json is damaged"):
        verify(f"s3://{s3_bucket}/cloud66/s/9/manifest.json")
