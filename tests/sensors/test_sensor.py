"""Cloud66BackupSensor end to end through ``dag.test()`` against the emulator, in every mode."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowSensorTimeout

from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.models import Backup
from airflow_provider_c66.sensors.backups import Cloud66BackupSensor
from airflow_provider_c66.watermark import ANY_TYPE, BackupWait, Watermark
from tests.helpers import (
    NOW,
    RUN,
    Failures,
    list_gets,
    record,
    run_sensor,
    when_requests,
    xcom_value,
)

MODES = ["poke", "reschedule", "deferrable"]


def mode_args(mode: str) -> dict[str, Any]:
    if mode == "deferrable":
        return {"deferrable": True}
    return {"deferrable": False, "mode": mode}


# --- end to end -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_waits_for_a_new_matching_backup_and_returns_it(cloud66_emulator, run_dag, mode):
    emu = cloud66_emulator
    emu.add_backup("stack-1", backup_date=RUN - timedelta(hours=1))  # before the data interval
    emu.add_backup("stack-1", backup_date=NOW, group=2)  # other group
    emu.add_backup("stack-1", db_type="redis", database_name="cache", backup_date=NOW, status=1)
    emu.add_backup("stack-1", database_name="other_db", backup_date=NOW)
    new: list[int] = []
    when_requests(
        emu, 1, lambda: new.append(emu.add_backup("stack-1", backup_date=NOW + timedelta(minutes=1)))
    )

    dagrun = run_sensor(
        run_dag,
        f"sensor_{mode}",
        db_type="mysql",
        group=1,
        database_name="app_db",
        poke_interval=0.2,
        **mode_args(mode),
    )

    assert dagrun.state == "success"
    assert xcom_value(dagrun, "wait") == record(emu, new[0])
    assert [r.query for r in list_gets(emu)] == [{"db_type": "mysql", "group": "1", "page": "1"}] * 2
    assert len(emu.requests) == 2


def test_deferrable_returns_at_once_when_the_backup_is_already_there(cloud66_emulator, run_dag):
    emu = cloud66_emulator
    there = emu.add_backup("stack-1", backup_date=NOW)
    dagrun = run_sensor(run_dag, "sensor_already_there", deferrable=True, poke_interval=0.2)
    assert dagrun.state == "success"
    assert xcom_value(dagrun, "wait") == record(emu, there)
    assert len(emu.requests) == 1  # the check before deferring; no trigger ran


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_a_failed_backup_fails_at_once_with_backup_result(cloud66_emulator, run_dag, mode):
    emu = cloud66_emulator
    failures = Failures()
    result = "Backup failed: mysqldump exited with status 2 (Got error 28 from storage engine)"
    when_requests(emu, 1, lambda: emu.add_backup("stack-1", backup_date=NOW, status=1, result=result))

    dagrun = run_sensor(
        run_dag,
        f"sensor_failed_{mode}",
        poke_interval=0.2,
        timeout=30,
        failures=failures,
        **mode_args(mode),
    )

    assert dagrun.state == "failed"
    assert isinstance(failures.only, AirflowException)
    assert result in str(failures.only) and "stack 'stack-1'" in str(failures.only)
    assert len(list_gets(emu)) == 2


def test_fail_on_failed_backup_false_waits_for_a_good_one(cloud66_emulator, run_dag):
    emu = cloud66_emulator
    emu.add_backup("stack-1", backup_date=NOW, status=1, result="boom")
    good: list[int] = []
    when_requests(
        emu, 1, lambda: good.append(emu.add_backup("stack-1", backup_date=NOW + timedelta(minutes=1)))
    )
    dagrun = run_sensor(
        run_dag,
        "sensor_skip_failed",
        fail_on_failed_backup="{{ params.strict }}",
        params={"strict": False},
        poke_interval=0.2,
    )
    assert dagrun.state == "success"
    assert xcom_value(dagrun, "wait") == record(emu, good[0])
    assert len(list_gets(emu)) == 2


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_timeout_says_what_was_awaited(cloud66_emulator, run_dag, mode):
    emu = cloud66_emulator
    emu.add_backup("stack-1", backup_date=RUN - timedelta(minutes=5))
    failures = Failures()
    dagrun = run_sensor(
        run_dag,
        f"sensor_timeout_{mode}",
        db_type="mysql",
        poke_interval=0.2,
        timeout=0.7,
        failures=failures,
        **mode_args(mode),
    )
    assert dagrun.state == "failed"
    error = failures.only
    assert isinstance(error, AirflowSensorTimeout)
    message = str(error)
    assert "Timed out after" in message and "stack 'stack-1' (db_type='mysql')" in message
    assert f"dated after {RUN.isoformat().replace('+00:00', 'Z')}" in message
    assert 2 <= len(list_gets(emu)) <= 7


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_a_new_backup_pushed_off_page_1_is_found(cloud66_emulator, run_dag, mode):
    """35 newer backups of another database fill page 1; the awaited one is on page 2."""
    emu = cloud66_emulator
    ledger: list[int] = []

    def arrive() -> None:
        ledger.append(emu.add_backup("stack-1", database_name="ledger", backup_date=NOW))
        for minute in range(1, 36):
            emu.add_backup("stack-1", backup_date=NOW + timedelta(minutes=minute))

    when_requests(emu, 1, arrive)  # after the first look (the task's own check, when deferrable)
    dagrun = run_sensor(
        run_dag, f"sensor_page_2_{mode}", database_name="ledger", poke_interval=0.2, **mode_args(mode)
    )
    assert dagrun.state == "success"
    assert xcom_value(dagrun, "wait") == record(emu, ledger[0])
    assert [r.query["page"] for r in list_gets(emu)] == ["1", "1", "2"]


def wait_for(marks: dict[str, Watermark], **filters: Any) -> BackupWait:
    return BackupWait("stack-1", marks, **filters)


def listed(*rows: tuple[int, str, datetime], status: int = 0) -> list[Backup]:
    """Backups (id, database, date) of mysql, group 1, in the API's shape."""
    return [
        Backup.from_api(
            {
                "id": ident,
                "db_type": "mysql",
                "database_name": name,
                "group": 1,
                "backup_date_iso": when.isoformat(),
                "backup_status": status,
                "backup_result": "",
                "file_base": name,
            }
        )
        for ident, name, when in rows
    ]


