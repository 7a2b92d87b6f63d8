"""S3ToCloud66ImportOperator presigns a URL Cloud 66 can use (issue 11, item 3).

The operator runs for real against the moto S3 server and the Cloud 66 emulator over HTTP. Where
moto is laxer than AWS, ``S3Proxy`` sits in front of it and answers as AWS documents; each test
names the AWS rule it holds the operator to.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import pytest
import requests
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import ClientError

from airflow_provider_c66.testing.emulator import Cloud66Emulator
from airflow_provider_c66.transfers import s3_to_cloud66
from airflow_provider_c66.transfers.s3_to_cloud66 import S3ToCloud66ImportOperator
from tests.s3_proxy import Answer, ProxiedRequest, S3Proxy, s3_proxy

try:
    from airflow.providers.common.compat.sdk import AirflowException
except ImportError:  # pragma: no cover
    from airflow.sdk.exceptions import AirflowException

REGION = "eu-west-1"
SIGV4_REQUIRED = Answer(
    400,
    "InvalidArgument",
    "Requests specifying Server Side Encryption with AWS KMS managed keys require AWS Signature Version 4.",
)
ACCESS_DENIED = Answer(403, "AccessDenied", "Access Denied")
SDK_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")


def is_sigv4(request: ProxiedRequest) -> bool:
    return "X-Amz-Algorithm" in request.query or request.headers.get("authorization", "").startswith(
        "AWS4-HMAC-SHA256"
    )


def kms_objects_need_sigv4(upstream: Any) -> Any:
    """AWS's rule: a GetObject of an SSE-KMS object signed other than SigV4 is refused with 400."""

    def rule(request: ProxiedRequest) -> Answer | None:
        bucket, _, key = request.path.lstrip("/").partition("/")
        if request.operation != "GetObject" or not key or is_sigv4(request):
            return None
        try:
            head = upstream.head_object(Bucket=bucket, Key=unquote(key))
        except ClientError:
            return None
        return SIGV4_REQUIRED if head.get("ServerSideEncryption") == "aws:kms" else None

    return rule


