"""Cloud66BackupToS3Operator and S3ToCloud66ImportOperator: emulator and S3 server over HTTP, real Airflow."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import UTC, datetime

import pytest

from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from airflow_provider_c66.transfers.s3_to_cloud66 import S3ToCloud66ImportOperator
from tests.helpers import keys, open_uploads, read
from tests.s3_fixtures import catalogue_key

MiB = 1024 * 1024
DATE = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture
def emu(cloud66_emulator_factory):
    return cloud66_emulator_factory(split_threshold=6 * MiB, split_size=5 * MiB + 123)


def archive_bytes(emu, stack, bid) -> bytes:
    return b"".join(emu.iter_archive(stack, bid))


def make_op(bucket, bid, **kwargs):
    kwargs.setdefault("asset_alias", None)
    return Cloud66BackupToS3Operator(
        task_id="archive", stack_id="stack-1", backup_id=bid, s3_bucket=bucket, part_size=5 * MiB, **kwargs
    )


def test_dag_run_archives_split_parts_joined_byte_exact(emu, s3_client, s3_bucket, aws_connection, run_dag):
    from airflow.sdk import DAG

    bid = emu.add_backup("stack-1", size=12 * MiB + 7, backup_date=DATE, database_name="app_db")
    assert len(emu.file_ids("stack-1", bid)) == 3
    with DAG("archive_joined", schedule=None) as dag:
        Cloud66BackupToS3Operator(
            task_id="archive", stack_id="stack-1", backup_id=bid, s3_bucket=s3_bucket, part_size=5 * MiB
        )
    dagrun = run_dag(dag)
    assert dagrun.state == "success"

    prefix = f"cloud66/stack-1/mysql/app_db/2026/03/04/{bid}/"
    name = emu.file_names("stack-1", bid)[0].rsplit("-", 1)[0]
    catalogued = f"cloud66/_catalog/stack-1/mysql/app_db/2026-03-04-{bid}.json"
    assert keys(s3_client, s3_bucket) == sorted([prefix + name, prefix + "manifest.json", catalogued])
    data = read(s3_client, s3_bucket, prefix + name)
    assert data == archive_bytes(emu, "stack-1", bid)
    assert open_uploads(s3_client, s3_bucket) == []

    ti = dagrun.get_task_instance("archive")
    assert ti.state == "success"

    manifest = json.loads(read(s3_client, s3_bucket, prefix + "manifest.json"))
    assert manifest["stack_id"] == "stack-1"
    assert manifest["backup"]["id"] == bid
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() == emu.archive_sha256("stack-1", bid)
    assert manifest["total_size"] == 12 * MiB + 7
    assert [s["file_id"] for s in manifest["sources"]] == ["tar-aa", "tar-ab", "tar-ac"]
    assert [s["size"] for s in manifest["sources"]] == [
        5 * MiB + 123,
        5 * MiB + 123,
        12 * MiB + 7 - 2 * (5 * MiB + 123),
    ]
    (obj,) = manifest["objects"]
    assert obj["key"] == prefix + name and obj["size"] == len(data)
    assert obj["etag"] == s3_client.head_object(Bucket=s3_bucket, Key=prefix + name)["ETag"].strip('"')
    assert manifest["package_version"] == "0.1.0"


def test_not_joined_writes_one_object_per_file(emu, s3_client, s3_bucket, aws_connection):
    bid = emu.add_backup("stack-1", size=12 * MiB, backup_date=DATE)
    uris = make_op(s3_bucket, bid, join_parts=False, s3_key_prefix="lake/{backup_id}").execute({})
    names = emu.file_names("stack-1", bid)
    assert uris == [f"s3://{s3_bucket}/lake/{bid}/{n}" for n in names]
    for fid, name in zip(emu.file_ids("stack-1", bid), names, strict=True):
        assert read(s3_client, s3_bucket, f"lake/{bid}/{name}") == emu.file_bytes("stack-1", bid, fid)
    manifest = json.loads(read(s3_client, s3_bucket, f"lake/{bid}/manifest.json"))
    assert [o["key"] for o in manifest["objects"]] == [f"lake/{bid}/{n}" for n in names]


@pytest.mark.reliability(
    area="source",
    fault="a backup whose files hold no bytes, or that lists no files",
    outcome="retryable error, nothing completed",
)
def test_small_backups_and_never_an_empty_archive(emu, s3_client, s3_bucket, aws_connection):
    from airflow.providers.common.compat.sdk import AirflowException

    small = emu.add_backup("stack-1", size=1000, backup_date=DATE)
    empty = emu.add_backup("stack-1", size=0, backup_date=DATE)
    no_files = emu.add_backup("stack-1", size=1000, backup_date=DATE, has_files=False)
    (uri,) = make_op(s3_bucket, small, s3_key_prefix="s/{backup_id}/").execute({})
    assert read(s3_client, s3_bucket, uri.split("/", 3)[3]) == emu.file_bytes("stack-1", small, "tar")
    written = keys(s3_client, s3_bucket)
    with pytest.raises(AirflowException, match=f"Backup {empty} .* not settled: its files hold no bytes"):
        make_op(s3_bucket, empty, s3_key_prefix="e/{backup_id}/").execute({})
    with pytest.raises(AirflowException, match=f"Backup {no_files} .* lists no files"):
        make_op(s3_bucket, no_files, s3_key_prefix="n/{backup_id}/").execute({})
    assert keys(s3_client, s3_bucket) == written and open_uploads(s3_client, s3_bucket) == []


@pytest.mark.reliability(
    area="concurrency",
    fault="a re-run after the archive is complete",
    outcome="skipped, nothing copied",
)
def test_rerun_skips_a_complete_archive(emu, s3_client, s3_bucket, aws_connection):
    bid = emu.add_backup("stack-1", size=3 * MiB, backup_date=DATE)
    first = make_op(s3_bucket, bid).execute({})
    emu.clear_requests()
    second = make_op(s3_bucket, bid).execute({})
    assert second == first
    assert [r for r in emu.requests if r.kind == "file"] == [], "nothing is downloaded again"


def test_backup_dict_from_a_sensor_is_accepted(emu, s3_client, s3_bucket, aws_connection):
    from airflow_provider_c66.hooks.cloud66 import Cloud66Hook

    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE)
    record = Cloud66Hook().get_backup("stack-1", bid).to_dict()
    (uri,) = make_op(s3_bucket, record).execute({})
    assert uri.endswith(".tar") and f"/{bid}/" in uri


@pytest.mark.reliability(
    area="upload",
    fault="someone else's object on the archive's key",
    outcome="clear error",
)
def test_foreign_object_without_manifest_is_an_error_unless_replace(
    emu, s3_client, s3_bucket, aws_connection
):
    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE, database_name="app_db")
    prefix = f"cloud66/stack-1/mysql/app_db/2026/03/04/{bid}/"
    name = emu.file_names("stack-1", bid)[0]
    s3_client.put_object(Bucket=s3_bucket, Key=prefix + name, Body=b"someone else's")
    with pytest.raises(Exception, match="already exists and is not part of a complete archive"):
        make_op(s3_bucket, bid).execute({})
    assert read(s3_client, s3_bucket, prefix + name) == b"someone else's"
    make_op(s3_bucket, bid, replace=True).execute({})
    assert read(s3_client, s3_bucket, prefix + name) == emu.file_bytes("stack-1", bid, "tar")


@pytest.mark.parametrize("body", [b"not json", b'{"someone": "else"}'], ids=["unreadable", "another-json"])
def test_foreign_object_on_the_manifest_key_is_an_error_unless_replace(
    emu, s3_client, s3_bucket, aws_connection, body
):
    """The manifest's key is looked at again when its read found an object: someone else's object
    there (unreadable, or JSON of another kind) is refused like any other key's, before any copy."""
    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE, database_name="app_db")
    manifest = f"cloud66/stack-1/mysql/app_db/2026/03/04/{bid}/manifest.json"
    s3_client.put_object(Bucket=s3_bucket, Key=manifest, Body=body)
    with pytest.raises(Exception, match=f"s3://{s3_bucket}/{manifest} already exists and is not part"):
        make_op(s3_bucket, bid).execute({})
    assert keys(s3_client, s3_bucket) == [manifest] and read(s3_client, s3_bucket, manifest) == body
    assert open_uploads(s3_client, s3_bucket) == []
    make_op(s3_bucket, bid, replace=True).execute({})
    assert json.loads(read(s3_client, s3_bucket, manifest))["backup"]["id"] == bid


