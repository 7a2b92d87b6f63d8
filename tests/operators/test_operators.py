"""Cloud66CreateBackupOperator and Cloud66ImportBackupOperator end to end through ``dag.test()``."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS
from airflow.sdk import DAG

from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.models import Backup
from airflow_provider_c66.operators.backups import Cloud66CreateBackupOperator, Cloud66ImportBackupOperator
from airflow_provider_c66.testing.pytest_plugin import connection_json
from airflow_provider_c66.triggers.backups import BackupEvent
from tests.helpers import Failures, record, task_instance, xcom_value

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STACK = "stack-2"
LIST_PATH = f"/api/3/stacks/{STACK}/backups.json"
SIGNED_URL = "https://backups.example.com/dumps/app_db.tar?X-Amz-Signature=0123abcd&X-Amz-Expires=300"
MODES = [pytest.param(False, id="poke"), pytest.param(True, id="deferrable")]


@pytest.fixture
def emu(cloud66_emulator_factory):
    """An emulator whose stack-2 has a MySQL and a Redis database, each with one old backup."""
    emulator = cloud66_emulator_factory(stacks=(), backup_delay=0.5)
    emulator.add_stack(STACK, databases=[("mysql", "app_db"), ("redis", "cache")])
    return emulator


def add_old_backups(emu: Any) -> list[int]:
    return [
        emu.add_backup(STACK, db_type="mysql", database_name="app_db", backup_date=T0),
        emu.add_backup(STACK, db_type="redis", database_name="cache", backup_date=T0 + timedelta(minutes=1)),
    ]


def run_task(run_dag: Any, cls: type, dag_id: str, failures: Failures | None = None, **kwargs: Any) -> Any:
    task_class = failures.wrap(cls) if failures else cls
    with DAG(dag_id, schedule=None, params=kwargs.pop("params", {})) as dag:
        task_class(task_id="backup", stack_id=kwargs.pop("stack_id", STACK), **kwargs)
    return run_dag(dag)


def posts(emu: Any) -> list[Any]:
    return [r for r in emu.requests if r.method == "POST"]


def new_backups(emu: Any, old: list[int], stack: str = STACK) -> list[dict[str, Any]]:
    """The backups the run created, as XCom must show them (newest first)."""
    return [record(emu, r["id"], stack) for r in emu.backups(stack) if r["id"] not in old]


# --- Cloud66CreateBackupOperator ------------------------------------------------------------------
@pytest.mark.parametrize("deferrable", MODES)
def test_create_then_wait_returns_one_new_backup_per_type(emu, run_dag, deferrable):
    old = add_old_backups(emu)
    dagrun = run_task(
        run_dag,
        Cloud66CreateBackupOperator,
        f"create_wait_{deferrable}",
        db_type="all",
        frequency="0 3 * * *",
        keep_count="{{ params.keep }}",
        gzip=True,
        excluded_tables=["audit_log", "sessions"],
        run_on_replica_server=False,
        wait_for_completion=True,
        poll_interval=0.2,
        timeout=30,
        deferrable=deferrable,
        params={"keep": 14},
    )
    assert dagrun.state == "success"
    created = new_backups(emu, old)
    by_type = {b["db_type"]: b for b in created}
    assert len(created) == 2 and xcom_value(dagrun, "backup") == [by_type["mysql"], by_type["redis"]]
    watermark, post, *polls = emu.requests
    assert (watermark.method, watermark.path, watermark.query) == ("GET", LIST_PATH, {"page": "1"})
    assert (post.method, post.path) == ("POST", LIST_PATH)
    assert post.json == {
        "db_type": "all",
        "frequency": "0 3 * * *",
        "keep_count": 14,
        "gzip": True,
        "excluded_tables": "audit_log,sessions",
        "run_on_replica_server": False,
    }
    assert polls and all((r.method, r.path, r.query) == ("GET", LIST_PATH, {"page": "1"}) for r in polls)
    assert len(polls) <= 6  # the backups appear 0.5 s after the POST; one poll per 0.2 s


def test_create_one_type_filters_watermark_and_polls(emu, run_dag):
    old = add_old_backups(emu)
    dagrun = run_task(
        run_dag,
        Cloud66CreateBackupOperator,
        "create_redis",
        db_type=["redis"],
        wait_for_completion=True,
        poll_interval=0.2,
    )
    assert dagrun.state == "success"
    (created,) = new_backups(emu, old)
    assert created["db_type"] == "redis" and xcom_value(dagrun, "backup") == [created]
    gets = [r for r in emu.requests if r.method == "GET"]
    assert {json.dumps(r.query, sort_keys=True) for r in gets} == {'{"db_type": "redis", "page": "1"}'}
    assert [p.json for p in posts(emu)] == [{"db_type": "redis"}]


def test_create_all_on_a_stack_without_backups_waits_for_the_first_new_one(emu, run_dag):
    dagrun = run_task(
        run_dag, Cloud66CreateBackupOperator, "create_all_empty", wait_for_completion=True, poll_interval=0.2
    )
    assert dagrun.state == "success"
    newest = new_backups(emu, [])[0]
    assert xcom_value(dagrun, "backup") == [newest]
    assert len(posts(emu)) == 1


def test_create_without_waiting_returns_the_message_and_lists_nothing(emu, run_dag):
    dagrun = run_task(run_dag, Cloud66CreateBackupOperator, "create_nowait", db_type="mysql,redis")
    assert dagrun.state == "success"
    assert xcom_value(dagrun, "backup") == "queued for creation"
    (post,) = emu.requests
    assert post.method == "POST" and post.json == {"db_type": "mysql,redis"}


@pytest.mark.parametrize("deferrable", MODES)
def test_failed_backup_fails_fast_without_retry(cloud66_emulator_factory, run_dag, deferrable):
    emu = cloud66_emulator_factory(backup_outcome="failed", backup_delay=0.3)
    failures = Failures()
    dagrun = run_task(
        run_dag,
        Cloud66CreateBackupOperator,
        f"create_failed_{deferrable}",
        failures,
        stack_id="stack-1",
        wait_for_completion=True,
        poll_interval=0.2,
        deferrable=deferrable,
        retries=3,
        retry_delay=timedelta(0),
    )
    assert dagrun.state == "failed"
    error = failures.only
    assert isinstance(error, AirflowFailException)
    assert "Backup failed: mysqldump exited with status 2 (emulated failure)" in str(error)
    assert "stack 'stack-1'" in str(error)
    assert len(posts(emu)) == 1 and task_instance(dagrun, "backup").try_number == 1


@pytest.mark.skipif(
    not AIRFLOW_V_3_3_PLUS, reason="the task state store that makes retries resume is Airflow 3.3+"
)
@pytest.mark.parametrize("deferrable", MODES)
@pytest.mark.reliability(
    area="API",
    fault="a task retry after the POST (Airflow 3.3+): resumes the wait, never POSTs twice",
    outcome="retried and succeeded",
)
def test_a_retry_resumes_the_wait_and_does_not_post_again(emu, run_dag, deferrable):
    emu.backup_delay = 1.5
    old = add_old_backups(emu)
    failures = Failures()
    dagrun = run_task(
        run_dag,
        Cloud66CreateBackupOperator,
        f"create_retry_{deferrable}",
        failures,
        wait_for_completion=True,
        poll_interval=0.2,
        timeout="{{ 0.3 if ti.try_number == 1 else 30 }}",  # the first try times out
        deferrable=deferrable,
        retries=1,
        retry_delay=timedelta(0),
    )
    assert dagrun.state == "success"
    assert "Timed out after" in str(failures.only)
    assert task_instance(dagrun, "backup").try_number == 2
    assert len(posts(emu)) == 1
    created = new_backups(emu, old)
    assert sorted(b["id"] for b in xcom_value(dagrun, "backup")) == sorted(b["id"] for b in created)


@pytest.mark.skipif(AIRFLOW_V_3_3_PLUS, reason="below Airflow 3.3 only: there is no task state store")
def test_below_3_3_a_retry_posts_again_as_documented(emu, run_dag):
    emu.backup_delay = 1.5
    dagrun = run_task(
        run_dag,
        Cloud66CreateBackupOperator,
        "create_retry_old_airflow",
        wait_for_completion=True,
        poll_interval=0.2,
        timeout="{{ 0.3 if ti.try_number == 1 else 30 }}",
        retries=1,
        retry_delay=timedelta(0),
    )
    assert dagrun.state == "success"
    assert len(posts(emu)) == 2


# --- Cloud66ImportBackupOperator ------------------------------------------------------------------
@pytest.mark.parametrize("deferrable", MODES)
def test_import_then_wait_returns_the_imported_backup(emu, run_dag, deferrable):
    old = [
        emu.add_backup(STACK, group=5, backup_date=T0),
        emu.add_backup(STACK, group=6, backup_date=T0 + timedelta(hours=1)),
    ]
    dagrun = run_task(
        run_dag,
        Cloud66ImportBackupOperator,
        f"import_wait_{deferrable}",
        group="{{ params.group }}",
        db_type="MySQL",
        remote_url=SIGNED_URL,
        wait_for_completion=True,
        poll_interval=0.2,
        deferrable=deferrable,
        params={"group": 5},
    )
    assert dagrun.state == "success"
    (imported,) = new_backups(emu, old)
    # The record names no group (as documented): the wait trusts the API's own group filter.
    assert imported["group"] is None and emu.group_of(STACK, imported["id"]) == 5
    assert xcom_value(dagrun, "backup") == imported
    watermark, post, *polls = emu.requests
    assert watermark.query == {"db_type": "mysql", "group": "5", "page": "1"}
    assert post.method == "POST" and post.json == {"group": 5, "db_type": "mysql", "remote_url": SIGNED_URL}
    assert polls and all(r.query == watermark.query for r in polls)


def test_import_without_waiting_returns_the_message(emu, run_dag):
    dagrun = run_task(
        run_dag, Cloud66ImportBackupOperator, "import_nowait", group=2, db_type="redis", remote_url=SIGNED_URL
    )
    assert dagrun.state == "success"
    assert xcom_value(dagrun, "backup") == "Your external backup queued for upload"
    assert [r.method for r in emu.requests] == ["POST"]


@pytest.mark.reliability(
    area="secrets",
    fault="the import operator: the remote_url's signed query in logs",
    outcome="no secret in any output",
)
def test_import_never_logs_the_signed_url_query(emu, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    operator = Cloud66ImportBackupOperator(
        task_id="i", stack_id=STACK, group=1, db_type="mysql", remote_url=SIGNED_URL
    )
    assert operator.execute({}) == "Your external backup queued for upload"
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert "Importing https://backups.example.com/dumps/app_db.tar" in logged
    assert "0123abcd" not in logged


# --- settle_seconds -------------------------------------------------------------------------------
@pytest.mark.parametrize("deferrable", MODES)
@pytest.mark.parametrize("operator", ["create", "import"])
def test_settle_seconds_waits_until_the_new_backup_is_that_old(emu, run_dag, operator, deferrable):
    old = add_old_backups(emu)
    settle = 2
    wait = {"wait_for_completion": True, "poll_interval": 0.2, "timeout": 30, "deferrable": deferrable}
    if operator == "create":
        cls, args = Cloud66CreateBackupOperator, {"db_type": "mysql"}
    else:
        cls, args = Cloud66ImportBackupOperator, {"group": 5, "db_type": "mysql", "remote_url": SIGNED_URL}
    dagrun = run_task(
        run_dag,
        cls,
        f"settle_{operator}_{deferrable}",
        settle_seconds="{{ params.settle }}",
        params={"settle": settle},
        **args,
        **wait,
    )

    assert dagrun.state == "success"
    (created,) = new_backups(emu, old)
    assert xcom_value(dagrun, "backup") == ([created] if operator == "create" else created)
    # The new record's updated_at (the emulator: its backup date) is when it last changed.
    changed = datetime.fromisoformat(created["updated_at_iso"].replace("Z", "+00:00")).timestamp()
    (post,) = posts(emu)
    polls = [r for r in emu.requests if r.method == "GET" and r.time > post.time]
    listed = post.time + emu.backup_delay  # the record is listed from here on
    unsettled = [p for p in polls if listed <= p.time < changed + settle]
    assert len(unsettled) >= 2, "the wait saw the new backup before it was settled and went on"
    # The wait judges "settled" on its own clock once an answer is in, while the emulator stamps
    # a request when it arrives: the last poll may arrive a moment before the mark. What holds is
    # that every earlier poll came before it and the task went on only after it.
    assert all(p.time < changed + settle for p in polls[:-1]), "the wait polled on after settling"
    ended = task_instance(dagrun, "backup").end_date.timestamp()
    assert ended >= changed + settle, "the wait ended only once the backup was settled"
    assert all(p.query == polls[0].query for p in polls)


# --- input ----------------------------------------------------------------------------------------
def test_a_connection_without_token_is_refused_before_any_request(emu, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_C66_NO_TOKEN", json.dumps({"conn_type": "cloud66", "host": emu.base_url})
    )
    operator = Cloud66CreateBackupOperator(task_id="c", stack_id=STACK, cloud66_conn_id="c66_no_token")
    with pytest.raises(Cloud66InputError, match="has no access token"):
        operator.execute({})
    assert emu.requests == []


def test_a_token_without_admin_scope_fails_clearly(emu, monkeypatch):
    emu.add_token("read-only", ("public",))
    monkeypatch.setenv("AIRFLOW_CONN_CLOUD66_DEFAULT", connection_json(emu).replace(emu.token, "read-only"))
    with pytest.raises(Exception, match="needs a token with the 'admin' scope"):
        Cloud66CreateBackupOperator(task_id="c", stack_id=STACK, retries=0).execute({})
    assert [(r.method, r.status) for r in emu.requests] == [("POST", 403)]


# --- resuming from the trigger --------------------------------------------------------------------
def _event(status: str, backups: list[Backup]) -> dict[str, Any]:
    return BackupEvent(status, f"{status} message", tuple(backups)).payload()  # type: ignore[arg-type]


def _backup(backup_id: int, status: int = 0) -> Backup:
    raw = {
        "id": backup_id,
        "db_type": "mysql",
        "database_name": "app_db",
        "backup_date_iso": (T0 + timedelta(minutes=backup_id)).isoformat(),
        "backup_status": status,
    }
    return Backup.from_api(raw)


def test_execute_complete_reads_events_strictly():
    create = Cloud66CreateBackupOperator(task_id="c", stack_id=STACK)
    imported = Cloud66ImportBackupOperator(
        task_id="i", stack_id=STACK, group=1, db_type="mysql", remote_url=SIGNED_URL
    )
    one, two = _backup(1), _backup(2)
    assert create.execute_complete({}, _event("success", [one, two])) == [one.to_dict(), two.to_dict()]
    assert imported.execute_complete({}, _event("success", [one])) == one.to_dict()
    with pytest.raises(AirflowFailException, match="failed message"):
        create.execute_complete({}, _event("failed", [_backup(3, status=1)]))
    with pytest.raises(AirflowException, match="timeout message"):
        create.execute_complete({}, _event("timeout", []))
    with pytest.raises(AirflowException, match="error message"):
        imported.execute_complete({}, _event("error", []))
    with pytest.raises(AirflowException, match="invalid event: unknown Cloud 66 backup event status 'done'"):
        create.execute_complete({}, {**_event("timeout", []), "status": "done"})
    with pytest.raises(AirflowException, match="invalid event: expected a Cloud 66 backup event"):
        imported.execute_complete({}, None)


def test_every_user_facing_argument_is_templated():
    assert set(Cloud66CreateBackupOperator.template_fields) == {
        "stack_id",
        "db_type",
        "frequency",
        "keep_count",
        "gzip",
        "excluded_tables",
        "run_on_replica_server",
        "wait_for_completion",
        "poll_interval",
        "timeout",
        "settle_seconds",
        "cloud66_conn_id",
    }
    assert set(Cloud66ImportBackupOperator.template_fields) == {
        "stack_id",
        "group",
        "db_type",
        "remote_url",
        "wait_for_completion",
        "poll_interval",
        "timeout",
        "settle_seconds",
        "cloud66_conn_id",
    }


# --- the posted job kept in the task state store ------------------------------------------------------
def test_posted_job_round_trips_and_refuses_unreadable_state() -> None:
    from airflow_provider_c66.operators.backups import PostedJob
    from airflow_provider_c66.watermark import ANY_TYPE, BackupWait, Watermark

    wait = BackupWait(stack_id="stack-1", marks={ANY_TYPE: Watermark(after_id=7)}, db_type="mysql")
    for job in (PostedJob("queued", wait), PostedJob("queued")):
        raw = json.loads(json.dumps(job.to_json()))  # as the task state store keeps it
        assert PostedJob.from_json(raw) == job
    assert PostedJob("queued").to_json() == {"message": "queued", "wait": None}
    for junk in (None, "queued", {"wait": None}):
        with pytest.raises(AirflowException, match="Unreadable Cloud 66 task state"):
            PostedJob.from_json(junk)
