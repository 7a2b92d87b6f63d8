"""The catalogue: one one-line JSON record per complete archive, agreeing with what the lake holds.

Emulator and S3 server over HTTP; the archive operator runs as Airflow runs it (``execute``), and a
DAG run through ``dag.test()`` shows the record written by a real task.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_c66 import __version__
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from tests.helpers import ROOT, failing_on_call, keys
from tests.s3_fixtures import catalogue_key

MiB = 1024 * 1024
DATE = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


@pytest.fixture
def emu(cloud66_emulator_factory: Any) -> Any:
    return cloud66_emulator_factory(split_threshold=6 * MiB, split_size=5 * MiB + 123)


def archive(bucket: str, bid: int, **kwargs: Any) -> list[str]:
    kwargs.setdefault("asset_alias", None)
    op = Cloud66BackupToS3Operator(
        task_id="archive", stack_id="stack-1", backup_id=bid, s3_bucket=bucket, part_size=5 * MiB, **kwargs
    )
    result: list[str] = op.execute({})
    return result


def writes_of(s3_client: Any, key: str) -> list[str]:
    """Records each PutObject of ``key`` the client sends."""
    seen: list[str] = []

    def record(params: Any, **_: Any) -> None:
        if params.get("Key") == key:
            seen.append(key)

    s3_client.meta.events.register("provide-client-params.s3.PutObject", record)
    return seen


def test_an_archive_is_catalogued_with_what_s3_holds(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    bid = emu.add_backup("stack-1", size=12 * MiB + 7, backup_date=DATE, database_name="app_db")
    (uri,) = archive(s3_bucket, bid, storage_class="STANDARD_IA")

    key = f"cloud66/_catalog/stack-1/mysql/app_db/2026-03-04-{bid}.json"
    assert key == catalogue_key(emu, bid)
    stored = s3_client.get_object(Bucket=s3_bucket, Key=key)
    body = stored["Body"].read()
    assert body.endswith(b"\n") and body.count(b"\n") == 1, "one JSON line: the prefix reads as JSON Lines"
    record = json.loads(body)
    manifest_key = uri.split("/", 3)[3].rsplit("/", 1)[0] + "/manifest.json"
    manifest = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=manifest_key)["Body"].read())
    archived_at = record.pop("archived_at")
    assert datetime.fromisoformat(archived_at) > datetime.now(UTC) - timedelta(minutes=5)
    assert record == {
        "format": 1,
        "stack_id": "stack-1",
        "db_type": "mysql",
        "database_name": "app_db",
        "backup_id": bid,
        "backup_date": "2026-03-04T05:06:07Z",
        "bucket": s3_bucket,
        "manifest_key": manifest_key,
        "objects": [{"key": o["key"], "size": o["size"], "sha256": o["sha256"]} for o in manifest["objects"]],
        "total_size": 12 * MiB + 7,
        "storage_class": "STANDARD_IA",
        "lock_mode": None,
        "lock_retain_until": None,
        "package_version": __version__,
    }
    assert record["objects"][0]["sha256"] == emu.archive_sha256("stack-1", bid)
    assert stored["ContentType"] == "application/json"
    assert stored["Metadata"] == {"c66-stack-id": "stack-1", "c66-backup-id": str(bid)}


def test_a_rerun_writes_a_missing_record_and_never_rewrites_one(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    """The catalogue agrees with the lake: an archive completed without its record (an earlier
    version, or a try that died between the two) gets it from the next run, which copies nothing."""
    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE)
    archive(s3_bucket, bid)
    key = catalogue_key(emu, bid)
    first = s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    s3_client.delete_object(Bucket=s3_bucket, Key=key)
    emu.clear_requests()

    archive(s3_bucket, bid)
    assert [r for r in emu.requests if r.kind == "file"] == [], "the archive was complete: nothing copied"
    again = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    assert {**again, "archived_at": None} == {**json.loads(first), "archived_at": None}

    writes = writes_of(s3_client, key)
    archive(s3_bucket, bid)
    assert writes == [], "an existing record is left as it is"


def test_a_failed_record_write_fails_the_try_and_the_retry_writes_it(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import botocore.client

    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE)
    key = catalogue_key(emu, bid)
    real = botocore.client.BaseClient._make_api_call
    failing = failing_on_call("PutObject", 1)

    def api_call(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "PutObject" and params.get("Key") == key:
            failing()
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", api_call)
    with pytest.raises(Exception, match="injected failure"):
        archive(s3_bucket, bid)
    assert key not in keys(s3_client, s3_bucket)
    assert any(k.endswith("manifest.json") for k in keys(s3_client, s3_bucket)), "the archive is complete"

    emu.clear_requests()
    archive(s3_bucket, bid)
    assert key in keys(s3_client, s3_bucket)
    assert [r for r in emu.requests if r.kind == "file"] == []


def test_no_catalogue_when_asked_for_none(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE)
    archive(s3_bucket, bid, catalog_prefix=None)
    assert not any("_catalog" in k for k in keys(s3_client, s3_bucket))


def test_a_custom_catalogue_prefix(emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str) -> None:
    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE, database_name="app_db")
    archive(s3_bucket, bid, catalog_prefix="lake/index")
    assert f"lake/index/stack-1/mysql/app_db/2026-03-04-{bid}.json" in keys(s3_client, s3_bucket)


def test_records_of_several_archives_read_as_one_json_lines_table(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    """What DuckDB's read_json('s3://.../_catalog/**/*.json', format='newline_delimited') reads."""
    ids = [
        emu.add_backup("stack-1", size=2048, backup_date=DATE + timedelta(days=n), database_name=name)
        for n, name in enumerate(["app_db", "app_db", "audit"])
    ]
    for bid in ids:
        archive(s3_bucket, bid)
    listed = s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="cloud66/_catalog/")["Contents"]
    lines = b"".join(s3_client.get_object(Bucket=s3_bucket, Key=o["Key"])["Body"].read() for o in listed)
    rows = [json.loads(line) for line in lines.splitlines()]
    assert sorted((r["database_name"], r["backup_id"]) for r in rows) == sorted(
        zip(["app_db", "app_db", "audit"], ids, strict=True)
    )
    assert {tuple(sorted(r)) for r in rows} == {tuple(sorted(rows[0]))}, "every row has the same columns"