@pytest.mark.reliability(
    area="worker",
    fault="an object and an open upload left by an interrupted try",
    outcome="next run cleans up and completes",
)
def test_object_left_by_an_interrupted_try_is_replaced(emu, s3_client, s3_bucket, aws_connection):
    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE, database_name="app_db")
    prefix = f"cloud66/stack-1/mysql/app_db/2026/03/04/{bid}/"
    name = emu.file_names("stack-1", bid)[0]
    s3_client.put_object(
        Bucket=s3_bucket,
        Key=prefix + name,
        Body=b"half",
        Metadata={"c66-stack-id": "stack-1", "c66-backup-id": str(bid)},
    )
    stale = s3_client.create_multipart_upload(Bucket=s3_bucket, Key=prefix + name)["UploadId"]
    make_op(s3_bucket, bid).execute({})
    assert read(s3_client, s3_bucket, prefix + name) == emu.file_bytes("stack-1", bid, "tar")
    assert stale not in [u["UploadId"] for u in open_uploads(s3_client, s3_bucket)]
    assert open_uploads(s3_client, s3_bucket) == []


@pytest.mark.reliability(
    area="worker",
    fault="on_kill mid-copy (the operator in a thread)",
    outcome="aborted, nothing left",
)
def test_kill_mid_copy_leaves_nothing(emu, s3_client, s3_bucket, aws_connection):
    bid = emu.add_backup("stack-1", size=16 * MiB, backup_date=DATE)
    emu.slow_next(20, r"^/c66-backups/", 0.3)
    op = make_op(s3_bucket, bid)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            op.execute({})
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 20
    while not [r for r in emu.requests if r.kind == "file"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    op.on_kill()
    worker.join(30)
    assert not worker.is_alive()
    assert errors, "a killed copy raises"
    assert keys(s3_client, s3_bucket) == []
    assert open_uploads(s3_client, s3_bucket) == []


@pytest.mark.reliability(area="API", fault="a backup that failed in Cloud 66", outcome="clear error")
def test_failed_backup_is_not_archived(emu, s3_client, s3_bucket, aws_connection):
    bid = emu.add_backup("stack-1", size=2048, status=1, result="mysqldump: out of disk")
    with pytest.raises(Exception, match="mysqldump: out of disk"):
        make_op(s3_bucket, bid).execute({})
    assert keys(s3_client, s3_bucket) == []


@pytest.mark.reliability(
    area="bad input",
    fault="a database name '../../etc' in the key prefix",
    outcome="kept under the prefix",
)
def test_hostile_file_names_stay_under_the_prefix(emu, s3_client, s3_bucket, aws_connection):
    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE, database_name="../../etc")
    uris = make_op(s3_bucket, bid, s3_key_prefix="safe/{database_name}/{backup_id}/").execute({})
    catalogued = catalogue_key(emu, bid)
    assert catalogued == f"cloud66/_catalog/stack-1/mysql/_.._etc/2026-03-04-{bid}.json"
    stored = [k for k in keys(s3_client, s3_bucket) if k != catalogued]
    assert len(stored) == 2 and [u.split("/", 3)[3] for u in uris] == [
        k for k in stored if "manifest" not in k
    ]
    for key in stored:
        assert key.startswith(f"safe/_.._etc/{bid}/")
        assert ".." not in key.split("/")


