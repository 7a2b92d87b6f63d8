"""Cloud66ArchivePruneOperator against a real S3-protocol server (moto by default), over HTTP.

The lake is written as the archive operator writes it: objects and a manifest (``build_manifest``)
carrying the ``c66-stack-id``/``c66-backup-id`` metadata, and a catalogue record per archive
(``catalog_key``/``build_catalog_record``). Each test compares the exact keys left in the bucket.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_provider_c66.models import Backup, BackupStatus
from airflow_provider_c66.transfers import archive
from airflow_provider_c66.transfers.archive import ArchivedObject
from airflow_provider_c66.transfers.prune_archives import Cloud66ArchivePruneOperator
from tests.s3_proxy import S3Proxy, s3_proxy
from tests.s3_rules import IamPolicy, policy_for

STACK = "stack-1"
CATALOG = archive.DEFAULT_CATALOG_PREFIX
reliability = pytest.mark.reliability
NO_LOCK = pytest.mark.s3_unsupported(
    "nanio", reason="nanio has no Object Lock (a bucket created with it enabled has no lock configuration)"
)


@dataclass(frozen=True)
class Written:
    """One archive as the archive operator leaves it."""

    backup: Backup
    manifest: str
    objects: tuple[str, ...]
    catalog: str

    @property
    def keys(self) -> set[str]:
        return {*self.objects, self.manifest}


def backup(bid: int, date: str, db_type: str = "mysql", database: str = "shop") -> Backup:
    return Backup(
        id=bid,
        db_type=db_type,
        database_name=database,
        backup_date=datetime.fromisoformat(date).replace(tzinfo=UTC),
        status=BackupStatus.OK,
    )


def put_archive(
    s3_client: Any,
    bucket: str,
    item: Backup,
    *,
    names: tuple[str, ...] = ("shop.tar",),
    stack: str = STACK,
    lock: dict[str, Any] | None = None,
    metadata: bool = True,
) -> Written:
    """Objects, then the manifest, then the catalogue record, as Cloud66BackupToS3Operator writes them."""
    prefix = archive.key_prefix(archive.DEFAULT_KEY_PREFIX, item, stack)
    meta = {"Metadata": {archive.META_STACK: stack, archive.META_BACKUP: str(item.id)}} if metadata else {}
    objects = []
    for name in names:
        body = f"{stack}/{item.id}/{name}\n".encode() * 64
        s3_client.put_object(Bucket=bucket, Key=prefix + name, Body=body, **meta, **(lock or {}))
        objects.append(
            ArchivedObject(
                key=prefix + name,
                size=len(body),
                etag="",
                sha256=hashlib.sha256(body).hexdigest(),
                sources=((name, name, len(body)),),
            )
        )
    manifest = prefix + archive.MANIFEST_NAME
    s3_client.put_object(
        Bucket=bucket,
        Key=manifest,
        Body=archive.build_manifest(stack, item, objects, joined=len(names) == 1),
        ContentType="application/json",
        **meta,
        **(lock or {}),
    )
    catalog = archive.catalog_key(CATALOG, stack, item)
    s3_client.put_object(
        Bucket=bucket,
        Key=catalog,
        Body=archive.build_catalog_record(
            stack,
            item,
            bucket,
            manifest,
            objects,
            storage_class="STANDARD",
            lock_mode=None,
            lock_retain_until=None,
        ),
        ContentType="application/json",
        **meta,
    )
    return Written(item, manifest, tuple(o.key for o in objects), catalog)


def listing(s3_client: Any, bucket: str) -> set[str]:
    keys: set[str] = set()
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys |= {o["Key"] for o in page.get("Contents", [])}
    return keys


def prune(bucket: str, **kwargs: Any) -> dict[str, Any]:
    result: dict[str, Any] = Cloud66ArchivePruneOperator(task_id="prune", s3_bucket=bucket, **kwargs).execute(
        {}
    )
    return result


def by_backup(rows: list[dict[str, Any]]) -> dict[int, list[str]]:
    return {row["backup_id"]: row["reasons"] for row in rows}


def lock_bucket(s3_client: Any) -> str:
    name = f"locked-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


# Two years of one database, a second database, and the policy the lake is pruned with.
SHOP = {
    101: "2026-01-10T04:00",
    102: "2026-06-10T04:00",
    103: "2026-12-31T04:00",
    104: "2027-03-01T04:00",  # one object per file (join_parts=False)
    105: "2027-03-15T04:00",
    106: "2027-11-30T04:00",
    107: "2027-12-01T04:00",  # two archives on one day: 108 is the day's newest
    108: "2027-12-01T16:00",
}
CACHE = {201: "2026-05-05T12:00", 202: "2027-05-05T12:00", 203: "2027-05-05T01:00"}
POLICY = {"keep_daily": 2, "keep_monthly": 3, "keep_yearly": 2}
KEPT = {
    108: ["daily 2027-12-01", "monthly 2027-12", "yearly 2027"],
    106: ["daily 2027-11-30", "monthly 2027-11"],
    105: ["monthly 2027-03"],
    103: ["yearly 2026"],
    202: ["daily 2027-05-05", "monthly 2027-05", "yearly 2027"],
    201: ["daily 2026-05-05", "monthly 2026-05", "yearly 2026"],
}
DELETED = [107, 104, 102, 101, 203]  # (stack-1, mysql, shop) first, each group newest first


def write_lake(s3_client: Any, bucket: str) -> dict[int, Written]:
    lake = {}
    for bid, date in SHOP.items():
        names = ("shop.tar-aa", "shop.tar-ab") if bid == 104 else ("shop.tar",)
        lake[bid] = put_archive(s3_client, bucket, backup(bid, date), names=names)
    for bid, date in CACHE.items():
        lake[bid] = put_archive(s3_client, bucket, backup(bid, date, "redis", "cache"), names=("cache.rdb",))
    return lake


def expected_after(
    lake: dict[int, Written], gone: list[int], extra: frozenset[str] = frozenset()
) -> set[str]:
    """Every key of the lake's archives and catalogue records but those of ``gone``, and ``extra``."""
    return {key for bid, w in lake.items() if bid not in gone for key in (*w.keys, w.catalog)} | set(extra)


