"""A backup still being written is never archived, and waits can ask for a settled one.

Cloud 66 documents no "in progress" status and does not say whether a backup's row (or its files)
appears only once the run has finished. The emulator plays every plausible answer: a record whose
files grow while a copy runs (a longer last part, or a new part), and a record whose ``backup_size``
is not what its files hold. Emulator and moto over HTTP, Airflow's ``dag.test()`` for the waits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowException

from airflow_provider_c66.models import Backup, BackupStatus
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from airflow_provider_c66.watermark import ANY_TYPE, BackupWait, Watermark
from tests.helpers import (
    LIST_PATH,
    archive_of,
    keys,
    list_gets,
    open_uploads,
    record,
    run_sensor,
    task_instance,
    when_requests,
    xcom_value,
)

MiB = 1 << 20
SPLIT = 5 * MiB + 123
DATE = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
reliability = pytest.mark.reliability


@pytest.fixture
def emu(cloud66_emulator_factory: Any) -> Any:
    return cloud66_emulator_factory(split_threshold=6 * MiB, split_size=SPLIT)


def make_op(bucket: str, bid: int, **kwargs: Any) -> Cloud66BackupToS3Operator:
    kwargs.setdefault("asset_alias", None)
    return Cloud66BackupToS3Operator(
        task_id="archive", stack_id="stack-1", backup_id=bid, s3_bucket=bucket, part_size=5 * MiB, **kwargs
    )


# --- the transfer ---------------------------------------------------------------------------------
@reliability(
    area="source",
    fault="a backup still being written: a new part appears while the copy runs",
    outcome="retryable error, nothing completed",
)
def test_a_part_added_during_the_copy_completes_nothing_and_the_retry_gets_it_all(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    # Two full parts; after the first downloads a third part is written and nothing else changes,
    # so only the file list read again before completion can see it.
    bid = emu.add_backup("stack-1", size=2 * SPLIT, backup_date=DATE)
    emu.grow_backup("stack-1", bid, 1000, after_downloads=3)
    with pytest.raises(AirflowException, match="file list changed during the copy, from tar-aa, tar-ab to"):
        make_op(s3_bucket, bid).execute({})
    assert keys(s3_client, s3_bucket) == [] and open_uploads(s3_client, s3_bucket) == []

    make_op(s3_bucket, bid).execute({})  # Airflow's retry, once the backup has settled
    data, manifest = archive_of(emu, s3_client, s3_bucket, bid)
    assert data == b"".join(emu.iter_archive("stack-1", bid)) and len(data) == 2 * SPLIT + 1000
    assert [s["file_id"] for s in manifest["sources"]] == ["tar-aa", "tar-ab", "tar-ac"]


@reliability(
    area="source",
    fault="a backup still being written: its last part grows while the copy runs",
    outcome="retryable error, nothing completed",
)
@pytest.mark.parametrize("join_parts", [True, False], ids=["joined", "per-file"])
def test_a_part_that_grows_during_the_copy_fails_the_try(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str, join_parts: bool
) -> None:
    bid = emu.add_backup("stack-1", size=SPLIT + 2 * MiB, backup_date=DATE)
    emu.grow_backup("stack-1", bid, MiB, after_downloads=2)  # after both size probes
    # Joined, the growth is seen in a ranged read; per file, the second file's copy starts after it,
    # and its files no longer hold what the record (read when the try began) said.
    expected = rf"from {2 * MiB} to {3 * MiB} bytes" if join_parts else rf"hold {SPLIT + 3 * MiB} bytes"
    with pytest.raises(AirflowException, match=rf"not settled: .*{expected}.* Nothing was completed"):
        make_op(s3_bucket, bid, join_parts=join_parts).execute({})
    assert open_uploads(s3_client, s3_bucket) == []
    assert not any(k.endswith("manifest.json") for k in keys(s3_client, s3_bucket))
    if join_parts:
        assert keys(s3_client, s3_bucket) == []


@reliability(
    area="source",
    fault="the files' total disagrees with the record's backup_size",
    outcome="retryable error, nothing completed",
)
def test_a_total_that_disagrees_with_backup_size_fails_before_any_upload(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    bid = emu.add_backup("stack-1", size=3 * MiB, backup_date=DATE, backup_size=4 * MiB)
    emu.clear_requests()
    with pytest.raises(
        AirflowException, match=f"hold {3 * MiB} bytes but the backup's record says {4 * MiB}"
    ):
        make_op(s3_bucket, bid).execute({})
    assert keys(s3_client, s3_bucket) == [] and open_uploads(s3_client, s3_bucket) == []
    assert [r.headers.get("Range") for r in emu.requests if r.kind == "file"] == ["bytes=0-0"]

    # Per-file objects: the same check, made before the last object completes.
    with pytest.raises(AirflowException, match=f"hold {3 * MiB} bytes but its record says {4 * MiB}"):
        make_op(s3_bucket, bid, join_parts=False).execute({})
    assert open_uploads(s3_client, s3_bucket) == [] and keys(s3_client, s3_bucket) == []

    # Told not to trust the figure (its unit is undocumented), the copy goes ahead.
    make_op(s3_bucket, bid, verify_backup_size=False).execute({})
    assert archive_of(emu, s3_client, s3_bucket, bid)[0] == b"".join(emu.iter_archive("stack-1", bid))


def test_a_zero_backup_size_is_not_trusted_either_way(
    emu: Any, s3_client: Any, s3_bucket: str, aws_connection: str
) -> None:
    bid = emu.add_backup("stack-1", size=3 * MiB, backup_date=DATE, backup_size=0)
    make_op(s3_bucket, bid).execute({})
    data, manifest = archive_of(emu, s3_client, s3_bucket, bid)
    assert data == b"".join(emu.iter_archive("stack-1", bid)) and manifest["total_size"] == 3 * MiB


# --- settle_seconds: waits that ask for a settled backup ------------------------------------------
def backup(updated: datetime | None, created: datetime | None = None, failed: bool = False) -> Backup:
    status = BackupStatus.FAILED if failed else BackupStatus.OK
    date = datetime(2026, 1, 1, tzinfo=UTC)
    return Backup(5, "mysql", "db", date, status, created_at=created, updated_at=updated)


def test_settled_reads_updated_at_then_created_at_then_the_date() -> None:
    wait = BackupWait("stack-1", {ANY_TYPE: Watermark()}, settle_seconds=600)
    t = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert wait.settled(backup(updated=t), now=t + timedelta(seconds=600))
    assert not wait.settled(backup(updated=t), now=t + timedelta(seconds=599))
    assert not wait.settled(backup(updated=None, created=t), now=t + timedelta(seconds=599))
    assert wait.settled(backup(updated=None, created=None), now=t)  # only the (old) date: settled
    assert BackupWait("stack-1").settled(backup(updated=t), now=t)  # 0: at once
    # An unsettled success is "not yet"; a failure ends the wait whatever its age.
    assert wait.evaluate([backup(updated=t)], now=t).status == "waiting"
    assert wait.evaluate([backup(updated=t, failed=True)], now=t).status == "failed"
    assert wait.evaluate([backup(updated=t)], now=t + timedelta(hours=1)).status == "success"


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_sensor_with_settle_seconds_waits_until_the_record_is_that_old(
    cloud66_emulator: Any, run_dag: Any, mode: str
) -> None:
    emu = cloud66_emulator
    now = datetime.now(UTC).replace(microsecond=0)
    settle = 3
    written: list[datetime] = []

    def write_backup() -> None:
        # Dated half an hour ago (after the run's start), but its record was written just now: the
        # first look, whenever dag.test() gets to it, finds nothing, and the next ones a fresh record.
        written.append(datetime.now(UTC))
        emu.add_backup("stack-1", backup_date=now - timedelta(minutes=30), updated_at=written[0])

    when_requests(emu, 1, write_backup)
    dagrun = run_sensor(
        run_dag,
        f"sensor_settle_{mode}",
        logical_date=now - timedelta(hours=1),
        settle_seconds=settle,
        poke_interval=1,
        timeout=60,
        deferrable=mode == "deferrable",
    )
    assert dagrun.state == "success"
    (backup,) = emu.backups("stack-1")
    assert xcom_value(dagrun, "wait") == record(emu, backup["id"])
    polls = list_gets(emu, LIST_PATH)
    # The record says it changed at the written second; it is settled `settle` seconds after that.
    mark = written[0].replace(microsecond=0).timestamp() + settle
    assert any(written[0].timestamp() < p.time < mark for p in polls), "no look found it unsettled"
    # The sensor judges on its own clock once an answer is in; the emulator stamps arrival. So the
    # last poll may arrive just before the mark, but no earlier one came after it and the task
    # ended only after it.
    assert all(p.time < mark for p in polls[:-1])
    assert task_instance(dagrun, "wait").end_date.timestamp() >= mark