def regional_client(s3_server: str, service: str = "s3", region: str = REGION) -> Any:
    return boto3.client(
        service,
        endpoint_url=s3_server,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def proxy(s3_server: str, s3_client: Any) -> Iterator[S3Proxy]:
    with s3_proxy(s3_server) as running:
        running.rule = kms_objects_need_sigv4(s3_client)
        yield running


@pytest.fixture
def proxied_connection(proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch) -> str:
    """``aws_default`` pointed at the strict proxy, in us-east-1 (the bucket's region is elsewhere)."""
    extra = {"endpoint_url": proxy.endpoint, "region_name": "us-east-1"}
    conn = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    return "aws_default"


@pytest.fixture
def eu_bucket(s3_server: str) -> str:
    name = f"restore-{uuid.uuid4().hex[:12]}"
    regional_client(s3_server).create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return name


def restore_op(bucket: str, key: str, **kwargs: Any) -> S3ToCloud66ImportOperator:
    return S3ToCloud66ImportOperator(
        task_id="restore",
        s3_bucket=bucket,
        s3_key=key,
        stack_id="stack-1",
        group=2,
        db_type="mysql",
        **kwargs,
    )


def posted_url(emu: Cloud66Emulator) -> str:
    (post,) = [r for r in emu.requests if r.method == "POST"]
    return str(post.json["remote_url"])


def test_sse_kms_object_gets_a_sigv4_url_for_the_buckets_region_that_reads_it(
    cloud66_emulator: Cloud66Emulator,
    s3_server: str,
    s3_client: Any,
    eu_bucket: str,
    proxy: S3Proxy,
    proxied_connection: str,
) -> None:
    """AWS: GetObject of an SSE-KMS object needs SigV4 (else 400 InvalidArgument), and a SigV4
    signature is valid only for the bucket's own region."""
    key_id = regional_client(s3_server, "kms").create_key()["KeyMetadata"]["KeyId"]
    data = os.urandom(64 * 1024)
    regional_client(s3_server).put_object(
        Bucket=eu_bucket,
        Key="dumps/app_db.tar",
        Body=data,
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=key_id,
    )
    # The rule is live: a SigV2 URL (botocore's default for presigning) is refused as AWS refuses it.
    sigv2 = boto3.client("s3", endpoint_url=proxy.endpoint, region_name="us-east-1").generate_presigned_url(
        "get_object", Params={"Bucket": eu_bucket, "Key": "dumps/app_db.tar"}
    )
    refused = requests.get(sigv2, timeout=30)
    assert refused.status_code == 400 and "InvalidArgument" in refused.text

    assert restore_op(eu_bucket, "dumps/app_db.tar").execute({}) == "Your external backup queued for upload"

    url = posted_url(cloud66_emulator)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Credential"][0].endswith(f"/{REGION}/s3/aws4_request")
    assert "Signature" not in query and "AWSAccessKeyId" not in query
    # A custom endpoint keeps its host and path style.
    assert url.startswith(f"{proxy.endpoint}/{eu_bucket}/dumps/app_db.tar?")
    answer = requests.get(url, timeout=30)
    assert answer.status_code == 200
    assert answer.content == data


@pytest.mark.parametrize("storage_class", ["GLACIER", "DEEP_ARCHIVE"])
def test_archived_object_without_restore_is_refused_before_cloud66(
    cloud66_emulator: Cloud66Emulator, s3_client: Any, s3_bucket: str, aws_connection: str, storage_class: str
) -> None:
    """AWS: GetObject of a GLACIER or DEEP_ARCHIVE object not restored answers 403 InvalidObjectState."""
    s3_client.put_object(Bucket=s3_bucket, Key="cold.tar", Body=b"x" * 10, StorageClass=storage_class)
    with pytest.raises(ClientError, match="InvalidObjectState"):
        s3_client.get_object(Bucket=s3_bucket, Key="cold.tar")

    with pytest.raises(AirflowException, match=f"{storage_class} storage class.*restore it first"):
        restore_op(s3_bucket, "cold.tar").execute({})
    assert cloud66_emulator.requests == []


@pytest.mark.parametrize(("storage_class", "restore"), [("GLACIER_IR", False), ("GLACIER", True)])
def test_readable_archive_classes_are_imported(
    cloud66_emulator: Cloud66Emulator,
    s3_client: Any,
    s3_bucket: str,
    aws_connection: str,
    storage_class: str,
    restore: bool,
) -> None:
    """AWS: GLACIER_IR objects are read directly; a GLACIER object is readable once its restore has
    completed (HeadObject's ``x-amz-restore: ongoing-request="false"``)."""
    s3_client.put_object(Bucket=s3_bucket, Key="cold.tar", Body=b"y" * 10, StorageClass=storage_class)
    if restore:
        try:
            s3_client.restore_object(Bucket=s3_bucket, Key="cold.tar", RestoreRequest={"Days": 1})
        except (ClientError, NotImplementedError) as exc:  # pragma: no cover - depends on moto
            pytest.skip(f"moto does not restore archived objects: {exc}")
        head = s3_client.head_object(Bucket=s3_bucket, Key="cold.tar")
        if 'ongoing-request="false"' not in head.get("Restore", ""):  # pragma: no cover
            pytest.skip("moto does not report a completed restore")

    restore_op(s3_bucket, "cold.tar").execute({})
    assert requests.get(posted_url(cloud66_emulator), timeout=30).content == b"y" * 10


def refreshable_credentials(lifetime: timedelta) -> RefreshableCredentials:
    """Temporary credentials (as from AssumeRole) that expire after ``lifetime``; refreshing gives the same."""
    metadata = {
        "access_key": "testing",
        "secret_key": "testing",
        "token": "session-token",
        "expiry_time": (datetime.now(UTC) + lifetime).isoformat(),
    }
    return RefreshableCredentials.create_from_metadata(metadata, lambda: metadata, "test")


@pytest.fixture
def credentials_lifetime(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make every S3Hook client sign with temporary credentials of the given lifetime."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    def set_lifetime(lifetime: timedelta) -> None:
        original = S3Hook.get_client_type

        def get_client_type(self: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(self, *args, **kwargs)
            client._request_signer._credentials = refreshable_credentials(lifetime)
            return client

        monkeypatch.setattr(S3Hook, "get_client_type", get_client_type)

    return set_lifetime


def test_credentials_expiring_before_expires_in_shorten_the_url(
    cloud66_emulator: Cloud66Emulator,
    s3_client: Any,
    s3_bucket: str,
    aws_connection: str,
    credentials_lifetime: Any,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """AWS: a URL signed with temporary credentials stops working when their session token expires,
    whatever its X-Amz-Expires says."""
    caplog.set_level(logging.DEBUG)
    for sdk in SDK_LOGGERS:  # the SDK's own DEBUG tracing prints signatures; Airflow runs at INFO
        caplog.set_level(logging.INFO, logger=sdk)
    s3_client.put_object(Bucket=s3_bucket, Key="db.tar", Body=b"z" * 10)
    credentials_lifetime(timedelta(minutes=20))

    restore_op(s3_bucket, "db.tar", expires_in=6 * 3600).execute({})

    query = parse_qs(urlsplit(posted_url(cloud66_emulator)).query)
    assert 1100 <= int(query["X-Amz-Expires"][0]) <= 1200
    assert query["X-Amz-Security-Token"] == ["session-token"]
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "session token" in logged and "instead of 21600 s" in logged
    assert query["X-Amz-Signature"][0] not in logged


def test_credentials_expiring_within_min_expiry_are_refused_before_cloud66(
    cloud66_emulator: Cloud66Emulator,
    s3_client: Any,
    s3_bucket: str,
    aws_connection: str,
    credentials_lifetime: Any,
) -> None:
    """AWS: a URL signed with temporary credentials stops working when their session token expires."""
    s3_client.put_object(Bucket=s3_bucket, Key="db.tar", Body=b"z" * 10)
    credentials_lifetime(timedelta(seconds=200))

    with pytest.raises(AirflowException, match=r"credentials expire in \d+ s, under the 300 s minimum"):
        restore_op(s3_bucket, "db.tar").execute({})
    assert cloud66_emulator.requests == []


def test_refused_get_bucket_location_falls_back_to_the_connections_region(
    cloud66_emulator: Cloud66Emulator,
    s3_client: Any,
    s3_bucket: str,
    proxy: S3Proxy,
    proxied_connection: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """AWS: GetBucketLocation needs s3:GetBucketLocation, else 403 AccessDenied."""
    caplog.set_level(logging.WARNING)
    proxy.rule = lambda request: ACCESS_DENIED if "location" in request.query else None
    s3_client.put_object(Bucket=s3_bucket, Key="db.tar", Body=b"z" * 10)

    restore_op(s3_bucket, "db.tar").execute({})

    query = parse_qs(urlsplit(posted_url(cloud66_emulator)).query)
    assert query["X-Amz-Credential"][0].endswith("/us-east-1/s3/aws4_request")
    out, err = capfd.readouterr()
    assert "s3:GetBucketLocation on" in caplog.text + out + err
    assert [outcome for request, outcome in proxy.seen if "location" in request.query] == ["answered 403"]


@pytest.mark.parametrize(
    ("location", "region"),
    [(None, "us-east-1"), ("", "us-east-1"), ("EU", "eu-west-1"), ("ap-south-1", "ap-south-1")],
)
def test_bucket_region_from_get_bucket_location(location: str | None, region: str) -> None:
    """AWS: GetBucketLocation answers no LocationConstraint for us-east-1 and the legacy "EU" for eu-west-1."""
    assert s3_to_cloud66.bucket_region(location) == region


@pytest.mark.parametrize(
    ("bucket", "endpoint", "style"),
    [
        ("my-backups", None, "virtual"),
        ("my.backups", None, "path"),
        ("My_Backups", None, "path"),
        ("my-backups", "http://127.0.0.1:9000", "path"),
    ],
)
def test_addressing_style(bucket: str, endpoint: str | None, style: str) -> None:
    """AWS: path-style requests to the global endpoint answer 301 outside us-east-1; a dotted bucket
    name does not match the virtual-hosted TLS certificate."""
    assert s3_to_cloud66.addressing_style(bucket, endpoint) == style


@pytest.mark.parametrize(
    ("bucket", "config", "prefix"),
    [
        ("my-backups", {}, f"https://my-backups.s3.{REGION}.amazonaws.com/db.tar?"),
        ("my.backups", {}, f"https://s3.{REGION}.amazonaws.com/my.backups/db.tar?"),
        (
            "my-backups",
            {"s3": {"use_dualstack_endpoint": True}},
            f"https://my-backups.s3.dualstack.{REGION}.amazonaws.com/db.tar?",
        ),
    ],
)
def test_aws_endpoint_url_is_regional_virtual_hosted_and_keeps_connection_config(
    monkeypatch: pytest.MonkeyPatch, bucket: str, config: dict[str, Any], prefix: str
) -> None:
    """AWS: a path-style global URL answers 301 for a bucket outside us-east-1; the connection's
    botocore settings (here dual-stack) still apply."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    extra = {"region_name": "us-east-1", "config_kwargs": config}
    conn = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    monkeypatch.setattr(S3ToCloud66ImportOperator, "_bucket_region", lambda self, s3, name: REGION)

    client = restore_op(bucket, "db.tar")._signing_client(S3Hook(aws_conn_id="aws_default"), bucket)
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "db.tar"})
    assert url.startswith(prefix)
    assert f"%2F{REGION}%2Fs3%2Faws4_request" in url


def test_a_session_token_of_unknown_expiry_is_warned_about(
    cloud66_emulator: Cloud66Emulator,
    s3_server: str,
    s3_client: Any,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A session token given as is (the connection's ``aws_session_token``) has an expiry nobody
    told botocore: the URL keeps ``expires_in`` but the log says it may die sooner."""
    import json

    extra = {"endpoint_url": s3_server, "region_name": "us-east-1", "aws_session_token": "static-session"}
    connection = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    caplog.set_level(logging.INFO)
    for sdk in SDK_LOGGERS:
        caplog.set_level(logging.INFO, logger=sdk)
    s3_client.put_object(Bucket=s3_bucket, Key="db.tar", Body=b"z" * 10)

    restore_op(s3_bucket, "db.tar", expires_in=7200).execute({})

    query = parse_qs(urlsplit(posted_url(cloud66_emulator)).query)
    assert query["X-Amz-Expires"] == ["7200"] and query["X-Amz-Security-Token"] == ["static-session"]
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "signed with a session token whose expiry these credentials do not say" in logged
    assert "whatever expires_in (7200 s) says" in logged


def test_static_keys_get_no_session_warning(
    cloud66_emulator: Cloud66Emulator,
    s3_client: Any,
    s3_bucket: str,
    aws_connection: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO)
    s3_client.put_object(Bucket=s3_bucket, Key="db.tar", Body=b"z" * 10)
    restore_op(s3_bucket, "db.tar", expires_in=7200).execute({})
    assert "X-Amz-Security-Token" not in posted_url(cloud66_emulator)
    out, err = capfd.readouterr()
    assert "session token" not in caplog.text + out + err
