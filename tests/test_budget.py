"""Cloud 66's hourly request budget spent: tasks wait for its reset instead of failing into retries.

The emulator's budget window is a few seconds here, and the hook's own wait for a near reset
(``max_rate_limit_wait``) is cut to half a second, so every task meets a budget that resets "later
than it may wait" and must hand the wait to Airflow. Every run goes through ``dag.test()``.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.sdk import DAG

from airflow_provider_c66 import budget, watermark
from airflow_provider_c66.api import RateBudget
from airflow_provider_c66.budget import ScheduleCost
from airflow_provider_c66.operators.backups import Cloud66CreateBackupOperator
from airflow_provider_c66.sensors.backups import Cloud66BackupSensor
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from airflow_provider_c66.triggers.backups import Cloud66BackupTrigger
from tests.helpers import read, task_instance, xcom_value

WINDOW = 3.0  # seconds: the emulator's "hour"
MiB = 2**20


@pytest.fixture
def short_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hooks wait at most 0.5 s for a reset themselves; tasks resume 0.2-0.5 s after it."""
    polling = watermark.polling_policy
    monkeypatch.setattr(
        watermark, "polling_policy", lambda interval: replace(polling(interval), max_rate_limit_wait=0.5)
    )
    monkeypatch.setattr(budget, "RESET_SPREAD", 0.5)


@pytest.fixture
def emu(cloud66_emulator_factory: Any) -> Any:
    emulator = cloud66_emulator_factory(stacks=(), budget_window=WINDOW, backup_delay=0.2)
    emulator.add_stack("stack-1", databases=[("mysql", "app_db")])
    return emulator


def spend(emu: Any, remaining: int) -> Any:
    """A ``pre_execute`` that leaves ``remaining`` requests in the budget when the task first starts
    (dag.test spends seconds before that, longer than the emulator's "hour")."""
    done: list[bool] = []

    def hook(context: Any) -> None:
        if not done:
            done.append(True)
            emu.set_remaining(remaining)

    return hook


def api_statuses(emu: Any) -> list[int]:
    return [r.status for r in emu.requests if r.kind == "api"]


@pytest.mark.parametrize("deferrable", [False, True], ids=["worker", "deferrable"])
def test_create_operator_meeting_a_spent_budget_waits_for_the_reset_and_posts_once(
    emu, run_dag, short_waits, deferrable
):
    emu.add_backup("stack-1", backup_date=datetime(2026, 1, 1, tzinfo=UTC))
    with DAG(f"budget_create_{deferrable}", schedule=None) as dag:
        Cloud66CreateBackupOperator(
            task_id="create",
            stack_id="stack-1",
            db_type="mysql",
            frequency="0 3 * * *",
            wait_for_completion=True,
            poll_interval=0.2,
            timeout=30,
            deferrable=deferrable,
            retries=0,
            pre_execute=spend(emu, 0),
        )
    dagrun = run_dag(dag)
    assert dagrun.state == "success"
    ti = task_instance(dagrun, "create")
    assert ti.try_number == 1, "waiting for the reset is not a try"
    statuses = api_statuses(emu)
    assert statuses[0] == 503 and statuses.count(503) == 1, statuses
    assert sum(r.method == "POST" for r in emu.requests) == 1
    (new,) = xcom_value(dagrun, "create")
    assert new["db_type"] == "mysql"


@pytest.mark.parametrize("mode", ["reschedule", "deferrable"])
def test_sensor_meeting_a_spent_budget_sends_nothing_until_the_reset(emu, run_dag, short_waits, mode):
    bid = emu.add_backup("stack-1", backup_date=datetime.now(UTC))
    args = {"deferrable": True} if mode == "deferrable" else {"deferrable": False, "mode": "reschedule"}
    with DAG(f"budget_sensor_{mode}", schedule=None) as dag:
        Cloud66BackupSensor(
            task_id="wait",
            stack_id="stack-1",
            newer_than=datetime.now(UTC) - timedelta(hours=1),
            poke_interval=0.2,
            timeout=60,
            retries=0,
            pre_execute=spend(emu, 0),
            **args,
        )
    dagrun = run_dag(dag)
    assert dagrun.state == "success"
    assert xcom_value(dagrun, "wait")["id"] == bid
    assert task_instance(dagrun, "wait").try_number == 1
    assert api_statuses(emu) == [503, 200], "one refused poll, then none until the reset"


