"""How parts are signed: over HTTPS unsigned, their CRC32 protecting them; over plain HTTP signed.

botocore signs a body by SHA-256-hashing all of it, one more pass over every byte. Over TLS with a
checksum S3 verifies, that pass adds nothing (it is what ``aws s3 cp`` does too); over plain HTTP the
signature is the only thing a tampering hop cannot forge, so it stays. The S3 side here is the local
S3 server behind a proxy that speaks HTTPS with a throwaway certificate, on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from tests.s3_fixtures import ACCESS_KEY, SECRET_KEY
from tests.s3_proxy import S3Proxy, s3_proxy, tls_context

MiB = 1 << 20
DATE = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
UNSIGNED = "UNSIGNED-PAYLOAD"


@pytest.fixture
def emu(cloud66_emulator_factory: Any) -> Any:
    return cloud66_emulator_factory(split_threshold=6 * MiB, split_size=5 * MiB + 123)


@pytest.fixture
def https_proxy(s3_server: str, tmp_path: Path) -> Iterator[tuple[S3Proxy, Path]]:
    context, certificate = tls_context(tmp_path)
    with s3_proxy(s3_server, context) as proxy:
        yield proxy, certificate


def connect(monkeypatch: pytest.MonkeyPatch, endpoint: str, **extra: Any) -> str:
    conn = {
        "conn_type": "aws",
        "login": ACCESS_KEY,
        "password": SECRET_KEY,
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1", **extra},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_PROXIED", json.dumps(conn))
    return "aws_proxied"


def archive(emu: Any, s3_bucket: str, conn_id: str) -> tuple[str, bytes]:
    """Archive a 3-part backup through ``conn_id``; (the archive's key, its bytes in the emulator)."""
    bid = emu.add_backup("stack-1", size=12 * MiB + 7, backup_date=DATE, database_name="app_db")
    op = Cloud66BackupToS3Operator(
        task_id="archive",
        stack_id="stack-1",
        backup_id=bid,
        s3_bucket=s3_bucket,
        part_size=5 * MiB,
        aws_conn_id=conn_id,
        asset_alias=None,
    )
    (uri,) = op.execute({})
    return uri.split("/", 3)[3], b"".join(emu.iter_archive("stack-1", bid))


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_parts_over_https_travel_unsigned_with_the_checksum_s3_checks(
    emu: Any,
    s3_client: Any,
    s3_bucket: str,
    https_proxy: tuple[S3Proxy, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy, certificate = https_proxy
    key, content = archive(emu, s3_bucket, connect(monkeypatch, proxy.endpoint, verify=str(certificate)))

    parts = proxy.requests("UploadPart")
    assert [int(p.query["partNumber"]) for p in sorted(parts, key=lambda p: int(p.query["partNumber"]))] == [
        1,
        2,
        3,
    ]
    assert b"".join(p.body for p in sorted(parts, key=lambda p: int(p.query["partNumber"]))) == content
    for part in parts:
        assert part.headers["x-amz-content-sha256"] == UNSIGNED
        assert part.headers["x-amz-checksum-crc32"] == crc32_b64(part.body)
        assert "content-encoding" not in part.headers  # the plain body, no aws-chunked framing
    small_writes = proxy.requests("PutObject")
    assert sorted(("_catalog/" in w.key, w.key.endswith("/manifest.json")) for w in small_writes) == [
        (False, True),
        (True, False),
    ]
    for write in small_writes:  # the manifest and the catalogue record
        assert write.headers["x-amz-content-sha256"] == UNSIGNED
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == content


def test_parts_over_plain_http_stay_signed(
    emu: Any, s3_server: str, s3_client: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with s3_proxy(s3_server) as proxy:
        key, content = archive(emu, s3_bucket, connect(monkeypatch, proxy.endpoint))

    parts = proxy.requests("UploadPart")
    assert len(parts) == 3
    for part in [*parts, *proxy.requests("PutObject")]:
        assert part.headers["x-amz-content-sha256"] == hashlib.sha256(part.body).hexdigest()
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == content


def test_a_connection_that_asks_for_signed_payloads_keeps_them_over_https(
    emu: Any, s3_bucket: str, https_proxy: tuple[S3Proxy, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy, certificate = https_proxy
    conn_id = connect(
        monkeypatch,
        proxy.endpoint,
        verify=str(certificate),
        config_kwargs={"s3": {"payload_signing_enabled": True}},
    )
    archive(emu, s3_bucket, conn_id)

    parts = proxy.requests("UploadPart")
    assert len(parts) == 3
    assert all(p.headers["x-amz-content-sha256"] == hashlib.sha256(p.body).hexdigest() for p in parts)
