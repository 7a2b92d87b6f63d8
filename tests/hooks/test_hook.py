"""Cloud66Hook against the emulator over real HTTP: every method, paging, errors, retries, secrets."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import requests

from airflow_provider_c66.api import RetryPolicy
from airflow_provider_c66.exceptions import (
    Cloud66ApiError,
    Cloud66AuthError,
    Cloud66InputError,
    Cloud66NotFoundError,
    Cloud66RateLimitError,
    Cloud66ResponseError,
)
from airflow_provider_c66.hooks.cloud66 import Cloud66Hook
from airflow_provider_c66.models import Backup, BackupFile, BackupStatus

FAST = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_max=0.05, max_rate_limit_wait=5)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def hook(cloud66_emulator):
    return Cloud66Hook(retry_policy=FAST)


def api_requests(emu, method=None):
    return [r for r in emu.requests if r.kind == "api" and (method is None or r.method == method)]


def test_list_backups_reads_every_page_newest_first(cloud66_emulator, hook):
    emu = cloud66_emulator
    ids = [emu.add_backup("stack-1", backup_date=T0 + timedelta(minutes=i)) for i in range(70)]
    backups = hook.list_backups("stack-1")
    assert [b.id for b in backups] == list(reversed(ids))
    assert all(isinstance(b, Backup) for b in backups)
    pages = [r.query.get("page") for r in api_requests(emu)]
    assert pages == ["1", "2", "3"]
    assert {r.path for r in api_requests(emu)} == {"/api/3/stacks/stack-1/backups.json"}


def test_list_backups_sends_filters_and_sorts_itself(cloud66_emulator, hook):
    emu = cloud66_emulator
    emu.add_stack("stack-2", databases=[("mysql", "a"), ("redis", "b")])
    old = emu.add_backup("stack-2", db_type="redis", database_name="b", backup_date=T0, group=3)
    new = emu.add_backup(
        "stack-2", db_type="redis", database_name="b", backup_date=T0 + timedelta(hours=1), group=3
    )
    emu.add_backup("stack-2", db_type="mysql", database_name="a", backup_date=T0, group=3)
    backups = hook.list_backups("stack-2", db_type="redis", group=3)
    assert [b.id for b in backups] == [new, old]
    assert api_requests(emu)[0].query == {"db_type": "redis", "group": "3", "page": "1"}


def test_get_backup(cloud66_emulator, hook):
    bid = cloud66_emulator.add_backup("stack-1", status=1, result="disk full", backup_date=T0)
    backup = hook.get_backup("stack-1", bid)
    assert backup.id == bid and backup.status is BackupStatus.FAILED and backup.result == "disk full"
    assert backup.backup_date == T0


def test_create_backup_task_sends_exactly_the_parameters(cloud66_emulator, hook):
    message = hook.create_backup_task(
        "stack-1",
        db_type=["mysql", "redis"],
        frequency="0 */1 * * *",
        keep_count=10,
        gzip=True,
        excluded_tables=["logs", "audit"],
        run_on_replica_server=False,
    )
    assert message == "queued for creation"
    (post,) = api_requests(cloud66_emulator, "POST")
    assert post.path == "/api/3/stacks/stack-1/backups.json"
    assert post.json == {
        "db_type": "mysql,redis",
        "frequency": "0 */1 * * *",
        "keep_count": 10,
        "gzip": True,
        "excluded_tables": "logs,audit",
        "run_on_replica_server": False,
    }


def test_create_backup_task_defaults_to_all(cloud66_emulator, hook):
    hook.create_backup_task("stack-1")
    assert api_requests(cloud66_emulator, "POST")[0].json == {"db_type": "all"}


def test_a_backup_task_setting_left_none_is_left_out_of_the_body():
    body = Cloud66Hook.backup_task_body(db_type="redis", frequency=None, keep_count="3", gzip="False")
    assert body == {"db_type": "redis", "keep_count": 3, "gzip": False}


def test_an_unknown_backup_task_setting_is_refused_before_any_request(cloud66_emulator, hook):
    with pytest.raises(TypeError) as info:
        hook.create_backup_task("stack-1", frequncy="0 * * * *")  # type: ignore[call-arg]
    assert str(info.value) == (
        "unexpected backup task settings ['frequncy']; the settings are ['db_type', 'frequency', "
        "'keep_count', 'gzip', 'excluded_tables', 'run_on_replica_server']"
    )
    assert cloud66_emulator.requests == []


def test_import_backup(cloud66_emulator, hook):
    url = "https://example.com/dumps/redis_23.tar"
    assert hook.import_backup("stack-1", group=5, db_type="mysql", remote_url=url) == (
        "Your external backup queued for upload"
    )
    assert api_requests(cloud66_emulator, "POST")[0].json == {
        "group": 5,
        "db_type": "mysql",
        "remote_url": url,
    }


@pytest.mark.reliability(area="API", fault="token without the admin scope (403)", outcome="clear error")
def test_post_with_a_public_only_token_says_admin_is_needed(cloud66_emulator, monkeypatch):
    emu = cloud66_emulator
    emu.add_token("reader", ("public",))
    monkeypatch.setenv(
        "AIRFLOW_CONN_READER",
        json.dumps({"conn_type": "cloud66", "host": emu.base_url, "password": "reader"}),
    )
    hook = Cloud66Hook("reader", retry_policy=FAST)
    assert hook.list_backups("stack-1") == []
    with pytest.raises(Cloud66AuthError, match="'admin' scope") as info:
        hook.create_backup_task("stack-1")
    assert info.value.status == 403
    assert len(api_requests(emu, "POST")) == 1


def test_list_backup_files_in_concatenation_order(cloud66_emulator_factory):
    emu = cloud66_emulator_factory(split_threshold=1000, split_size=300)
    bid = emu.add_backup("stack-1", size=1001)
    files = Cloud66Hook(retry_policy=FAST).list_backup_files("stack-1", bid)
    assert [f.id for f in files] == ["tar-aa", "tar-ab", "tar-ac", "tar-ad"]
    assert all(isinstance(f, BackupFile) for f in files)
    assert {f.archive_name for f in files} == {files[0].name.rsplit("-", 1)[0]}


def test_get_backup_file_url_undoes_the_percent_quirk(cloud66_emulator, hook):
    emu = cloud66_emulator
    bid = emu.add_backup("stack-1", size=2048)
    url = hook.get_backup_file_url("stack-1", bid, "tar")
    assert "%25" not in url and "Signature=" in url
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == emu.file_bytes("stack-1", bid, "tar")


def test_get_stack(cloud66_emulator, hook):
    stack = hook.get_stack("stack-1")
    assert stack["uid"] == "stack-1"


@pytest.mark.reliability(area="API", fault="unknown stack or backup (404)", outcome="clear error")
def test_not_found_names_what_was_missing(cloud66_emulator, hook):
    with pytest.raises(Cloud66NotFoundError, match="backup 999 of stack 'stack-1' was not found") as info:
        hook.get_backup("stack-1", 999)
    assert info.value.status == 404
    with pytest.raises(Cloud66NotFoundError, match="stack 'nope' was not found"):
        hook.list_backups("nope")


@pytest.mark.reliability(area="API", fault="wrong or revoked token (401)", outcome="clear error")
def test_wrong_token_is_an_auth_error(cloud66_emulator, monkeypatch):
    emu = cloud66_emulator
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUD66_DEFAULT",
        json.dumps({"conn_type": "cloud66", "host": emu.base_url, "password": "wrong"}),
    )
    with pytest.raises(Cloud66AuthError, match="rejected the access token") as info:
        Cloud66Hook(retry_policy=FAST).list_backups("stack-1")
    assert info.value.status == 401
    assert len(api_requests(emu)) == 1, "401 is not retried"


@pytest.mark.parametrize("status", [500, 502, 503])
@pytest.mark.reliability(
    area="API",
    fault="5xx burst (500, 502, 503) on a read",
    outcome="retried and succeeded",
)
def test_5xx_is_retried_until_success(cloud66_emulator, hook, status):
    emu = cloud66_emulator
    bid = emu.add_backup("stack-1")
    emu.fail_next(2, r"/backups/\d+", status=status)
    assert hook.get_backup("stack-1", bid).id == bid
    assert [r.status for r in api_requests(emu)] == [status, status, 200]


@pytest.mark.reliability(area="API", fault="5xx that outlasts the retries", outcome="clear error")
def test_retries_are_bounded(cloud66_emulator, hook):
    emu = cloud66_emulator
    emu.fail_next(10, r"/backups", status=500)
    with pytest.raises(Cloud66ApiError, match="500"):
        hook.list_backups("stack-1")
    assert len(api_requests(emu)) == FAST.max_attempts


@pytest.mark.reliability(area="API", fault="429 with Retry-After", outcome="retried and succeeded")
def test_429_honours_retry_after(cloud66_emulator, hook, monkeypatch):
    emu = cloud66_emulator
    sleeps: list[float] = []
    monkeypatch.setattr("airflow_provider_c66.hooks.cloud66.time.sleep", sleeps.append)
    emu.rate_limit_next(1, r"/backups", retry_after=2)
    assert hook.list_backups("stack-1") == []
    assert [r.status for r in api_requests(emu)] == [429, 200]
    assert 2.0 in sleeps


@pytest.mark.reliability(area="API", fault="connection reset", outcome="retried and succeeded")
def test_connection_reset_is_retried(cloud66_emulator, hook):
    emu = cloud66_emulator
    emu.drop_connection_next(1, r"/backups", after_bytes=0)
    assert hook.list_backups("stack-1") == []
    assert len(api_requests(emu)) == 2


@pytest.mark.reliability(area="API", fault="malformed JSON once", outcome="retried and succeeded")
@pytest.mark.reliability(area="API", fault="malformed JSON on every attempt", outcome="clear error")
def test_malformed_json_is_retried_then_a_clear_error(cloud66_emulator, hook):
    emu = cloud66_emulator
    emu.malformed_json_next(1, r"/backups")
    assert hook.list_backups("stack-1") == []
    emu.malformed_json_next(10, r"/backups")
    with pytest.raises(Cloud66ResponseError, match="not a Cloud 66 JSON envelope"):
        hook.list_backups("stack-1")


@pytest.mark.reliability(area="API", fault="a backup record with an unreadable date", outcome="clear error")
def test_malformed_record_is_a_clear_error(cloud66_emulator, hook):
    cloud66_emulator.add_backup(
        "stack-1", extra_fields={"backup_date_iso": "not-a-date", "created_at_iso": None}
    )
    with pytest.raises(Cloud66ResponseError, match="field 'backup_date_iso'"):
        hook.list_backups("stack-1")


@pytest.mark.reliability(
    area="API",
    fault="503 throttled, the budget resets within max_rate_limit_wait",
    outcome="retried and succeeded",
)
def test_throttled_waits_for_a_near_reset_then_succeeds(cloud66_emulator_factory):
    emu = cloud66_emulator_factory(budget_window=1.0)
    emu.set_remaining(0)
    hook = Cloud66Hook(retry_policy=FAST)
    assert hook.list_backups("stack-1") == []
    assert [r.status for r in api_requests(emu)] == [503, 200]


@pytest.mark.reliability(
    area="API",
    fault="503 throttled, the budget resets later than max_rate_limit_wait",
    outcome="clear error",
)
def test_throttled_with_a_far_reset_raises_rate_limit_error(cloud66_emulator_factory):
    emu = cloud66_emulator_factory(budget_window=3600.0)
    emu.set_remaining(0)
    with pytest.raises(Cloud66RateLimitError, match="resets at") as info:
        Cloud66Hook(retry_policy=FAST).list_backups("stack-1")
    assert info.value.reset_at is not None and info.value.reset_at > datetime.now(UTC)
    assert len(api_requests(emu)) == 1


@pytest.mark.reliability(
    area="API",
    fault="hourly budget spent mid-run (X-RateLimit-Remaining: 0, no reset time): one throttled answer tells the reset, then no request until it",
    outcome="clear error",
)
def test_remaining_zero_without_a_reset_time_probes_once_then_holds_every_hook(cloud66_emulator_factory):
    emu = cloud66_emulator_factory(budget_window=3600.0, hourly_budget=1)
    hook = Cloud66Hook(retry_policy=FAST)
    hook.list_backups("stack-1")  # spends the only request; the answer says Remaining: 0, not when it resets
    with pytest.raises(Cloud66RateLimitError, match="resets at") as info:
        hook.list_backups("stack-1")  # sent: its 503 throttled answer (no budget spent) says when
    assert info.value.reset_at is not None and info.value.reset_at > datetime.now(UTC) + timedelta(minutes=59)
    other = Cloud66Hook(retry_policy=FAST)  # another task of this process, same URL and token
    with pytest.raises(Cloud66RateLimitError, match="resets at"):
        other.get_backup("stack-1", 1)
    assert [r.status for r in api_requests(emu)] == [200, 503], "nothing is sent once the reset is known"


def test_a_budget_is_shared_only_by_hooks_with_the_same_url_and_token(cloud66_emulator_factory, monkeypatch):
    spent = cloud66_emulator_factory(budget_window=3600.0, conn_id="spent")
    fresh = cloud66_emulator_factory(budget_window=3600.0, conn_id="fresh")
    spent.set_remaining(0)
    with pytest.raises(Cloud66RateLimitError):
        Cloud66Hook("spent", retry_policy=FAST).list_backups("stack-1")
    assert Cloud66Hook("fresh", retry_policy=FAST).list_backups("stack-1") == []
    monkeypatch.setenv(
        "AIRFLOW_CONN_OTHER_TOKEN",
        json.dumps({"conn_type": "cloud66", "host": spent.base_url, "password": "another-token"}),
    )
    spent.add_token("another-token", ("public",))
    assert Cloud66Hook("other_token", retry_policy=FAST).list_backups("stack-1") == []
    assert [r.status for r in api_requests(fresh)] == [200]
    assert [r.status for r in api_requests(spent)] == [503, 200]


def test_missing_token_names_the_connection(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_NOTOKEN", json.dumps({"conn_type": "cloud66", "host": "https://x.example"})
    )
    with pytest.raises(Cloud66InputError, match="connection 'notoken': has no access token"):
        Cloud66Hook("notoken").list_backups("stack-1")


@pytest.mark.parametrize(
    ("host", "message"),
    [
        ("http://example.com/api/3", "must use https"),
        ("ftp://example.com", "must be the API URL"),
    ],
)
def test_bad_api_url_is_refused(monkeypatch, host, message):
    monkeypatch.setenv(
        "AIRFLOW_CONN_BADURL", json.dumps({"conn_type": "cloud66", "host": host, "password": "t"})
    )
    with pytest.raises(Cloud66InputError, match=message):
        Cloud66Hook("badurl").list_backups("stack-1")


def test_connection_settings(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_C66X",
        json.dumps(
            {
                "conn_type": "cloud66",
                "host": "app.example.com",
                "password": "tok-123",
                "extra": {"account_id": 42, "timeout": 5},
            }
        ),
    )
    hook = Cloud66Hook("c66x")
    assert hook.settings.base_url == "https://app.example.com/api/3"
    assert hook.settings.timeout == 5.0
    assert hook.get_conn().headers["X-Account"] == "42"
    assert hook.get_conn().headers["Authorization"] == "Bearer tok-123"
    assert "tok-123" not in repr(hook.settings)


def test_account_header_reaches_the_api(cloud66_emulator, monkeypatch):
    emu = cloud66_emulator
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUD66_DEFAULT",
        json.dumps(
            {
                "conn_type": "cloud66",
                "host": emu.base_url,
                "password": emu.token,
                "extra": {"account_id": "77"},
            }
        ),
    )
    Cloud66Hook(retry_policy=FAST).list_backups("stack-1")
    headers = {k.lower(): v for k, v in api_requests(emu)[0].headers.items()}
    assert headers["x-account"] == "77"
    assert headers["accept"] == "application/json"
    assert headers["user-agent"].startswith("airflow-provider-c66/")


def test_test_connection_ok(cloud66_emulator, hook):
    ok, message = hook.test_connection()
    assert ok, message
    assert "Connected to Cloud 66" in message


def test_test_connection_wrong_token(cloud66_emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUD66_DEFAULT",
        json.dumps({"conn_type": "cloud66", "host": cloud66_emulator.base_url, "password": "nope"}),
    )
    assert Cloud66Hook(retry_policy=FAST).test_connection() == (
        False,
        "Cloud 66 rejected the access token: set the connection's password to a valid token.",
    )


def test_test_connection_missing_scope(cloud66_emulator, monkeypatch):
    cloud66_emulator.add_token("noscope", ())
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUD66_DEFAULT",
        json.dumps({"conn_type": "cloud66", "host": cloud66_emulator.base_url, "password": "noscope"}),
    )
    ok, message = Cloud66Hook(retry_policy=FAST).test_connection()
    assert not ok and "lacks the 'public' scope" in message


def test_test_connection_wrong_url(cloud66_emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUD66_DEFAULT",
        json.dumps({"conn_type": "cloud66", "host": cloud66_emulator.origin + "/wrong", "password": "t"}),
    )
    ok, message = Cloud66Hook(retry_policy=FAST).test_connection()
    assert not ok and "No Cloud 66 API at" in message


def test_test_connection_unreachable(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUD66_DEFAULT",
        json.dumps({"conn_type": "cloud66", "host": "http://127.0.0.1:9/api/3", "password": "t"}),
    )
    ok, message = Cloud66Hook(retry_policy=RetryPolicy(max_attempts=1)).test_connection()
    assert not ok and message.startswith("Could not reach http://127.0.0.1:9/api/3")


@pytest.mark.reliability(
    area="secrets",
    fault="the hook: token and signed-URL signatures in logs and errors, with retries",
    outcome="no secret in any output",
)
def test_token_and_signatures_never_reach_logs_or_errors(cloud66_emulator_factory, caplog, capsys):
    emu = cloud66_emulator_factory(split_threshold=100, split_size=60, token="s3cr3t-token-value")
    bid = emu.add_backup("stack-1", size=150)
    hook = Cloud66Hook(retry_policy=FAST)
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        emu.fail_next(1, r"/files", status=503)
        urls = [
            hook.get_backup_file_url("stack-1", bid, f.id) for f in hook.list_backup_files("stack-1", bid)
        ]
        emu.fail_next(10, r"/backups/\d+\.json$", status=500)
        for call in (lambda: hook.get_backup("stack-1", bid), lambda: hook.get_backup("stack-1", 10_000)):
            with pytest.raises(Cloud66ApiError) as info:
                call()
            texts.append(str(info.value))
    signatures = [requests.utils.urlparse(u).query.split("Signature=")[1] for u in urls]
    assert len(signatures) == 3 and all(signatures)
    out, err = capsys.readouterr()
    everything = "\n".join([caplog.text, out, err, *texts, *(r.getMessage() for r in caplog.records)])
    assert "retrying" in everything and "GET /api/3/stacks/stack-1/backups/" in everything
    for secret in ("s3cr3t-token-value", *signatures):
        assert secret not in everything


def test_provider_is_discovered_by_airflow():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-c66" in manager.providers
    info = manager.providers["airflow-provider-c66"]
    assert info.version == "0.1.0"
    hook_info = manager.hooks["cloud66"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_provider_c66.hooks.cloud66.Cloud66Hook"
    assert hook_info.connection_id_attribute_name == "cloud66_conn_id"
    behaviour = Cloud66Hook.get_ui_field_behaviour()
    assert set(behaviour["hidden_fields"]) == {"schema", "port", "login"}
    assert behaviour["relabeling"] == {"host": "API URL", "password": "Access token"}


@pytest.mark.reliability(
    area="API",
    fault="502 or connection reset on a POST that may have been carried out (not repeated)",
    outcome="clear error",
)
def test_a_post_that_may_have_been_carried_out_is_not_repeated(cloud66_emulator, hook):
    emu = cloud66_emulator
    emu.fail_next(1, r"/backups\.json$", status=502, method="POST")
    with pytest.raises(Cloud66ApiError, match="502"):
        hook.create_backup_task("stack-1")
    emu.drop_connection_next(1, r"/backups\.json$", after_bytes=0, method="POST")
    with pytest.raises(Cloud66ApiError, match="no answer from Cloud 66"):
        hook.create_backup_task("stack-1")
    assert len(api_requests(emu, "POST")) == 2, "each POST was sent once"


@pytest.mark.reliability(area="API", fault="429 on a POST", outcome="retried and succeeded")
def test_a_post_refused_with_429_is_repeated(cloud66_emulator, hook, monkeypatch):
    monkeypatch.setattr("airflow_provider_c66.hooks.cloud66.time.sleep", lambda s: None)
    cloud66_emulator.rate_limit_next(1, r"/backups\.json$", retry_after=1)
    assert hook.create_backup_task("stack-1") == "queued for creation"
    assert [r.status for r in api_requests(cloud66_emulator, "POST")] == [429, 200]


@pytest.mark.reliability(
    area="API",
    fault="connection refused (API unreachable), for a POST too",
    outcome="clear error",
)
def test_a_refused_connection_is_retried_even_for_a_post(monkeypatch):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUD66_DEFAULT",
        json.dumps({"conn_type": "cloud66", "host": f"http://127.0.0.1:{port}/api/3", "password": "t"}),
    )
    calls: list[float] = []
    monkeypatch.setattr("airflow_provider_c66.hooks.cloud66.time.sleep", calls.append)
    with pytest.raises(Cloud66ApiError, match="no answer"):
        Cloud66Hook(retry_policy=FAST).create_backup_task("stack-1")
    assert len([c for c in calls if c > 0]) == FAST.max_attempts - 1


def test_provider_info_declares_the_connection_form():
    from airflow_provider_c66.get_provider_info import get_provider_info

    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == "cloud66"
    assert conn_type["hook-class-name"] == "airflow_provider_c66.hooks.cloud66.Cloud66Hook"
    behaviour = conn_type["ui-field-behaviour"]
    assert behaviour["hidden-fields"] == ["schema", "port", "login"]
    assert behaviour["relabeling"] == {"host": "API URL", "password": "Access token"}


def test_the_connection_form_is_the_same_for_every_airflow_release():
    """Airflow 3.2+ reads conn-fields and ui-field-behaviour from the provider info; older releases
    call the hook's get_ui_field_behaviour() and get_connection_form_widgets(): the same form."""
    from wtforms import Form

    from airflow_provider_c66.get_provider_info import CONNECTION_FIELDS, get_provider_info

    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["hook-name"] == "Cloud 66"
    assert conn_type["conn-fields"] == CONNECTION_FIELDS
    assert conn_type["ui-field-behaviour"] == {
        key.replace("_", "-"): value for key, value in Cloud66Hook.get_ui_field_behaviour().items()
    }
    assert sorted(CONNECTION_FIELDS) == ["account_id", "timeout"]

    widgets = Cloud66Hook.get_connection_form_widgets()
    form_class = type("ConnectionForm", (Form,), dict(widgets))
    form = form_class()
    assert sorted(widgets) == sorted(CONNECTION_FIELDS)
    for name, declared in CONNECTION_FIELDS.items():
        field = form[name]
        kind = "IntegerField" if "integer" in declared["schema"]["type"] else "StringField"
        assert (type(field).__name__, field.label.text, field.description, field.default) == (
            kind,
            declared["label"],
            declared["description"],
            declared["schema"].get("default"),
        )
    assert (form["account_id"].label.text, form["timeout"].label.text, form["timeout"].default) == (
        "Account id",
        "Timeout",
        60,
    )

    class Data(dict):  # what a submitted form holds
        def getlist(self, key):
            return [self[key]] if key in self else []

    for timeout, valid in (("", True), ("1", True), ("3600", True), ("0", False), ("3601", False)):
        assert form_class(Data(timeout=timeout, account_id="")).validate() is valid, timeout


@pytest.mark.parametrize(
    "extra",
    [
        {"account_id": "acc-9", "timeout": 7},
        {"extra__cloud66__account_id": "acc-9", "extra__cloud66__timeout": "7"},  # forms before Airflow 3
        {"account_id": "acc-9", "timeout": "7", "extra__cloud66__timeout": "99"},
    ],
)
def test_the_form_fields_reach_the_hook_as_the_form_saves_them(monkeypatch, extra):
    monkeypatch.setenv(
        "AIRFLOW_CONN_C66_FORM",
        json.dumps(
            {"conn_type": "cloud66", "host": "http://127.0.0.1:9/api/3", "password": "t", "extra": extra}
        ),
    )
    settings = Cloud66Hook("c66_form").settings
    assert (settings.headers.get("X-Account"), settings.timeout) == ("acc-9", 7.0)


def test_airflow_providers_list_shows_the_provider():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "list", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    (line,) = [line for line in result.stdout.splitlines() if line.startswith('[{"package_name"')]
    listed = {item["package_name"]: item for item in json.loads(line)}
    assert listed["airflow-provider-c66"]["version"] == "0.1.0"
