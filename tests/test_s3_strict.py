"""The archive operator under the rules real S3 and S3-compatible stores enforce and moto does not.

Every test runs the operator against the Cloud 66 emulator and moto over HTTP, through the tests' S3
proxy (``tests/s3_proxy.py``) applying a rule from ``tests/s3_rules.py``: IAM authorization of each
request as AWS documents it (with the policies the README gives, read from the README), a store that
refuses flexible-checksum headers or requires Content-MD5, and AWS's checksum rule for Object Lock
writes. Each test names the rule it proves.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from airflow_provider_c66.transfers.copy import CopyError
from tests.s3_proxy import Answer, ProxiedRequest, S3Proxy, s3_proxy
from tests.s3_rules import (
    IamPolicy,
    first_of,
    lock_writes_need_a_checksum,
    policy_for,
    readme_policies,
    refuse_flexible_checksums,
    require_content_md5,
)

MiB = 1024 * 1024
DATE = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
WRITES = ("PutObject", "UploadPart")


@pytest.fixture
def emu(cloud66_emulator_factory: Any) -> Any:
    return cloud66_emulator_factory(split_threshold=6 * MiB, split_size=5 * MiB + 123)


@pytest.fixture
def proxy(s3_server: str) -> Any:
    with s3_proxy(s3_server) as running:
        yield running


def connect(monkeypatch: pytest.MonkeyPatch, proxy: S3Proxy, **config_kwargs: str) -> None:
    """``aws_default`` through the proxy; ``config_kwargs`` as a user puts them in the connection's extra."""
    extra: dict[str, Any] = {"endpoint_url": proxy.endpoint, "region_name": "us-east-1"}
    if config_kwargs:
        extra["config_kwargs"] = config_kwargs
    connection = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))


def bucket(s3_client: Any, *, versioned: bool = False, lock: bool = False) -> str:
    name = f"strict-{uuid.uuid4().hex[:12]}"
    if lock:
        s3_client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    else:
        s3_client.create_bucket(Bucket=name)
    if versioned and not lock:
        s3_client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def archive(target: str, bid: int, **kwargs: Any) -> list[str]:
    kwargs.setdefault("asset_alias", None)
    op = Cloud66BackupToS3Operator(
        task_id="archive", stack_id="stack-1", backup_id=bid, s3_bucket=target, part_size=5 * MiB, **kwargs
    )
    result: list[str] = op.execute({})
    return result


def key_of(uri: str) -> str:
    return uri.split("/", 3)[3]


def stored(s3_client: Any, target: str) -> dict[str, bytes]:
    listed = s3_client.list_objects_v2(Bucket=target).get("Contents", [])
    return {o["Key"]: s3_client.get_object(Bucket=target, Key=o["Key"])["Body"].read() for o in listed}


def open_uploads(s3_client: Any, target: str) -> list[Any]:
    return list(s3_client.list_multipart_uploads(Bucket=target).get("Uploads", []))


def archive_bytes(emu: Any, bid: int) -> bytes:
    return b"".join(emu.iter_archive("stack-1", bid))


# -- least privilege -------------------------------------------------------------------------------


def test_the_readme_documents_every_policy_the_tests_use() -> None:
    assert {"archive", "archive-tags", "archive-kms", "archive-lock", "restore"} <= set(readme_policies())


