"""Import a backup archived in S3 back into a Cloud 66 stack.

Use it to restore from your own data lake: point it at an archive object written by
``cloud66_archive_to_s3`` (the key ends in the archive's name, next to its ``manifest.json``). The
object is checked first, then presigned for a bounded time and handed to Cloud 66's import, and the
task waits until the imported backup appears in the chosen backup group.

Connections: ``aws_default`` (read access to the bucket) and ``cloud66_default`` (an access token
with the ``admin`` scope).
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_c66.sensors.backups import Cloud66BackupSensor
from airflow_provider_c66.transfers.s3_to_cloud66 import S3ToCloud66ImportOperator

with DAG(
    dag_id="cloud66_restore_from_s3",
    description="Import an archived Cloud 66 backup from S3 into a stack",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "s3_bucket": Param("my-data-lake", type="string"),
        "s3_key": Param("cloud66/my-stack-uid/mysql/app_db/2026/01/01/1234/app_db.tar", type="string"),
        "stack_id": Param("my-stack-uid", type="string"),
        "group": Param(1, type="integer", minimum=1, description="backup group to import into"),
        "db_type": Param("mysql", type="string"),
    },
    tags=["cloud66", "backups", "s3", "restore"],
) as dag:
    start_import = S3ToCloud66ImportOperator(
        task_id="import_from_s3",
        s3_bucket="{{ params.s3_bucket }}",
        s3_key="{{ params.s3_key }}",
        stack_id="{{ params.stack_id }}",
        group="{{ params.group }}",
        db_type="{{ params.db_type }}",
    )
    wait_for_import = Cloud66BackupSensor(
        task_id="wait_for_imported_backup",
        stack_id="{{ params.stack_id }}",
        db_type="{{ params.db_type }}",
        group="{{ params.group }}",
        # Before the import was requested (the run's start, reset when the run is cleared), not when
        # this sensor starts: an import that finishes first must count. Cloud 66 dates backups to
        # the second, so one second earlier still admits a backup dated in the run's first second.
        newer_than="{{ ((dag_run.start_date or dag_run.run_after) - macros.timedelta(seconds=1)).isoformat() }}",
        deferrable=True,
        poke_interval=60,
        timeout=6 * 3600,
    )
    start_import >> wait_for_import