# --- the lake -------------------------------------------------------------------------------------
def test_prune_keeps_exactly_what_the_rules_name_and_deletes_the_rest_with_their_catalogue_records(
    s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    lake = write_lake(s3_client, s3_bucket)
    s3_client.put_object(Bucket=s3_bucket, Key="cloud66/README.txt", Body=b"not an archive")

    result = prune(s3_bucket, **POLICY)

    assert listing(s3_client, s3_bucket) == expected_after(lake, DELETED, frozenset({"cloud66/README.txt"}))
    for bid in DELETED:
        assert not (listing(s3_client, s3_bucket) & {*lake[bid].keys, lake[bid].catalog})
    assert result["dry_run"] is False
    assert by_backup(result["kept"]) == KEPT
    assert [row["backup_id"] for row in result["deleted"]] == DELETED
    assert result["locked"] == [] and result["skipped"] == []
    assert result["kept"][0] == {
        "manifest": lake[108].manifest,
        "stack_id": STACK,
        "db_type": "mysql",
        "database": "shop",
        "backup_id": 108,
        "backup_date": "2027-12-01T16:00:00Z",
        "reasons": KEPT[108],
    }
    assert result["deleted"][1] == {
        "manifest": lake[104].manifest,
        "stack_id": STACK,
        "db_type": "mysql",
        "database": "shop",
        "backup_id": 104,
        "backup_date": "2027-03-01T04:00:00Z",
        "reasons": [],
        "objects": list(lake[104].objects),
        "catalog": lake[104].catalog,
    }
    assert lake[104].manifest == "cloud66/stack-1/mysql/shop/2027/03/01/104/manifest.json"
    assert lake[104].catalog == "cloud66/_catalog/stack-1/mysql/shop/2027-03-01-104.json"
    json.dumps(result)  # an XCom value

    # A second run finds nothing more to delete.
    again = prune(s3_bucket, **POLICY)
    assert by_backup(again["kept"]) == KEPT and again["deleted"] == []
    assert listing(s3_client, s3_bucket) == expected_after(lake, DELETED, frozenset({"cloud66/README.txt"}))


def test_a_dry_run_deletes_nothing_and_lists_what_would_go(
    s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    lake = write_lake(s3_client, s3_bucket)
    before = listing(s3_client, s3_bucket)

    result = prune(s3_bucket, dry_run=True, **POLICY)

    assert listing(s3_client, s3_bucket) == before
    assert result["dry_run"] is True
    assert by_backup(result["kept"]) == KEPT
    assert [(r["backup_id"], r["manifest"], r["catalog"]) for r in result["deleted"]] == [
        (bid, lake[bid].manifest, lake[bid].catalog) for bid in DELETED
    ]
    # The same run for real deletes exactly what the dry run listed.
    real = prune(s3_bucket, **POLICY)
    assert [r["manifest"] for r in real["deleted"]] == [r["manifest"] for r in result["deleted"]]


def test_without_a_catalogue_the_catalogue_prefix_is_left_alone(
    s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    lake = write_lake(s3_client, s3_bucket)
    result = prune(s3_bucket, catalog_prefix=None, **POLICY)
    assert [row["catalog"] for row in result["deleted"]] == [None] * len(DELETED)
    assert listing(s3_client, s3_bucket) == expected_after(
        lake, DELETED, frozenset(lake[b].catalog for b in DELETED)
    )


def test_a_narrower_prefix_prunes_only_under_it(s3_client: Any, s3_bucket: str, aws_connection: str) -> None:
    lake = write_lake(s3_client, s3_bucket)
    result = prune(s3_bucket, s3_prefix="cloud66/stack-1/redis", **POLICY)
    assert [row["backup_id"] for row in result["deleted"]] == [203]
    assert by_backup(result["kept"]) == {201: KEPT[201], 202: KEPT[202]}
    assert listing(s3_client, s3_bucket) == expected_after(lake, [203])


# --- what is not ours, or is locked ---------------------------------------------------------------
@reliability(
    area="prune",
    fault="archives the package did not write under the prefix: no metadata, another backup's metadata on an "
    "object, a foreign or unreadable manifest, a manifest listing keys outside its prefix",
    outcome="left in place and reported",
)
def test_what_this_package_did_not_write_is_skipped_and_never_touched(
    s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    newest = put_archive(s3_client, s3_bucket, backup(9, "2027-06-01T00:00"))
    bare = put_archive(s3_client, s3_bucket, backup(1, "2026-01-01T00:00"), metadata=False)
    mixed = put_archive(s3_client, s3_bucket, backup(2, "2026-02-01T00:00"))
    s3_client.put_object(  # an object of this archive replaced by another backup's
        Bucket=s3_bucket,
        Key=mixed.objects[0],
        Body=b"other",
        Metadata={archive.META_STACK: STACK, archive.META_BACKUP: "77"},
    )
    foreign = "cloud66/other-tool/2026/manifest.json"
    s3_client.put_object(Bucket=s3_bucket, Key=foreign, Body=json.dumps({"format": 1, "files": []}).encode())
    s3_client.put_object(Bucket=s3_bucket, Key="cloud66/other-tool/2026/data.bin", Body=b"x")
    broken = "cloud66/broken/manifest.json"
    s3_client.put_object(Bucket=s3_bucket, Key=broken, Body=b"{not json")
    # A manifest of ours (with matching metadata) that names an object elsewhere in the bucket.
    outside = put_archive(s3_client, s3_bucket, backup(3, "2026-03-01T00:00"))
    document = json.loads(s3_client.get_object(Bucket=s3_bucket, Key=outside.manifest)["Body"].read())
    document["objects"][0]["key"] = "cloud66/elsewhere/data.tar"
    s3_client.put_object(
        Bucket=s3_bucket,
        Key=outside.manifest,
        Body=json.dumps(document).encode(),
        Metadata={archive.META_STACK: STACK, archive.META_BACKUP: "3"},
    )
    s3_client.put_object(Bucket=s3_bucket, Key="cloud66/elsewhere/data.tar", Body=b"someone's")
    before = listing(s3_client, s3_bucket)

    result = prune(s3_bucket, keep_last=1)

    assert listing(s3_client, s3_bucket) == before, "nothing was deleted"
    assert by_backup(result["kept"]) == {9: ["last 1"]}
    assert result["deleted"] == [] and result["locked"] == []
    assert sorted(result["skipped"], key=lambda s: s["key"]) == sorted(
        [
            {
                "key": bare.manifest,
                "why": "the manifest carries no c66-stack-id/c66-backup-id metadata: not written by this package",
            },
            {
                "key": mixed.manifest,
                "why": f"its object {mixed.objects[0]} carries the metadata of stack 'stack-1' backup '77', "
                "not of the manifest's stack 'stack-1' backup 2",
            },
            {
                "key": foreign,
                "why": "not a manifest this package writes (package None, format 1)",
            },
            {"key": broken, "why": "not a JSON object: not a manifest this package writes"},
            {
                "key": outside.manifest,
                "why": "the manifest lists 'cloud66/elsewhere/data.tar', which is not beside it: not an "
                "archive this package writes",
            },
        ],
        key=lambda s: s["key"],
    )
    assert newest.manifest in before


@NO_LOCK
@reliability(
    area="prune",
    fault="an archive no rule keeps under Object Lock (GOVERNANCE retention, or a legal hold on its manifest)",
    outcome="left in place and reported",
)
def test_a_locked_archive_is_left_whole_and_reported(s3_client: Any, aws_connection: str) -> None:
    bucket = lock_bucket(s3_client)
    until = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    governed = put_archive(
        s3_client,
        bucket,
        backup(1, "2026-01-01T00:00"),
        lock={"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until},
    )
    held = put_archive(s3_client, bucket, backup(2, "2026-02-01T00:00"))
    s3_client.put_object_legal_hold(Bucket=bucket, Key=held.manifest, LegalHold={"Status": "ON"})
    plain = put_archive(s3_client, bucket, backup(3, "2026-03-01T00:00"))
    newest = put_archive(s3_client, bucket, backup(4, "2026-04-01T00:00"))

    result = prune(bucket, keep_last=1)

    stamp = until.isoformat().replace("+00:00", "Z")
    assert [(r["backup_id"], r["locks"]) for r in result["locked"]] == [
        (2, [f"{held.manifest}: legal hold ON"]),
        (
            1,
            [
                f"{governed.manifest}: GOVERNANCE retention until {stamp}",
                f"{governed.objects[0]}: GOVERNANCE retention until {stamp}",
            ],
        ),
    ]
    assert [r["backup_id"] for r in result["deleted"]] == [3]
    assert by_backup(result["kept"]) == {4: ["last 1"]}
    # The locked archives and their catalogue records are all there; the plain one is gone.
    assert listing(s3_client, bucket) == {
        *governed.keys,
        governed.catalog,
        *held.keys,
        held.catalog,
        *newest.keys,
        newest.catalog,
    }
    # The bucket is versioned (Object Lock needs it): the deletion left delete markers, no version
    # was deleted, and the noncurrent versions wait for a lifecycle rule.
    versions = s3_client.list_object_versions(Bucket=bucket, Prefix=plain.manifest[: -len("manifest.json")])
    assert {v["Key"] for v in versions.get("Versions", [])} == plain.keys
    assert {m["Key"] for m in versions.get("DeleteMarkers", [])} == plain.keys
    s3_client.put_object_legal_hold(Bucket=bucket, Key=held.manifest, LegalHold={"Status": "OFF"})


@NO_LOCK
def test_with_the_readme_policy_a_lock_is_seen_and_without_it_nothing_is_deleted(
    s3_server: str, s3_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS shows an object's lock only to callers allowed s3:GetObjectRetention/GetObjectLegalHold:
    with the README's prune policy the locked archive is recognised; without the permission the
    prune fails naming it before deleting anything (a plain DeleteObject would hide a locked one)."""
    bucket = lock_bucket(s3_client)
    until = datetime.now(UTC) + timedelta(days=1)
    locked = put_archive(
        s3_client,
        bucket,
        backup(1, "2026-01-01T00:00"),
        lock={"ObjectLockMode": "GOVERNANCE", "ObjectLockRetainUntilDate": until},
    )
    plain = put_archive(s3_client, bucket, backup(2, "2026-02-01T00:00"))
    newest = put_archive(s3_client, bucket, backup(3, "2026-03-01T00:00"))
    before = listing(s3_client, bucket)
    documented = policy_for(bucket, "prune")
    reduced = IamPolicy(
        [(actions - {"s3:GetObjectRetention"}, resources) for actions, resources in documented.statements]
    )
    with s3_proxy(s3_server) as proxy:
        _connect(monkeypatch, proxy)
        proxy.enforce(reduced)
        with pytest.raises(
            Exception, match=r"allowed s3:GetObjectRetention, which these credentials are not"
        ):
            prune(bucket, keep_last=1)
        assert listing(s3_client, bucket) == before
        assert [op for op, _ in proxy.operations()].count("DeleteObject") == 0

        proxy.enforce(documented)
        result = prune(bucket, keep_last=1)
    assert documented.denied == []
    assert [r["backup_id"] for r in result["locked"]] == [1]
    assert [r["backup_id"] for r in result["deleted"]] == [2]
    assert listing(s3_client, bucket) == {*locked.keys, locked.catalog, *newest.keys, newest.catalog}
    assert plain.manifest not in listing(s3_client, bucket)


def _connect(monkeypatch: pytest.MonkeyPatch, proxy: S3Proxy) -> None:
    extra = {"endpoint_url": proxy.endpoint, "region_name": "us-east-1"}
    connection = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))


# --- faults ---------------------------------------------------------------------------------------
@reliability(
    area="prune",
    fault="S3 fails a manifest's DeleteObject mid-prune (after the catalogue record and the objects went)",
    outcome="next run cleans up and completes",
)
def test_an_interrupted_prune_leaves_the_manifest_and_a_rerun_finishes(
    s3_client: Any, s3_bucket: str, aws_connection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.awsrequest import AWSResponse

    first = put_archive(s3_client, s3_bucket, backup(1, "2026-01-01T00:00"), names=("a.tar-aa", "a.tar-ab"))
    second = put_archive(s3_client, s3_bucket, backup(2, "2026-02-01T00:00"))
    newest = put_archive(s3_client, s3_bucket, backup(3, "2026-03-01T00:00"))
    failures: list[str] = []

    def fail_a_manifest_once(params: dict[str, Any], **_: Any) -> Any:
        if failures or not params["url_path"].endswith("/manifest.json"):
            return None
        failures.append(params["url_path"])
        parsed = {
            "Error": {"Code": "InternalError", "Message": "We encountered an internal error."},
            "ResponseMetadata": {"HTTPStatusCode": 500},
        }
        return AWSResponse(params["url"], 500, {}, None), parsed

    original = Cloud66ArchivePruneOperator._client

    def client(self: Cloud66ArchivePruneOperator) -> Any:
        made = original(self)
        made.meta.events.register("before-call.s3.DeleteObject", fail_a_manifest_once)
        return made

    monkeypatch.setattr(Cloud66ArchivePruneOperator, "_client", client)
    with pytest.raises(Exception, match="Pruning stopped while deleting") as info:
        prune(s3_bucket, keep_last=1)
    message = str(info.value)
    assert f"s3://{s3_bucket}/{second.manifest} could not be deleted" in message
    assert f"deleted before it: {second.catalog}, {second.objects[0]}" in message
    assert "the next run of the prune finishes it" in message
    # Newest first: the second archive lost its record and object, not its manifest; the first is whole.
    assert listing(s3_client, s3_bucket) == {
        second.manifest,
        *first.keys,
        first.catalog,
        *newest.keys,
        newest.catalog,
    }

    result = prune(s3_bucket, keep_last=1)

    assert [(r["backup_id"], r["catalog"]) for r in result["deleted"]] == [(2, None), (1, first.catalog)]
    assert listing(s3_client, s3_bucket) == {*newest.keys, newest.catalog}
    assert len(failures) == 1


@reliability(
    area="prune",
    fault="more manifests under the prefix than max_archives",
    outcome="clear error",
)
def test_more_archives_than_max_archives_fails_before_deleting_anything(
    s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    for bid in (1, 2, 3):
        put_archive(s3_client, s3_bucket, backup(bid, f"2026-0{bid}-01T00:00"))
    before = listing(s3_client, s3_bucket)
    with pytest.raises(Exception, match="holds more than max_archives=2 manifests; nothing was deleted"):
        prune(s3_bucket, keep_last=1, max_archives=2)
    assert listing(s3_client, s3_bucket) == before
    assert [r["backup_id"] for r in prune(s3_bucket, keep_last=1, max_archives=3)["deleted"]] == [2, 1]


def test_listing_is_paged(
    s3_client: Any, s3_bucket: str, aws_connection: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every page is read (the server's pages are made small here)."""
    written = [
        put_archive(s3_client, s3_bucket, backup(bid, f"2026-01-{bid:02d}T00:00")) for bid in range(1, 6)
    ]
    calls: list[dict[str, Any]] = []
    original = Cloud66ArchivePruneOperator._client

    def client(self: Cloud66ArchivePruneOperator) -> Any:
        made = original(self)
        listed = made.list_objects_v2

        def small_pages(**kwargs: Any) -> Any:
            calls.append(kwargs)
            return listed(**kwargs, MaxKeys=3)

        made.list_objects_v2 = small_pages
        return made

    monkeypatch.setattr(Cloud66ArchivePruneOperator, "_client", client)
    result = prune(s3_bucket, keep_last=2)
    assert len(calls) >= 5  # 15 objects under cloud66/, 3 a page
    assert [r["backup_id"] for r in result["deleted"]] == [3, 2, 1]
    assert listing(s3_client, s3_bucket) == {k for w in written[3:] for k in (*w.keys, w.catalog)}


# --- Airflow --------------------------------------------------------------------------------------
def test_prune_runs_in_a_dag_and_its_xcom_is_the_report(
    s3_client: Any, s3_bucket: str, aws_connection: str, run_dag: Any
) -> None:
    from airflow.sdk import DAG

    from tests.helpers import xcom_value

    lake = write_lake(s3_client, s3_bucket)
    with DAG("prune_archives", schedule=None, params={"keep": 2}) as dag:
        Cloud66ArchivePruneOperator(
            task_id="prune",
            s3_bucket=s3_bucket,
            keep_daily="{{ params.keep }}",
            keep_monthly=3,
            keep_yearly=2,
        )
    dagrun = run_dag(dag)

    assert dagrun.state == "success"
    report = xcom_value(dagrun, "prune")
    assert by_backup(report["kept"]) == KEPT
    assert [row["backup_id"] for row in report["deleted"]] == DELETED
    assert listing(s3_client, s3_bucket) == expected_after(lake, DELETED)


def test_template_fields_cover_every_argument() -> None:
    op = Cloud66ArchivePruneOperator(task_id="p", s3_bucket="b")
    assert set(op.template_fields) == {
        "s3_bucket",
        "s3_prefix",
        "keep_last",
        "keep_daily",
        "keep_weekly",
        "keep_monthly",
        "keep_yearly",
        "dry_run",
        "catalog_prefix",
        "aws_conn_id",
        "max_archives",
    }