def test_import_from_s3_presigns_an_existing_object(emu, s3_client, s3_bucket, aws_connection):
    s3_client.put_object(Bucket=s3_bucket, Key="a/b/db.tar", Body=b"x" * 10)
    op = S3ToCloud66ImportOperator(
        task_id="restore",
        s3_bucket=s3_bucket,
        s3_key="a/b/db.tar",
        stack_id="stack-1",
        group=2,
        db_type="mysql",
    )
    assert op.execute({}) == "Your external backup queued for upload"
    (post,) = [r for r in emu.requests if r.method == "POST"]
    assert post.json["group"] == 2 and post.json["db_type"] == "mysql"
    assert post.json["remote_url"].split("?")[0].endswith(f"/{s3_bucket}/a/b/db.tar")


def test_import_from_s3_refuses_a_missing_object_before_calling_cloud66(emu, s3_bucket, aws_connection):
    op = S3ToCloud66ImportOperator(
        task_id="restore",
        s3_bucket=s3_bucket,
        s3_key="missing.tar",
        stack_id="stack-1",
        group=2,
        db_type="mysql",
    )
    with pytest.raises(Exception, match="does not exist"):
        op.execute({})
    assert emu.requests == []


def test_written_objects_are_announced_as_assets(emu, s3_client, s3_bucket, aws_connection, run_dag):
    from airflow.models.asset import AssetAliasModel, AssetEvent
    from airflow.sdk import DAG
    from airflow.utils.session import create_session
    from sqlalchemy import select

    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE, database_name="app_db")
    with DAG("archive_assets", schedule=None) as dag:
        Cloud66BackupToS3Operator(task_id="archive", stack_id="stack-1", backup_id=bid, s3_bucket=s3_bucket)
    assert run_dag(dag).state == "success"
    name = emu.file_names("stack-1", bid)[0]
    uri = f"s3://{s3_bucket}/cloud66/stack-1/mysql/app_db/2026/03/04/{bid}/{name}"
    with create_session() as session:
        events = [e for e in session.scalars(select(AssetEvent)) if e.asset.uri == uri]
        assert len(events) == 1
        assert events[0].extra == {
            "stack_id": "stack-1",
            "backup_id": bid,
            "db_type": "mysql",
            "database_name": "app_db",
            "backup_date": "2026-03-04T05:06:07Z",
            "size": 2048,
            "sha256": emu.archive_sha256("stack-1", bid),
            "manifest_key": f"cloud66/stack-1/mysql/app_db/2026/03/04/{bid}/manifest.json",
        }
        alias = session.scalar(
            select(AssetAliasModel).where(AssetAliasModel.name == "cloud66-backup-archives")
        )
        assert alias is not None and uri in [a.uri for a in alias.assets]