@pytest.mark.parametrize("size", [2048, 12 * MiB + 7], ids=["single-put", "multipart"])
def test_archive_and_rerun_into_a_versioned_bucket_with_the_documented_policy(
    emu: Any, s3_client: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """AWS: HeadObject with ``versionId`` is authorized as ``s3:GetObjectVersion``, which the README's
    policy does not grant; the copy into a versioned bucket must succeed with that policy alone."""
    target = bucket(s3_client, versioned=True)
    policy = policy_for(target, "archive")
    proxy.enforce(policy)
    connect(monkeypatch, proxy)
    bid = emu.add_backup("stack-1", size=size, backup_date=DATE)

    uris = archive(target, bid)
    emu.clear_requests()
    assert archive(target, bid) == uris, "the re-run finds the archive complete"

    assert policy.denied == []
    assert [r for r in emu.requests if r.kind == "file"] == [], "the re-run downloads nothing"
    assert stored(s3_client, target)[key_of(uris[0])] == archive_bytes(emu, bid)
    assert all("versionId" not in r.query for r in proxy.requests("HeadObject"))
    versions = s3_client.list_object_versions(Bucket=target).get("Versions", [])
    assert len(versions) == 3, "one version each of the archive, the manifest and the catalogue record"


def test_tags_need_put_object_tagging(
    emu: Any, s3_client: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS: tags sent with a write (``x-amz-tagging``) also need ``s3:PutObjectTagging``; the README's
    tags block is what makes the tagged copy pass, and without it the task fails leaving nothing."""
    target = bucket(s3_client)
    connect(monkeypatch, proxy)
    bid = emu.add_backup("stack-1", size=12 * MiB, backup_date=DATE)

    without = policy_for(target, "archive")
    proxy.enforce(without)
    with pytest.raises(Exception, match="AccessDenied"):
        archive(target, bid, tags={"team": "data"})
    assert ("CreateMultipartUpload", "s3:PutObjectTagging") in without.denied
    assert stored(s3_client, target) == {} and open_uploads(s3_client, target) == []

    documented = policy_for(target, "archive", "archive-tags")
    proxy.enforce(documented)
    (uri,) = archive(target, bid, tags={"team": "data"})
    assert documented.denied == []
    tags = s3_client.get_object_tagging(Bucket=target, Key=key_of(uri))["TagSet"]
    assert tags == [{"Key": "team", "Value": "data"}]


def test_sse_kms_multipart_needs_the_documented_kms_actions(
    emu: Any, s3_client: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS: a multipart upload with SSE-KMS needs ``kms:GenerateDataKey`` and ``kms:Decrypt``."""
    target = bucket(s3_client, versioned=True)
    connect(monkeypatch, proxy)
    bid = emu.add_backup("stack-1", size=12 * MiB, backup_date=DATE)

    without = policy_for(target, "archive")
    proxy.enforce(without)
    with pytest.raises(Exception, match="AccessDenied"):
        archive(target, bid, server_side_encryption="aws:kms")
    assert ("CreateMultipartUpload", "kms:GenerateDataKey") in without.denied
    assert open_uploads(s3_client, target) == []

    documented = policy_for(target, "archive", "archive-kms")
    proxy.enforce(documented)
    (uri,) = archive(target, bid, server_side_encryption="aws:kms")
    assert documented.denied == []
    head = s3_client.head_object(Bucket=target, Key=key_of(uri))
    assert head["ServerSideEncryption"] == "aws:kms"


def test_without_list_bucket_a_missing_key_is_forbidden_and_the_copy_stops_before_uploading(
    emu: Any, s3_client: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS: without ``s3:ListBucket``, HEAD of a key that does not exist answers 403, not 404. The
    README lists ListBucket for that reason; without it the run fails before any upload."""
    target = bucket(s3_client)
    policy = policy_for(target, "archive")
    policy.statements = [(actions - {"s3:ListBucket"}, resources) for actions, resources in policy.statements]
    proxy.enforce(policy)
    connect(monkeypatch, proxy)
    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE)
    with pytest.raises(Exception, match=r"403|Forbidden|AccessDenied"):
        archive(target, bid)
    assert not proxy.requests("PutObject") and not proxy.requests("CreateMultipartUpload")


def test_restore_with_the_documented_policy_reads_an_sse_kms_archive(
    emu: Any, s3_client: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The restore operator needs only the README's restore policy (GetBucketLocation, GetObject),
    and Cloud 66's plain GET of the URL, authorized as the same identity, reads the object."""
    import requests

    from airflow_provider_c66.transfers.s3_to_cloud66 import S3ToCloud66ImportOperator

    target = bucket(s3_client)
    key = "cloud66/stack-1/mysql/app_db/2026/03/04/7/app_db.tar"
    s3_client.put_object(Bucket=target, Key=key, Body=b"archived bytes", ServerSideEncryption="aws:kms")
    policy = policy_for(target, "restore")
    policy.statements.append(({"kms:Decrypt"}, ["*"]))
    proxy.enforce(policy)
    connect(monkeypatch, proxy)
    S3ToCloud66ImportOperator(
        task_id="restore", s3_bucket=target, s3_key=key, stack_id="stack-1", group=1, db_type="mysql"
    ).execute({})
    (post,) = [r for r in emu.requests if r.method == "POST"]
    url = post.json["remote_url"]
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url
    assert requests.get(url, timeout=10).content == b"archived bytes"
    assert policy.denied == []


def test_the_restore_dags_description_reads_under_the_documented_policy(
    s3_client: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the restore example shows its approver is read with the README's restore policy alone.
    Without s3:ListBucket, AWS answers 403 (not 404) for the missing manifest beside an object this
    package did not write: that means "no manifest", not a failed run."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "example_dags" / "cloud66_restore_from_s3.py"
    spec = importlib.util.spec_from_file_location("restore_dag_strict", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    describe = module.describe_archive.function

    target = bucket(s3_client)
    ours, foreign = "cloud66/stack-1/mysql/app_db/2026/03/04/7/app_db.tar", "cloud66/imported/other.tar"
    s3_client.put_object(Bucket=target, Key=ours, Body=b"x" * 10)
    manifest = {"stack_id": "stack-1", "backup": {"id": 7, "db_type": "mysql", "database_name": "app_db"}}
    manifest["backup"]["backup_date_iso"] = "2026-03-04T05:06:07Z"
    s3_client.put_object(
        Bucket=target, Key=ours.rsplit("/", 1)[0] + "/manifest.json", Body=json.dumps(manifest)
    )
    s3_client.put_object(Bucket=target, Key=foreign, Body=b"y" * 3)
    policy = policy_for(target, "restore")
    proxy.enforce(policy)
    connect(monkeypatch, proxy)

    described = describe({"s3_bucket": target, "s3_key": ours})
    assert (described["size"], described["backup"]) == (
        10,
        "backup 7 of stack-1: mysql database app_db, taken 2026-03-04T05:06:07Z",
    )
    assert policy.denied == []
    described = describe({"s3_bucket": target, "s3_key": foreign})
    assert (described["size"], described["backup"]) == (
        3,
        "no manifest beside it: not an archive this package wrote",
    )
    assert policy.denied == [("GetObject", "s3:ListBucket")]  # the missing manifest: 403, as on AWS


# -- S3-compatible stores: checksums ---------------------------------------------------------------


def test_a_store_refusing_flexible_checksums_gets_content_md5_when_the_connection_says_so(
    emu: Any, s3_client: Any, s3_bucket: str, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R2 and B2 (2025): ``501 NotImplemented`` for ``x-amz-checksum-*``. With the connection's
    ``config_kwargs`` ``request_checksum_calculation=when_required`` no such header is sent and
    every body carries a Content-MD5 the store checks (it is also asked to require one)."""
    proxy.rule = first_of(refuse_flexible_checksums, require_content_md5)
    connect(
        monkeypatch,
        proxy,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    bid = emu.add_backup("stack-1", size=12 * MiB + 7, backup_date=DATE)
    small = emu.add_backup("stack-1", size=2048, backup_date=DATE)

    (uri,) = archive(s3_bucket, bid)
    (small_uri,) = archive(s3_bucket, small)

    objects = stored(s3_client, s3_bucket)
    assert objects[key_of(uri)] == archive_bytes(emu, bid)
    assert objects[key_of(small_uri)] == archive_bytes(emu, small)
    writes = [r for op in WRITES for r in proxy.requests(op)]
    assert len(writes) == 3 + 1 + 2 + 2, "3 parts, the small archive, 2 manifests, 2 catalogue records"
    assert all("content-md5" in r.headers for r in writes)
    refused = [op for op, outcome in proxy.operations() if outcome.startswith("answered")]
    assert refused == []
    assert not any(
        (name.startswith("x-amz-checksum-") and name != "x-amz-checksum-mode")
        or name == "x-amz-sdk-checksum-algorithm"
        for r in proxy.requests("CreateMultipartUpload") + writes
        for name in r.headers
    )


def test_by_default_such_a_store_fails_the_copy_cleanly(
    emu: Any, s3_client: Any, s3_bucket: str, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the setting, the 501 fails the task with the store's answer and nothing left in S3."""
    proxy.rule = refuse_flexible_checksums
    connect(monkeypatch, proxy)
    bid = emu.add_backup("stack-1", size=12 * MiB, backup_date=DATE)
    with pytest.raises(Exception, match="NotImplemented"):
        archive(s3_bucket, bid)
    assert stored(s3_client, s3_bucket) == {} and open_uploads(s3_client, s3_bucket) == []


# -- Object Lock -----------------------------------------------------------------------------------


@pytest.mark.parametrize("checksums", ["when_supported", "when_required"])
@pytest.mark.parametrize("size", [2048, 12 * MiB], ids=["single-put", "multipart"])
def test_archive_and_manifest_are_written_under_object_lock(
    emu: Any, s3_client: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch, checksums: str, size: int
) -> None:
    """AWS: writes with Object Lock parameters need Content-MD5 or an x-amz-checksum-* header (in
    every checksum mode); the lock must show on every object (moto drops it from multipart uploads,
    so the copy reads it back and sets it, with Content-MD5 for a store that refuses flexible
    checksums), and shows only to a caller allowed to read it. A re-run finds the archive complete."""
    target = bucket(s3_client, lock=True)
    policy = policy_for(target, "archive", "archive-lock")
    # A client told to send checksums only when required is one for a store that refuses them.
    strict = [refuse_flexible_checksums] if checksums == "when_required" else []
    proxy.enforce(policy, *strict, lock_writes_need_a_checksum)
    connect(monkeypatch, proxy, request_checksum_calculation=checksums)
    bid = emu.add_backup("stack-1", size=size, backup_date=DATE)
    before = datetime.now(UTC)

    uris = archive(
        target, bid, object_lock_mode="GOVERNANCE", object_lock_retain_days=3, object_lock_legal_hold=True
    )

    assert policy.denied == []
    keys = [key_of(uris[0]), key_of(uris[0]).rsplit("/", 1)[0] + "/manifest.json"]
    for key in keys:
        head = s3_client.head_object(Bucket=target, Key=key)
        assert head["ObjectLockMode"] == "GOVERNANCE", key
        assert head["ObjectLockLegalHoldStatus"] == "ON", key
        until = head["ObjectLockRetainUntilDate"]
        assert (
            before + timedelta(days=3) - timedelta(seconds=2)
            <= until
            <= before + timedelta(days=3, minutes=5)
        )
    assert stored(s3_client, target)[keys[0]] == archive_bytes(emu, bid)
    emu.clear_requests()
    assert archive(target, bid, object_lock_mode="GOVERNANCE", object_lock_retain_days=3) == uris
    assert [r for r in emu.requests if r.kind == "file"] == []


def test_object_lock_on_a_bucket_without_it_is_refused_before_any_upload(
    emu: Any, s3_client: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = bucket(s3_client, versioned=True)
    connect(monkeypatch, proxy)
    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE)
    with pytest.raises(Cloud66InputError) as info:
        archive(target, bid, object_lock_mode="COMPLIANCE", object_lock_retain_until="2099-01-01T00:00:00Z")
    assert info.value.field == "object_lock_mode"
    assert "Object Lock" in str(info.value)
    assert [op for op, _ in proxy.operations()] == ["GetObjectLockConfiguration"]


def test_a_store_that_ignores_object_lock_leaves_no_unprotected_object(
    emu: Any, s3_client: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that accepts lock parameters and applies none: the task fails and deletes its object."""
    target = bucket(s3_client, lock=True)

    def ignore_lock(request: ProxiedRequest) -> Any:
        if request.operation in ("PutObjectRetention", "PutObjectLegalHold"):
            return Answer(200, "OK", "ignored")  # says yes, does nothing
        return None

    proxy.rule = ignore_lock
    connect(monkeypatch, proxy)
    bid = emu.add_backup("stack-1", size=12 * MiB, backup_date=DATE)
    with pytest.raises(Exception, match="does not apply Object Lock"):
        archive(target, bid, object_lock_mode="GOVERNANCE", object_lock_retain_days=1)
    assert stored(s3_client, target) == {}
    assert open_uploads(s3_client, target) == []


@pytest.mark.parametrize("size", [2048, 12 * MiB], ids=["single-put", "multipart"])
def test_a_policy_that_cannot_read_the_lock_fails_naming_the_permission(
    emu: Any, s3_client: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """AWS hides an object's retention from HeadObject (and refuses GetObjectRetention) without
    ``s3:GetObjectRetention``: the copy cannot prove the lock, says which permission is missing, and
    writes no manifest (a locked version could not be deleted anyway)."""
    target = bucket(s3_client, lock=True)
    policy = IamPolicy(
        [
            *policy_for(target, "archive").statements,
            (["s3:GetBucketObjectLockConfiguration"], [f"arn:aws:s3:::{target}"]),
            (["s3:PutObjectRetention"], [f"arn:aws:s3:::{target}/*"]),  # write the lock, not read it
        ]
    )
    proxy.enforce(policy, lock_writes_need_a_checksum)
    connect(monkeypatch, proxy)
    bid = emu.add_backup("stack-1", size=size, backup_date=DATE)

    with pytest.raises(CopyError) as info:
        archive(target, bid, object_lock_mode="GOVERNANCE", object_lock_retain_days=1)
    assert "cannot check the Object Lock asked for: S3 shows it only to callers allowed " in str(info.value)
    assert "s3:GetObjectRetention, which these credentials are not" in str(info.value)
    assert ("GetObjectRetention", "s3:GetObjectRetention") in policy.denied
    assert [k for k in stored(s3_client, target) if k.endswith("manifest.json")] == []


def test_a_lock_call_the_store_refuses_leaves_no_unprotected_object(
    emu: Any, s3_client: Any, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock dropped from the upload, and PutObjectRetention refused (501): the object is deleted."""
    target = bucket(s3_client, lock=True)
    proxy.rule = lambda request: (
        Answer(501, "NotImplemented", "no") if request.operation == "PutObjectRetention" else None
    )
    connect(monkeypatch, proxy)
    bid = emu.add_backup("stack-1", size=12 * MiB, backup_date=DATE)
    with pytest.raises(CopyError, match="S3 PutObjectRetention failed"):
        archive(target, bid, object_lock_mode="GOVERNANCE", object_lock_retain_days=1)
    assert stored(s3_client, target) == {}
    assert open_uploads(s3_client, target) == []


# -- conditional writes ----------------------------------------------------------------------------


def test_writes_to_free_keys_are_conditional(
    emu: Any, s3_client: Any, s3_bucket: str, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS (since August 2024): PutObject and CompleteMultipartUpload take ``If-None-Match: *``."""
    connect(monkeypatch, proxy)
    archive(s3_bucket, emu.add_backup("stack-1", size=12 * MiB, backup_date=DATE))
    archive(s3_bucket, emu.add_backup("stack-1", size=2048, backup_date=DATE))
    final_writes = proxy.requests("CompleteMultipartUpload") + proxy.requests("PutObject")
    assert len(final_writes) == 6, "two archives, two manifests, two catalogue records"
    assert all(r.headers.get("if-none-match") == "*" for r in final_writes)


def test_another_runs_object_is_never_overwritten(
    emu: Any, s3_client: Any, s3_bucket: str, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another run writes the key while this copy's parts upload: Complete answers 412, this run's
    upload is aborted, and the other object stays exactly as it was."""
    connect(monkeypatch, proxy)
    bid = emu.add_backup("stack-1", size=12 * MiB, backup_date=DATE)

    def another_run_first(request: ProxiedRequest) -> Any:
        if request.operation == "CompleteMultipartUpload":
            s3_client.put_object(Bucket=s3_bucket, Key=request.key, Body=b"the other run's object")
        return None

    proxy.rule = another_run_first
    with pytest.raises(Exception, match="another run wrote"):
        archive(s3_bucket, bid)
    assert list(stored(s3_client, s3_bucket).values()) == [b"the other run's object"]
    assert open_uploads(s3_client, s3_bucket) == []


def test_another_runs_manifest_of_the_same_archive_is_adopted(
    emu: Any, s3_client: Any, s3_bucket: str, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrent run finished first and wrote the manifest: the 412 on this run's manifest is
    checked, the other run's archive is complete, and its URIs are returned."""
    connect(monkeypatch, proxy)
    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE)
    theirs: list[bytes] = []

    def another_run_first(request: ProxiedRequest) -> Any:
        if request.operation == "PutObject" and request.key.endswith("manifest.json") and not theirs:
            theirs.append(request.body.replace(b'"created_at": "', b'"created_at": "0'))
            s3_client.put_object(Bucket=s3_bucket, Key=request.key, Body=theirs[0])
        return None

    proxy.rule = another_run_first
    (uri,) = archive(s3_bucket, bid)
    objects = stored(s3_client, s3_bucket)
    assert objects[key_of(uri)] == archive_bytes(emu, bid)
    assert objects[key_of(uri).rsplit("/", 1)[0] + "/manifest.json"] == theirs[0], "theirs, not overwritten"
    manifest_writes = [
        o for r, o in proxy.seen if r.operation == "PutObject" and r.key.endswith("manifest.json")
    ]
    assert manifest_writes[-1] == "412"


def test_a_store_without_conditional_writes_gets_a_plain_write(
    emu: Any, s3_client: Any, s3_bucket: str, proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """A store that answers 501 to ``If-None-Match`` gets the same write without it, and a warning."""

    def no_conditions(request: ProxiedRequest) -> Any:
        if "if-none-match" in request.headers:
            return Answer(
                501, "NotImplemented", "A header you provided implies functionality that is not implemented"
            )
        return None

    proxy.rule = no_conditions
    connect(monkeypatch, proxy)
    bid = emu.add_backup("stack-1", size=12 * MiB, backup_date=DATE)
    (uri,) = archive(s3_bucket, bid)
    assert stored(s3_client, s3_bucket)[key_of(uri)] == archive_bytes(emu, bid)
    completes = [
        (bool(r.headers.get("if-none-match")), outcome)
        for r, outcome in proxy.seen
        if r.operation == "CompleteMultipartUpload"
    ]
    assert completes == [(True, "answered 501"), (False, "200")]
    assert "does not implement conditional writes" in capsys.readouterr().out


def test_discarding_a_version_without_delete_object_version_leaves_a_delete_marker() -> None:
    """AWS: DeleteObject with ``versionId`` is ``s3:DeleteObjectVersion``, which the README's policy
    does not grant; the copy's own bad version is then hidden by a delete marker instead."""
    import logging

    from botocore.exceptions import ClientError

    from airflow_provider_c66.transfers.copy.upload import _Key

    calls: list[dict[str, Any]] = []

    class Client:
        def delete_object(self, **kwargs: Any) -> dict[str, Any]:
            calls.append(kwargs)
            if "VersionId" in kwargs:
                raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "DeleteObject")
            return {"DeleteMarker": True}

    key = _Key(Client(), "b", "k", {}, if_none_match=False, log=logging.getLogger("test"))  # type: ignore[arg-type]
    key.discard("v1")
    assert calls == [{"Bucket": "b", "Key": "k", "VersionId": "v1"}, {"Bucket": "b", "Key": "k"}]
    calls.clear()
    key.discard("null")
    assert calls == [{"Bucket": "b", "Key": "k"}], "an unversioned bucket's object is deleted plainly"