def test_a_mapped_transfer_meeting_a_spent_budget_runs_again_after_the_reset(
    emu, run_dag, short_waits, s3_client, s3_bucket, aws_connection
):
    ids = [
        emu.add_backup("stack-1", size=MiB + n, backup_date=datetime(2026, 1, 2, n, tzinfo=UTC))
        for n in range(3)
    ]
    with DAG("budget_transfer", schedule=None) as dag:
        Cloud66BackupToS3Operator.partial(
            task_id="copy",
            stack_id="stack-1",
            s3_bucket=s3_bucket,
            asset_alias=None,
            retries=0,
            pre_execute=spend(emu, 5),  # the first archive's record, list, URL, last look; not all three
        ).expand(backup_id=ids)
    dagrun = run_dag(dag)
    assert dagrun.state == "success"
    for index, bid in enumerate(ids):
        (uri,) = xcom_value(dagrun, "copy", map_index=index)
        key = uri.split("/", 3)[3]
        assert read(s3_client, s3_bucket, key) == b"".join(emu.iter_archive("stack-1", bid))
    assert 503 in api_statuses(emu), "the budget was met"
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_triggers_of_one_process_share_the_budget(cloud66_emulator_factory):
    """Five waits in one triggerer: the first throttled answer holds all of them until the reset."""
    emu = cloud66_emulator_factory(budget_window=WINDOW)
    bid = emu.add_backup("stack-1", backup_date=datetime.now(UTC))
    emu.set_remaining(0)
    since = datetime.now(UTC) - timedelta(hours=1)

    async def run_all() -> list[Any]:
        now = datetime.now(UTC).timestamp()
        triggers = [
            Cloud66BackupTrigger(
                stack_id="stack-1",
                marks={"*": {"newer_than": since.isoformat(), "after_id": None}},
                end_time=now + 30,
                poll_interval=0.1,
                first_poll_at=now + 0.2 * n,  # as waits deferred one after the other start polling
            )
            for n in range(5)
        ]
        return await asyncio.gather(*(anext(t.run()) for t in triggers))

    events = asyncio.run(run_all())
    assert {e.payload["status"] for e in events} == {"success"}
    assert {e.payload["backup"]["id"] for e in events} == {bid}
    statuses = api_statuses(emu)
    assert statuses.count(503) == 1, f"the waits shared what the first refusal taught: {statuses}"
    assert statuses.count(200) == 5


def test_next_poll_waits_for_a_known_reset_only():
    rate = RateBudget()
    assert budget.next_poll_in(rate, 30.0, now=1000.0) == 30.0
    rate.reset_at = 1100.0
    assert 101.0 <= budget.next_poll_in(rate, 30.0, now=1000.0) <= 100.0 + budget.RESET_SPREAD
    assert budget.next_poll_in(rate, 300.0, now=1000.0) == 300.0


def test_the_schedule_cost_says_what_to_change():
    fits = ScheduleCost(stacks=100, poll_interval=300, archives=200, files_per_archive=1)
    assert fits.waiting_per_hour == 1200 and fits.per_run == 100 + 200 * 3
    assert fits.problem() is None
    tight = ScheduleCost(stacks=200, poll_interval=150, archives=400)
    assert tight.waiting_per_hour == 4800
    message = tight.problem()
    assert message is not None and "raise the poll interval to at least" in message
    assert (
        str(int(tight.shortest_poll_interval()) + 1) in message
        or str(round(tight.shortest_poll_interval())) in message
    )
    assert ScheduleCost(stacks=200, poll_interval=9000, archives=200).problem() is None
    huge = ScheduleCost(stacks=1000, poll_interval=3600, archives=4000, files_per_archive=2)
    assert "split the stacks over several Cloud 66 tokens" in (huge.problem() or "")
