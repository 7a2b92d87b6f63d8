"""Cloud66BackupTrigger run directly with asyncio against the emulator; its events and their validation."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_c66.hooks.cloud66 import Cloud66Hook
from airflow_provider_c66.models import Backup
from airflow_provider_c66.triggers.backups import BackupEvent, Cloud66BackupTrigger, read_event

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIST_PATH = "/api/3/stacks/stack-1/backups.json"
OPEN = {"*": {"newer_than": None, "after_id": None}}


@pytest.fixture(autouse=True)
def outside_a_triggerer(monkeypatch):
    """Let the async connection lookup run outside a triggerer process on Airflow 3.1.

    3.1 imports the supervisor channel (unset outside a task or triggerer) before it reads the
    environment's connections; a stub channel that knows no connection stands in for it.
    """
    from airflow.sdk.execution_time import task_runner

    class NoSupervisor:
        def send(self, msg: Any) -> Any:
            raise LookupError(f"connection {getattr(msg, 'conn_id', msg)!r} is not defined")

        async def asend(self, msg: Any) -> Any:
            return self.send(msg)

    if not hasattr(task_runner, "SUPERVISOR_COMMS"):
        monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", NoSupervisor(), raising=False)


def make_trigger(*, timeout: float = 10.0, **kwargs: Any) -> Cloud66BackupTrigger:
    args: dict[str, Any] = {"stack_id": "stack-1", "marks": OPEN, "poll_interval": 0.2}
    args.update(kwargs)
    return Cloud66BackupTrigger(end_time=time.time() + timeout, **args)


def events(trigger: Cloud66BackupTrigger) -> list[dict[str, Any]]:
    """Every event the trigger yields (it yields one and stops)."""

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout=60))


def record(emu: Any, backup_id: int) -> dict[str, Any]:
    raw = next(r for r in emu.backups("stack-1") if r["id"] == backup_id)
    return Backup.from_api(raw).to_dict()


def gets(emu: Any) -> list[Any]:
    return [r for r in emu.requests if r.method == "GET" and r.path == LIST_PATH]


def test_serialize_round_trip_holds_only_json_values():
    trigger = Cloud66BackupTrigger(
        stack_id="stack-1",
        marks={"mysql": {"newer_than": "2026-01-01T00:00:00Z", "after_id": 7}, "redis": OPEN["*"]},
        end_time=1_800_000_000.5,
        db_type="mysql",
        group="3",
        database_name="app_db",
        fail_on_failed_backup=False,
        settle_seconds="600",
        poll_interval=30,
        cloud66_conn_id="c66_prod",
        started_at=1_799_990_000.0,
        first_poll_at=1_799_990_030.0,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_c66.triggers.backups.Cloud66BackupTrigger"
    assert kwargs == {
        "stack_id": "stack-1",
        "marks": {
            "mysql": {"newer_than": "2026-01-01T00:00:00Z", "after_id": 7},
            "redis": {"newer_than": None, "after_id": None},
        },
        "db_type": "mysql",
        "group": 3,
        "database_name": "app_db",
        "settle_seconds": 600.0,
        "fail_on_failed_backup": False,
        "end_time": 1_800_000_000.5,
        "poll_interval": 30.0,
        "cloud66_conn_id": "c66_prod",
        "started_at": 1_799_990_000.0,
        "first_poll_at": 1_799_990_030.0,
    }
    assert json.loads(json.dumps(kwargs)) == kwargs
    again = Cloud66BackupTrigger(**json.loads(json.dumps(kwargs)))
    assert again.serialize() == (classpath, kwargs)


def test_success_event_carries_the_newest_new_backup(cloud66_emulator):
    emu = cloud66_emulator
    old = emu.add_backup("stack-1", backup_date=T0)
    new = emu.add_backup("stack-1", backup_date=T0 + timedelta(hours=1))
    emu.add_backup("stack-1", db_type="redis", database_name="cache", backup_date=T0 + timedelta(hours=2))
    marks = {"*": {"newer_than": None, "after_id": old}}
    (event,) = events(make_trigger(marks=marks, db_type="mysql"))
    assert event == {
        "status": "success",
        "message": f"Found new backup(s) of stack 'stack-1': {new} (mysql 'app_db')",
        "backup": record(emu, new),
        "backups": [record(emu, new)],
    }
    assert [r.query for r in gets(emu)] == [{"db_type": "mysql", "page": "1"}]


def test_waits_until_every_marked_type_has_a_new_backup(cloud66_emulator):
    emu = cloud66_emulator
    emu.add_stack("stack-2", databases=[("mysql", "app_db"), ("redis", "cache")])
    mysql_old = emu.add_backup("stack-2", backup_date=T0)
    marks = {
        "mysql": {"newer_than": "2026-01-01T00:00:00Z", "after_id": mysql_old},
        "redis": {"newer_than": None, "after_id": None},
    }
    Cloud66Hook().create_backup_task("stack-2", db_type="all")  # the backups appear 0.5 s later
    (event,) = events(make_trigger(stack_id="stack-2", marks=marks))
    assert event["status"] == "success"
    assert [(b["db_type"], b["database_name"]) for b in event["backups"]] == [
        ("mysql", "app_db"),
        ("redis", "cache"),
    ]
    assert mysql_old not in [b["id"] for b in event["backups"]]
    polls = [r for r in emu.requests if r.method == "GET"]
    assert len(polls) >= 2 and {r.path for r in polls} == {"/api/3/stacks/stack-2/backups.json"}


def test_failed_backup_ends_with_failed_and_backup_result(cloud66_emulator):
    emu = cloud66_emulator
    bad = emu.add_backup("stack-1", backup_date=T0, status=1, result="mysqldump: Got error 28: disk full")
    (event,) = events(make_trigger())
    assert event["status"] == "failed"
    assert "mysqldump: Got error 28: disk full" in event["message"]
    assert event["backup"] == record(emu, bad)
    assert len(gets(emu)) == 1


def test_failed_backups_are_passed_over_when_asked(cloud66_emulator):
    emu = cloud66_emulator
    good = emu.add_backup("stack-1", backup_date=T0)
    emu.add_backup("stack-1", backup_date=T0 + timedelta(hours=1), status=1, result="boom")
    (event,) = events(make_trigger(fail_on_failed_backup=False))
    assert event["status"] == "success" and event["backup"] == record(emu, good)


def test_timeout_event_says_what_was_awaited(cloud66_emulator):
    emu = cloud66_emulator
    emu.add_backup("stack-1", backup_date=T0)
    marks = {"*": {"newer_than": "2026-06-01T00:00:00Z", "after_id": None}}
    started = time.monotonic()
    (event,) = events(make_trigger(marks=marks, group=1, timeout=0.7))
    assert time.monotonic() - started < 5
    assert event["status"] == "timeout" and event["backup"] is None and event["backups"] == []
    assert "stack 'stack-1' (group=1)" in event["message"]
    assert "dated after 2026-06-01T00:00:00Z" in event["message"]
    assert event["message"].startswith("Timed out after ")
    assert 3 <= len(gets(emu)) <= 6  # one list request per 0.2 s poll, no more


@pytest.mark.reliability(
    area="API",
    fault="503 storm (14 in a row) while the triggerer polls",
    outcome="retried and succeeded",
)
def test_503_storm_never_ends_the_wait_early(cloud66_emulator):
    emu = cloud66_emulator
    new = emu.add_backup("stack-1", backup_date=T0)
    emu.fail_next(14, r"/backups\.json$", status=503)
    (event,) = events(make_trigger(timeout=30))
    assert event["status"] == "success" and event["backup"] == record(emu, new)
    statuses = [r.status for r in gets(emu)]
    assert statuses == [503] * 14 + [200]


@pytest.mark.reliability(
    area="API",
    fault="connection resets and 429 while the triggerer polls",
    outcome="retried and succeeded",
)
def test_dropped_connections_and_throttling_are_retried(cloud66_emulator):
    emu = cloud66_emulator
    new = emu.add_backup("stack-1", backup_date=T0)
    emu.drop_connection_next(2, r"/backups\.json$", after_bytes=5)
    emu.rate_limit_next(2, r"/backups\.json$", retry_after=0)
    (event,) = events(make_trigger(timeout=30))
    assert event["status"] == "success" and event["backup"] == record(emu, new)
    assert sorted(r.status for r in gets(emu)) == [200, 200, 200, 429, 429]


@pytest.mark.reliability(
    area="API",
    fault="hourly budget spent while deferred: waits for the reset, spends no request",
    outcome="clear error",
)
def test_spent_hourly_budget_waits_without_spending_requests(cloud66_emulator):
    emu = cloud66_emulator
    emu.add_backup("stack-1", backup_date=T0)
    emu.set_remaining(0)
    marks = {"*": {"newer_than": "2026-06-01T00:00:00Z", "after_id": None}}
    (event,) = events(make_trigger(marks=marks, timeout=1.0))
    assert event["status"] == "timeout"
    # The first answer said "throttled until the next hour": no further request was spent on it.
    assert [r.status for r in gets(emu)] == [503]


@pytest.mark.parametrize(
    ("status", "needle"),
    [(401, "rejected the access token"), (403, "forbidden"), (404, "was not found")],
)
@pytest.mark.reliability(area="API", fault="401, 403 or 404 while the triggerer polls", outcome="clear error")
def test_non_transient_errors_end_with_error(cloud66_emulator, status, needle):
    emu = cloud66_emulator
    emu.fail_next(1, r"/backups\.json$", status=status)
    (event,) = events(make_trigger())
    assert event["status"] == "error" and event["backup"] is None
    assert needle in event["message"] and "stack 'stack-1'" in event["message"]
    assert len(gets(emu)) == 1


def test_unknown_connection_ends_with_error(cloud66_emulator):
    (event,) = events(make_trigger(cloud66_conn_id="no_such_connection"))
    assert event["status"] == "error" and "no_such_connection" in event["message"]
    assert cloud66_emulator.requests == []


# --- event validation -----------------------------------------------------------------------------
def _backup(backup_id: int, status: int = 0, hours: int = 0) -> dict[str, Any]:
    raw = {
        "id": backup_id,
        "db_type": "mysql",
        "database_name": "app_db",
        "backup_date_iso": (T0 + timedelta(hours=hours)).isoformat(),
        "backup_status": status,
        "backup_result": "disk full" if status else "",
    }
    return Backup.from_api(raw).to_dict()


def test_valid_events_read_back():
    ok = BackupEvent.from_payload(
        {
            "status": "success",
            "message": "m",
            "backup": _backup(2, hours=1),
            "backups": [_backup(1), _backup(2, hours=1)],
        }
    )
    assert [b.id for b in ok.backups] == [1, 2] and ok.backup is not None and ok.backup.id == 2
    timeout = BackupEvent.from_payload(
        {"status": "timeout", "message": "late", "backup": None, "backups": []}
    )
    assert timeout.status == "timeout" and timeout.backup is None


@pytest.mark.parametrize(
    ("event", "problem"),
    [
        (None, "got NoneType"),
        ("success", "got str"),
        ({"status": "success", "message": "m", "backup": None}, "unexpected Cloud 66 backup event keys"),
        (
            {"status": "done", "message": "m", "backup": None, "backups": []},
            "unknown Cloud 66 backup event status",
        ),
        ({"status": "error", "message": 3, "backup": None, "backups": []}, "string 'message'"),
        ({"status": "success", "message": "m", "backup": None, "backups": []}, "names no backup"),
        (
            {"status": "timeout", "message": "m", "backup": _backup(1), "backups": [_backup(1)]},
            "should name no",
        ),
        (
            {"status": "success", "message": "m", "backup": {"id": "x"}, "backups": [_backup(1)]},
            "malformed backup",
        ),
        (
            {
                "status": "success",
                "message": "m",
                "backup": _backup(1),
                "backups": [_backup(1), _backup(2, hours=1)],
            },
            "not the newest",
        ),
        ({"status": "failed", "message": "m", "backup": _backup(1), "backups": [_backup(1)]}, "did not fail"),
        (
            {"status": "success", "message": "m", "backup": _backup(1, 1), "backups": [_backup(1, 1)]},
            "not succeed",
        ),
    ],
)
def test_invalid_events_raise_clear_errors(event, problem):
    with pytest.raises(AirflowException, match="resumed with an invalid event") as info:
        read_event(event)
    assert problem in str(info.value)


def test_a_deferred_wait_polls_first_one_interval_after_the_task_did(cloud66_emulator: Any) -> None:
    from airflow_provider_c66.watermark import BackupWait

    emu = cloud66_emulator
    wait = BackupWait.from_json({"stack_id": "stack-1", "marks": OPEN, "db_type": None, "group": None})
    trigger = Cloud66BackupTrigger.for_wait(
        wait, timeout=30, poll_interval=0.6, cloud66_conn_id="cloud66_default"
    )
    assert trigger.first_poll_at == pytest.approx(trigger.started_at + 0.6)
    emu.add_backup("stack-1")
    assert [e["status"] for e in events(trigger)] == ["success"]
    (first,) = gets(emu)
    assert first.time >= trigger.first_poll_at - 0.05, "no poll before first_poll_at"


# --- more than one page: a new backup pushed off page 1 by newer ones --------------------------------
def crowd(emu: Any, count: int, start: datetime) -> None:
    """``count`` backups of another database, each a minute newer than the last."""
    for minute in range(count):
        emu.add_backup("stack-1", database_name="app_db", backup_date=start + timedelta(minutes=minute))


def pages(emu: Any) -> list[int]:
    return [int(r.query["page"]) for r in gets(emu)]


def test_a_new_backup_pushed_off_page_1_is_found_on_page_2(cloud66_emulator):
    emu = cloud66_emulator
    emu.add_backup("stack-1", database_name="ledger", backup_date=T0)  # before the watermark
    ledger = emu.add_backup("stack-1", database_name="ledger", backup_date=T0 + timedelta(hours=2))
    crowd(emu, 35, T0 + timedelta(hours=3))  # all newer than the ledger's: page 1 holds none of it
    marks = {"*": {"newer_than": "2026-01-01T01:00:00Z", "after_id": None}}
    (event,) = events(make_trigger(marks=marks, database_name="ledger"))
    assert event["status"] == "success"
    assert event["backup"] == record(emu, ledger)
    assert pages(emu) == [1, 2]


def test_page_1_reaching_below_the_watermark_is_the_only_page_read(cloud66_emulator):
    emu = cloud66_emulator
    crowd(emu, 35, T0)  # page 1: the newest 30, the oldest of them before the watermark
    marks = {"*": {"newer_than": "2026-01-01T00:10:00Z", "after_id": None}}
    (event,) = events(make_trigger(marks=marks, database_name="ledger", timeout=0.5))
    assert event["status"] == "timeout"
    assert set(pages(emu)) == {1} and len(pages(emu)) >= 2  # several polls, one page each


def test_one_poll_reads_at_most_poll_pages_pages(cloud66_emulator):
    from airflow_provider_c66.watermark import POLL_PAGES

    emu = cloud66_emulator
    emu.add_backup("stack-1", database_name="ledger", backup_date=T0 + timedelta(hours=1))
    crowd(emu, 30 * POLL_PAGES + 1, T0 + timedelta(hours=2))  # the ledger's backup is on page 6
    marks = {"*": {"newer_than": "2026-01-01T00:30:00Z", "after_id": None}}
    (event,) = events(make_trigger(marks=marks, database_name="ledger", timeout=0.3))
    assert event["status"] == "timeout"
    assert pages(emu)[:POLL_PAGES] == list(range(1, POLL_PAGES + 1)) and max(pages(emu)) == POLL_PAGES


def test_a_failed_backup_on_page_2_fails_the_wait(cloud66_emulator):
    emu = cloud66_emulator
    failed = emu.add_backup(
        "stack-1", database_name="ledger", backup_date=T0 + timedelta(hours=2), status=1, result="disk full"
    )
    crowd(emu, 31, T0 + timedelta(hours=3))
    marks = {"*": {"newer_than": "2026-01-01T01:00:00Z", "after_id": None}}
    (event,) = events(make_trigger(marks=marks, database_name="ledger"))
    assert event["status"] == "failed" and event["backup"] == record(emu, failed)
    assert "disk full" in event["message"] and pages(emu) == [1, 2]


def test_an_unexpected_error_quoting_a_signed_url_ends_with_a_redacted_error(
    cloud66_emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a library raises may quote a URL it was given; the error event is stored and logged."""
    signed = "https://files.example/b.tar?X-Amz-Credential=AKIDEXAMPLE&X-Amz-Signature=f00dfeed"

    async def broken(self: Any, hook: Any, session: Any) -> None:
        raise ValueError(f"cannot read {signed}")

    monkeypatch.setattr(Cloud66BackupTrigger, "_poll", broken)
    (event,) = events(make_trigger())
    assert event["status"] == "error"
    assert event["message"].startswith("Stopped waiting for a Cloud 66 backup of ")
    assert "ValueError: cannot read https://files.example/b.tar?" in event["message"]
    assert "f00dfeed" not in event["message"] and "AKIDEXAMPLE" not in event["message"]


# --- deferring: the one helper the sensor and the operators use ---------------------------------------
@pytest.mark.parametrize(("timeout", "interval", "backstop"), [(600, 20, 660), (600, 100, 800)])
def test_defer_task_hands_over_the_trigger_and_a_later_backstop(timeout, interval, backstop) -> None:
    from airflow_provider_c66.watermark import BackupWait

    calls: list[dict[str, Any]] = []

    class Task:
        def defer(self, **kwargs: Any) -> None:
            calls.append(kwargs)

    wait = BackupWait.from_json({"stack_id": "stack-1", "marks": OPEN, "db_type": "redis", "group": None})
    before = time.time()
    Cloud66BackupTrigger.defer_task(
        Task(), wait, timeout=timeout, poll_interval=interval, cloud66_conn_id="c66"
    )
    (call,) = calls
    assert set(call) == {"trigger", "method_name", "timeout"}
    assert call["method_name"] == "execute_complete"
    assert call["timeout"] == timedelta(seconds=backstop)
    trigger = call["trigger"]
    assert trigger.wait == wait and trigger.poll_interval == interval and trigger.cloud66_conn_id == "c66"
    assert before + timeout <= trigger.end_time <= time.time() + timeout