def test_the_readmes_duckdb_query_reads_the_catalogue(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str, tmp_path: Path
) -> None:
    """The query the README shows, run by DuckDB over the records copied out of S3 (the same files;
    DuckDB's S3 access, httpfs, is left out: it would reach beyond loopback to install)."""
    import duckdb

    ids = [
        emu.add_backup("stack-1", size=size, backup_date=DATE + timedelta(days=n), database_name=name)
        for n, (name, size) in enumerate([("app_db", 2048), ("app_db", 4096), ("audit", 1000)])
    ]
    for bid in ids:
        archive(s3_bucket, bid)
    for o in s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="cloud66/_catalog/")["Contents"]:
        local = tmp_path / o["Key"]
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(s3_client.get_object(Bucket=s3_bucket, Key=o["Key"])["Body"].read())
    readme = (ROOT / "README.md").read_text()
    query = readme.split("-- DuckDB", 1)[1].split("\n", 1)[1].split(";", 1)[0]
    assert "s3://my-data-lake/cloud66/_catalog/**/*.json" in query
    local_query = query.replace("s3://my-data-lake/cloud66/_catalog/", f"{tmp_path}/cloud66/_catalog/")

    rows = duckdb.sql(local_query).fetchall()
    assert [(stack, db, database, count) for stack, db, database, _, count, _ in rows] == [
        ("stack-1", "mysql", "app_db", 2),
        ("stack-1", "mysql", "audit", 1),
    ]
    newest_app_db = rows[0][3]
    assert str(newest_app_db).startswith("2026-03-05")
    assert rows[0][5] == pytest.approx((2048 + 4096) / 1e9)