def test_a_list_of_sensor_records_is_archived_one_after_the_other_without_reading_them_again(
    cloud66_emulator, s3_client, s3_bucket, aws_connection
):
    from airflow_provider_c66.models import Backup

    emu = cloud66_emulator
    first = emu.add_backup("stack-1", size=3000, backup_date=datetime(2026, 2, 1, tzinfo=UTC))
    second = emu.add_backup(
        "stack-1",
        db_type="redis",
        database_name="cache",
        size=2000,
        backup_date=datetime(2026, 2, 2, tzinfo=UTC),
    )
    records = [Backup.from_api(r).to_dict() for r in emu.backups("stack-1") if r["id"] in (first, second)]
    uris = Cloud66BackupToS3Operator(
        task_id="copy", stack_id="stack-1", backup_id=records, s3_bucket=s3_bucket, asset_alias=None
    ).execute({})
    assert len(uris) == 2
    for uri, bid in zip(uris, [r["id"] for r in records], strict=True):
        assert f"/{bid}/" in uri
        assert s3_client.get_object(Bucket=s3_bucket, Key=uri.split("/", 3)[3])["Body"].read() == b"".join(
            emu.iter_archive("stack-1", bid)
        )
    api = [r.path for r in emu.requests if r.kind == "api"]
    assert not any(p.endswith(f"/backups/{first}.json") or p.endswith(f"/backups/{second}.json") for p in api)

    # A dict that is not a whole record gives only its id: the record is read.
    emu.clear_requests()
    Cloud66BackupToS3Operator(
        task_id="copy", stack_id="stack-1", backup_id={"id": first}, s3_bucket=s3_bucket, asset_alias=None
    ).execute({})
    assert (
        next(r.path for r in emu.requests if r.kind == "api") == f"/api/3/stacks/stack-1/backups/{first}.json"
    )


def test_a_new_archive_makes_each_s3_call_once_and_never_reads_back_its_manifest(
    emu, s3_client, s3_bucket, s3_server, monkeypatch
):
    """The calls of a fresh multipart archive, in order: the manifest is read once, to find an earlier
    archive, and what this run wrote is checked by a HEAD, never read back."""
    from tests.s3_proxy import s3_proxy

    bid = emu.add_backup("stack-1", size=12 * MiB + 7, backup_date=DATE, database_name="app_db")
    with s3_proxy(s3_server) as proxy:
        connection = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": proxy.endpoint, "region_name": "us-east-1"},
        }
        monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
        (uri,) = make_op(s3_bucket, bid, s3_key_prefix="lake/{backup_id}/").execute({})
        seen = [(request.operation, request.key) for request, _ in proxy.seen]

    archive_key, manifest = uri.split("/", 3)[3], f"lake/{bid}/manifest.json"
    catalogued = catalogue_key(emu, bid)
    assert read(s3_client, s3_bucket, archive_key) == archive_bytes(emu, "stack-1", bid)
    parts = [call for call in seen if call[0] == "UploadPart"]
    assert parts == [("UploadPart", archive_key)] * 3
    assert [call for call in seen if call[0] != "UploadPart"] == [
        ("GetObject", manifest),  # an earlier archive? (404: the manifest's key is free)
        ("HeadObject", archive_key),  # is the archive's key free?
        ("ListMultipartUploads", ""),  # an upload an earlier try left, to resume
        ("CreateMultipartUpload", archive_key),
        ("CompleteMultipartUpload", archive_key),
        ("HeadObject", archive_key),  # the object is what was sent
        ("PutObject", manifest),
        ("HeadObject", manifest),
        ("ListMultipartUploads", ""),  # uploads left on the archive's keys by other runs
        ("HeadObject", catalogued),  # catalogued already?
        ("HeadObject", archive_key),  # its storage class and lock, as S3 holds them
        ("PutObject", catalogued),
        ("HeadObject", catalogued),
    ]
