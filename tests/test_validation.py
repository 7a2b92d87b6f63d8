"""Bad input is refused with a message naming the argument and what is allowed."""

from __future__ import annotations

import pytest

from airflow_provider_c66 import validation
from airflow_provider_c66.exceptions import Cloud66InputError


@pytest.mark.parametrize(
    ("check", "value", "field", "message"),
    [
        (validation.stack_id, "", "stack_id", "must be a Cloud 66 stack UID"),
        (validation.stack_id, "../etc", "stack_id", "must be a Cloud 66 stack UID"),
        (validation.stack_id, "a/b", "stack_id", "must be a Cloud 66 stack UID"),
        (validation.stack_id, 123, "stack_id", "must be a Cloud 66 stack UID"),
        (validation.stack_id, "x" * 129, "stack_id", "at most 128"),
        (validation.backup_id, 0, "backup_id", "integer of at least 1"),
        (validation.backup_id, -5, "backup_id", "integer of at least 1"),
        (validation.backup_id, True, "backup_id", "integer of at least 1"),
        (validation.backup_id, "12a", "backup_id", "integer of at least 1"),
        (validation.backup_id, 1.5, "backup_id", "integer of at least 1"),
        (validation.file_id, "../tar", "file_id", "backup file id"),
        (validation.file_id, "tar/../x", "file_id", "backup file id"),
        (validation.db_type, "oracle", "db_type", "mysql, postgresql, redis, mongodb"),
        (validation.db_type, "all", "db_type", "mysql, postgresql, redis, mongodb"),
        (validation.db_types, "mysql,oracle", "db_type", "all, mysql, postgresql, redis, mongodb"),
        (validation.db_types, [], "db_type", "one or more"),
        (validation.db_types, "all,mysql", "db_type", "'all' cannot be combined"),
        (validation.db_types, "", "db_type", "one or more"),
        (validation.cron, "0 */1 * * * *", "frequency", "5-field cron expression"),
        (validation.cron, "@hourly", "frequency", "5-field cron expression"),
        (validation.cron, "61 * * * *", "frequency", "minute field '61'"),
        (validation.cron, "0 24 * * *", "frequency", "hour field '24'"),
        (validation.cron, "0 0 0 * *", "frequency", "day of month field '0'"),
        (validation.cron, "0 0 * 13 *", "frequency", "month field '13'"),
        (validation.cron, "0 0 * * 8", "frequency", "day of week field '8'"),
        (validation.cron, "*/0 * * * *", "frequency", "minute field '*/0'"),
        (validation.cron, "5-1 * * * *", "frequency", "minute field '5-1'"),
        (validation.cron, 5, "frequency", "5-field cron expression"),
        (validation.keep_count, 0, "keep_count", "at least 1"),
        (validation.keep_count, 10_000_000, "keep_count", "at most 10000"),
        (validation.group, "abc", "group", "integer of at least 1"),
        (
            lambda v: validation.integer(v, "retries", minimum=0),
            -1,
            "retries",
            "integer of at least 0, got -1",
        ),
        (
            lambda v: validation.integer(v, "keep_last", minimum=0, maximum=9, note=" (0: none)"),
            10,
            "keep_last",
            "must be an integer from 0 to 9 (0: none), got 10 (int)",
        ),
    ],
)
def test_bad_input_names_the_field(check, value, field, message):
    with pytest.raises(Cloud66InputError) as info:
        check(value)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("ftp://example.com/x.tar", "must be an https URL"),
        ("http://example.com/x.tar", "must use https"),
        ("https://10.0.0.5/x.tar", "public host"),
        ("https://192.168.1.1/x.tar", "public host"),
        ("https://169.254.169.254/latest", "public host"),
        ("", "must be an https URL"),
        ("not a url", "must be an https URL"),
        ("https:///nohost", "must be an https URL"),
    ],
)
def test_remote_url_is_https_to_a_public_host(value, message):
    with pytest.raises(Cloud66InputError, match=message) as info:
        validation.url(value, "remote_url")
    assert info.value.field == "remote_url"


def test_signed_query_is_not_echoed_in_url_errors():
    with pytest.raises(Cloud66InputError) as info:
        validation.url("ftp://example.com/x.tar?Signature=SECRET", "remote_url")
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    ("check", "value", "expected"),
    [
        (validation.stack_id, " 5999b763474b0eafa5fafb64bff0ba80 ", "5999b763474b0eafa5fafb64bff0ba80"),
        (validation.backup_id, "4153", 4153),
        (validation.db_types, ["mysql", "Redis"], ["mysql", "redis"]),
        (validation.db_types, "mysql, redis,mysql", ["mysql", "redis"]),
        (validation.db_types, "all", ["all"]),
        (validation.cron, "0  */1 * * *", "0 */1 * * *"),
        (validation.cron, "0,30 1-5/2 1 jan-mar mon-fri", "0,30 1-5/2 1 jan-mar mon-fri"),
        (validation.keep_count, 100, 100),
    ],
)
def test_good_input_is_normalised(check, value, expected):
    assert check(value) == expected


def test_loopback_http_is_allowed_for_local_testing():
    assert validation.url("http://127.0.0.1:9000/x.tar", "remote_url") == "http://127.0.0.1:9000/x.tar"
    assert validation.url("http://localhost/x", "remote_url") == "http://localhost/x"