def test_wants_older_only_while_an_unmet_watermark_may_be_further_back():
    t = RUN
    page = listed((9, "app_db", t + timedelta(minutes=2)), (8, "app_db", t + timedelta(minutes=1)))
    ledger = {"database_name": "ledger"}
    # The whole page is newer than the line, and nothing on it passes: an older page may hold it.
    assert wait_for({ANY_TYPE: Watermark(t)}, **ledger).wants_older(page)
    # The page reaches back past the line: nothing older can pass.
    assert not wait_for({ANY_TYPE: Watermark(t + timedelta(minutes=1))}, **ledger).wants_older(page)
    # Already found on this page.
    assert not wait_for({ANY_TYPE: Watermark(t)}).wants_older(page)
    # after_id only: the reference is on the page (its date is the line) or not (ids decide).
    assert not wait_for({ANY_TYPE: Watermark(after_id=8)}, **ledger).wants_older(page)
    assert wait_for({ANY_TYPE: Watermark(after_id=5)}, **ledger).wants_older(page)
    # A failure decides at once; an empty page has nothing older.
    failed = listed((9, "ledger", t + timedelta(minutes=2)), status=1)
    assert not wait_for({ANY_TYPE: Watermark(t)}, **ledger).wants_older(failed)
    assert not wait_for({ANY_TYPE: Watermark(t)}, **ledger).wants_older([])
    # Several types: one met, one not and possibly further back.
    marks = {"mysql": Watermark(t), "redis": Watermark(t)}
    assert wait_for(marks).wants_older(page)


def test_templated_after_backup_id(cloud66_emulator, run_dag):
    emu = cloud66_emulator
    first = emu.add_backup("stack-1", backup_date=RUN - timedelta(hours=5))
    second = emu.add_backup("stack-1", backup_date=RUN - timedelta(hours=4))
    dagrun = run_sensor(
        run_dag,
        "sensor_after_id",
        after_backup_id="{{ params.after }}",
        params={"after": first},
        poke_interval=0.2,
    )
    assert dagrun.state == "success"
    assert xcom_value(dagrun, "wait") == record(emu, second)
    assert len(emu.requests) == 1


