"""The S3 layout: keys built from API-controlled text never escape the configured prefix."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.models import Backup, BackupStatus
from airflow_provider_c66.transfers import archive

BACKUP = Backup(
    id=42,
    db_type="postgresql",
    database_name="app db",
    backup_date=datetime(2026, 2, 3, 23, 59, tzinfo=UTC),
    status=BackupStatus.OK,
)


def test_default_prefix():
    assert archive.key_prefix(archive.DEFAULT_KEY_PREFIX, BACKUP, "stk") == (
        "cloud66/stk/postgresql/app_db/2026/02/03/42/"
    )


def test_prefix_gets_a_trailing_slash():
    assert archive.key_prefix("lake/{backup_id}", BACKUP, "stk") == "lake/42/"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("db.tar", "db.tar"),
        ("../../etc/passwd", "passwd"),
        ("a/b/c.tar-aa", "c.tar-aa"),
        ("..", "_"),
        ("x\x00y\n.tar", "x_y_.tar"),
        ("..\\..\\win.tar", "win.tar"),
        ("", "_"),
    ],
)
def test_object_names_from_the_api_are_made_safe(name, expected):
    assert archive.object_name(name) == expected


@pytest.mark.parametrize(
    "template",
    ["/abs/", "a/../b", "a//b", "./a", "a/{unknown}/", "a/{", "a\\b", "a\x01b", "x" * 701],
)
def test_hostile_prefixes_are_refused(template):
    with pytest.raises(Cloud66InputError) as info:
        archive.key_prefix(template, BACKUP, "stk")
    assert info.value.field == "s3_key_prefix"


def test_manifest_matches_only_the_same_archive():
    obj = archive.ArchivedObject("p/db.tar", 10, "etag", "00" * 32, (("tar", "db.tar", 10),))
    import json

    document = json.loads(archive.build_manifest("stk", BACKUP, [obj], joined=True))
    assert document["sha256"] == "00" * 32
    assert document["sources"] == [{"file_id": "tar", "name": "db.tar", "size": 10}]
    assert archive.manifest_matches(document, "stk", 42, ["p/db.tar"])
    assert not archive.manifest_matches(document, "stk", 43, ["p/db.tar"])
    assert not archive.manifest_matches(document, "other", 42, ["p/db.tar"])
    assert not archive.manifest_matches(document, "stk", 42, ["p/other.tar"])
    assert not archive.manifest_matches({"format": 1}, "stk", 42, ["p/db.tar"])


def test_asset_extra_carries_the_backup_the_objects_figures_and_the_manifest():
    backup = Backup(
        id=41,
        db_type="postgresql",
        database_name="ledger",
        backup_date=datetime(2026, 12, 5, 1, 2, 3, tzinfo=UTC),
        status=BackupStatus.OK,
    )
    manifest = {
        "objects": [
            {"key": "p/41/ledger.tar-aa", "size": 10, "sha256": "a" * 64},
            {"key": "p/41/ledger.tar-ab", "size": 3, "sha256": "b" * 64},
        ]
    }
    assert archive.asset_extra("stack-9", backup, "p/41/manifest.json", manifest, "p/41/ledger.tar-ab") == {
        "stack_id": "stack-9",
        "backup_id": 41,
        "db_type": "postgresql",
        "database_name": "ledger",
        "backup_date": "2026-12-05T01:02:03Z",
        "size": 3,
        "sha256": "b" * 64,
        "manifest_key": "p/41/manifest.json",
    }
    unlisted = archive.asset_extra("stack-9", backup, "p/41/manifest.json", {}, "p/41/other")
    assert (unlisted["size"], unlisted["sha256"], unlisted["manifest_key"]) == (
        None,
        None,
        "p/41/manifest.json",
    )
