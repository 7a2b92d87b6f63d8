"""Import a backup archived in S3 back into a Cloud 66 stack, once a person has approved it.

Use it to restore from your own data lake: point it at an archive object written by
``cloud66_archive_to_s3`` (the key ends in the archive's name, next to its ``manifest.json``). An
import writes into a live stack, so the run first describes the archive (its stack, backup, size
and date, read from S3 and its manifest) and waits for a person to approve it in Airflow's Required
Actions view (``ApprovalOperator``, Airflow 3.1+); a rejection, or no answer within a day, ends the
run without calling Cloud 66. On approval the object is presigned for a bounded time and handed to
Cloud 66's import, and the last task waits until the imported backup appears in the chosen group.

Connections: ``aws_default`` (read access to the bucket) and ``cloud66_default`` (an access token
with the ``admin`` scope).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param, task

from airflow_provider_c66.sensors.backups import Cloud66BackupSensor
from airflow_provider_c66.transfers.s3_to_cloud66 import S3ToCloud66ImportOperator

with DAG(
    dag_id="cloud66_restore_from_s3",
    description="Import an archived Cloud 66 backup from S3 into a stack",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    dagrun_timeout=timedelta(days=1),  # no answer within a day: the run fails and nothing is imported
    params={
        "s3_bucket": Param("my-data-lake", type="string"),
        "s3_key": Param("cloud66/my-stack-uid/mysql/app_db/2026/01/01/1234/app_db.tar", type="string"),
        "stack_id": Param("my-stack-uid", type="string"),
        "group": Param(1, type="integer", minimum=1, description="backup group to import into"),
        "db_type": Param("mysql", type="string"),
    },
    tags=["cloud66", "backups", "s3", "restore"],
) as dag:

    @task
    def describe_archive(params: dict[str, Any]) -> dict[str, Any]:
        """What the approver is shown: the object's size and date, and the backup its manifest names."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from botocore.exceptions import ClientError

        from airflow_provider_c66.transfers.archive import MANIFEST_NAME
        from airflow_provider_c66.transfers.backup_to_s3 import head_object, read_manifest
        from airflow_provider_c66.transfers.copy import s3_error_code

        bucket, key = params["s3_bucket"], params["s3_key"]
        client = S3Hook(aws_conn_id="aws_default").get_conn()
        head = head_object(client, bucket, key)
        if head is None:
            raise ValueError(f"s3://{bucket}/{key} does not exist: nothing to restore")
        try:
            manifest = read_manifest(client, bucket, key.rpartition("/")[0] + "/" + MANIFEST_NAME) or {}
        except ValueError:  # not JSON: not this package's manifest
            manifest = {}
        except ClientError as exc:
            # With the README's restore policy (no s3:ListBucket) a missing key answers 403, not 404.
            if s3_error_code(exc) not in ("403", "AccessDenied"):
                raise
            manifest = {}
        backup = manifest.get("backup") or {}
        return {
            "uri": f"s3://{bucket}/{key}",
            "size": head["ContentLength"],
            "written": head["LastModified"].isoformat(),
            "backup": (
                f"backup {backup.get('id')} of {manifest.get('stack_id')}: {backup.get('db_type')} "
                f"database {backup.get('database_name')}, taken {backup.get('backup_date_iso')}"
                if backup
                else "no manifest beside it: not an archive this package wrote"
            ),
        }

    described = describe_archive()
    approve = ApprovalOperator(
        task_id="approve_restore",
        subject="Restore into Cloud 66 stack {{ params.stack_id }}?",
        body=(
            "{% set a = ti.xcom_pull(task_ids='describe_archive') %}"
            "Importing writes this backup into the live stack **{{ params.stack_id }}** "
            "(backup group {{ params.group }}, {{ params.db_type }}).\n\n"
            "- Archive: `{{ a.uri }}`\n"
            "- Size: {{ '{:,}'.format(a.size) }} bytes\n"
            "- Written to S3: {{ a.written }}\n"
            "- From: {{ a.backup }}"
        ),
    )
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
    described >> approve >> start_import >> wait_for_import
