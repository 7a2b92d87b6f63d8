"""Records: one parser per shape, tolerant of extras, clear about malformed input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from airflow_provider_c66.exceptions import Cloud66ResponseError
from airflow_provider_c66.models import Backup, BackupFile, BackupStatus, RestoreStatus, VerifyStatus

REFERENCE_RECORD = {
    "id": 4,
    "server_uid": "e63e859d5ab72b0bcf14321f0ffb013d",
    "db_type": "mysql",
    "database_name": "test-db",
    "file_base": "",
    "backup_date_iso": "2014-09-01T19:00:33Z",
    "backup_status": 0,
    "backup_result": "",
    "restore_status": 0,
    "restore_result": None,
    "created_at_iso": "2014-09-01T19:00:33Z",
    "updated_at_iso": "2014-09-01T19:00:33Z",
    "verify_status": 0,
    "verify_result": None,
    "storage_path": "2aad/backups/3c65/mysql/test_db_11/2014.09.01.19.00.31",
    "skip_tables": "",
    "backup_size": 0,
}


def test_reference_record_parses_to_typed_fields():
    backup = Backup.from_api(REFERENCE_RECORD)
    assert backup.id == 4
    assert backup.db_type == "mysql"
    assert backup.backup_date == datetime(2014, 9, 1, 19, 0, 33, tzinfo=UTC)
    assert backup.status is BackupStatus.OK and backup.succeeded and not backup.failed
    assert backup.restore_status is RestoreStatus.NOT_RESTORED
    assert backup.verify_status is VerifyStatus.NOT_VERIFIED
    assert backup.logical_backup is None


def test_to_dict_is_json_and_round_trips():
    backup = Backup.from_api({**REFERENCE_RECORD, "logical_backup": True, "group": 7})
    text = json.dumps(backup.to_dict())
    assert Backup.from_dict(json.loads(text)) == backup


def test_unknown_fields_and_unknown_enum_values_are_tolerated():
    backup = Backup.from_api(
        {**REFERENCE_RECORD, "brand_new": {"x": 1}, "backup_status": 7, "verify_status": 9}
    )
    assert backup.status is BackupStatus.UNKNOWN
    assert not backup.status.is_terminal
    assert backup.verify_status is VerifyStatus.UNKNOWN


def test_missing_optional_fields_default():
    backup = Backup.from_api(
        {"id": 9, "db_type": "redis", "backup_date_iso": "2024-01-02T03:04:05+02:00", "backup_status": 1}
    )
    assert backup.backup_date == datetime(2024, 1, 2, 1, 4, 5, tzinfo=UTC)
    assert backup.failed and backup.result == "" and backup.backup_size == 0 and backup.created_at is None


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([], "expected a JSON object, got list"),
        ({**REFERENCE_RECORD, "id": None}, "field 'id' is missing"),
        ({**REFERENCE_RECORD, "id": "abc"}, "field 'id' has an unexpected value"),
        ({**REFERENCE_RECORD, "id": -3}, "field 'id' must be a positive integer"),
        ({**REFERENCE_RECORD, "backup_status": True}, "field 'backup_status' has an unexpected value"),
        (
            {**REFERENCE_RECORD, "backup_date_iso": "yesterday"},
            "field 'backup_date_iso' has an unexpected value",
        ),
        (
            {k: v for k, v in REFERENCE_RECORD.items() if k not in ("backup_date_iso", "created_at_iso")},
            "is missing",
        ),
        ({**REFERENCE_RECORD, "db_type": ["mysql"]}, "field 'db_type' has an unexpected value"),
        ({**REFERENCE_RECORD, "backup_size": "12MB"}, "field 'backup_size' has an unexpected value"),
    ],
)
@pytest.mark.reliability(
    area="API",
    fault="backup records with missing or wrongly-typed fields",
    outcome="clear error",
)
def test_malformed_records_raise_a_clear_error(record, message):
    with pytest.raises(Cloud66ResponseError, match="malformed backup record") as info:
        Backup.from_api(record)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("raw", "suffix", "archive"),
    [
        ({"id": "tar", "name": "test_db_11.tar"}, "", "test_db_11.tar"),
        ({"id": "tar-aa", "name": "test_db_11.tar-aa"}, "aa", "test_db_11.tar"),
        ({"id": "tar-ab", "name": "test_db_11.tar.ab"}, "ab", "test_db_11.tar"),
        ({"id": "x1", "name": "db.tar.gz.ac"}, "ac", "db.tar.gz"),
        ({"id": "tar-aa"}, "aa", "tar"),
    ],
)
def test_backup_file_part_suffix_and_archive_name(raw, suffix, archive):
    item = BackupFile.from_api(raw)
    assert item.part_suffix == suffix
    assert item.archive_name == archive


def test_backup_files_sort_in_concatenation_order():
    ids = ["tar-ab", "tar-zz", "tar-aaa", "tar-aa", "tar-ba"]
    files = sorted((BackupFile.from_api({"id": i, "name": f"db.{i}"}) for i in ids), key=lambda f: f.sort_key)
    assert [f.id for f in files] == ["tar-aa", "tar-ab", "tar-ba", "tar-zz", "tar-aaa"]


@pytest.mark.parametrize("raw", [{"name": "x"}, {"id": ""}, {"id": 5.5}, "tar"])
@pytest.mark.reliability(
    area="API",
    fault="file records with missing or wrongly-typed fields",
    outcome="clear error",
)
def test_malformed_file_records(raw):
    with pytest.raises(Cloud66ResponseError, match="malformed backup file record"):
        BackupFile.from_api(raw)