def test_templated_newer_than_iso_string(cloud66_emulator, run_dag):
    emu = cloud66_emulator
    emu.add_backup("stack-1", backup_date=NOW - timedelta(minutes=30))
    later = emu.add_backup("stack-1", backup_date=NOW - timedelta(minutes=10))
    dagrun = run_sensor(
        run_dag,
        "sensor_newer_than",
        newer_than="{{ (data_interval_start + macros.timedelta(minutes=45)).isoformat() }}",
        poke_interval=0.2,
    )
    assert dagrun.state == "success"
    assert xcom_value(dagrun, "wait") == record(emu, later)


def test_run_without_logical_date_waits_from_run_after(cloud66_emulator, run_dag):
    emu = cloud66_emulator
    emu.add_backup("stack-1", backup_date=NOW - timedelta(minutes=1))
    new = emu.add_backup("stack-1", backup_date=datetime.now(UTC) + timedelta(minutes=5))
    dagrun = run_sensor(run_dag, "sensor_no_logical_date", logical_date=None, poke_interval=0.2)
    assert dagrun.state == "success"
    assert xcom_value(dagrun, "wait") == record(emu, new)


# --- arguments ------------------------------------------------------------------------------------
def test_default_watermark_falls_back_from_data_interval_to_run_after():
    sensor = Cloud66BackupSensor(task_id="w", stack_id="stack-1")
    start, logical, after = RUN, RUN + timedelta(minutes=1), RUN + timedelta(minutes=2)
    run = SimpleNamespace(run_after=after, start_date=None)
    full = {"data_interval_start": start, "logical_date": logical, "dag_run": run}
    assert sensor.build_wait(full).marks == {ANY_TYPE: Watermark(start)}
    assert sensor.build_wait({**full, "data_interval_start": None}).marks == {ANY_TYPE: Watermark(logical)}
    assert sensor.build_wait({"dag_run": run}).marks == {ANY_TYPE: Watermark(after)}
    with pytest.raises(Cloud66InputError, match="newer_than: has no default"):
        sensor.build_wait({})


def test_defaults_keep_100_waits_under_the_hourly_budget():
    sensor = Cloud66BackupSensor(task_id="w", stack_id="stack-1")
    assert sensor.poke_interval == 150
    assert 100 * 3600 / sensor.poke_interval < 3000
    assert set(sensor.template_fields) == {
        "stack_id",
        "db_type",
        "database_name",
        "group",
        "newer_than",
        "after_backup_id",
        "fail_on_failed_backup",
        "settle_seconds",
        "cloud66_conn_id",
    }


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_several_types_are_waited_for_with_one_request_per_poll(cloud66_emulator, run_dag, mode):
    """db_type as a list: done when every type has a new backup; each poll is one unfiltered read."""
    emu = cloud66_emulator
    emu.add_backup("stack-1", backup_date=RUN - timedelta(hours=1))  # before the watermark
    new: dict[str, int] = {}
    when_requests(emu, 1, lambda: new.update(mysql=emu.add_backup("stack-1", backup_date=NOW)))
    when_requests(
        emu,
        3,
        lambda: new.update(
            redis=emu.add_backup("stack-1", db_type="redis", database_name="cache", backup_date=NOW)
        ),
    )

    dagrun = run_sensor(
        run_dag, f"sensor_types_{mode}", db_type=["redis", "mysql"], poke_interval=0.2, **mode_args(mode)
    )

    assert dagrun.state == "success"
    assert xcom_value(dagrun, "wait") == [record(emu, new["redis"]), record(emu, new["mysql"])]
    gets = list_gets(emu)
    assert len(gets) >= 3 and len(emu.requests) == len(gets)
    assert {tuple(sorted(r.query)) for r in gets} == {("page",)}, "not filtered by type: one read serves all"


def test_several_types_fail_at_once_on_a_failed_backup_of_any(cloud66_emulator, run_dag):
    emu = cloud66_emulator
    emu.add_backup("stack-1", backup_date=NOW)
    emu.add_backup("stack-1", db_type="redis", database_name="cache", backup_date=NOW, status=1, result="oom")
    failures = Failures()
    dagrun = run_sensor(
        run_dag, "sensor_types_failed", db_type=["mysql", "redis"], failures=failures, poke_interval=0.2
    )
    assert dagrun.state == "failed"
    assert "oom" in str(failures.only)
