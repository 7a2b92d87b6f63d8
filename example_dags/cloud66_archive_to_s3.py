"""Archive the latest successful Cloud 66 backup of every configured stack and database into S3, daily.

Use it to keep your own copy of Cloud 66 managed backups in an S3 data lake. Each (stack, db_type)
pair gets its own mapped sensor and copy: the sensor (deferrable, so it holds no worker slot) waits
for a backup made in the ``lookback_hours`` before the run's data interval ends (for a daily run, the
interval itself; for a manual run, the day before it was triggered), the copy streams the newest into
``s3://<bucket>/cloud66/<stack>/<db_type>/<database>/<YYYY>/<MM>/<DD>/<backup id>/`` with a
``manifest.json``, and a summary lists what landed. A failed backup fails its own mapped tasks only;
the summary then fails the run after reporting, so the failure is visible. A second run for the same
interval finds the complete archives and copies nothing.

Connections: ``cloud66_default`` (Cloud 66 access token, ``public`` scope) and ``aws_default``
(write access to the bucket). Configuration, read when the run starts (never at parse time):
the Airflow Variable ``cloud66_archive_targets`` (JSON list of ``{"stack_id": ..., "db_type": ...}``)
or the ``targets`` param, and the ``s3_bucket`` param.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task, task_group

from airflow_provider_c66.sensors.backups import Cloud66BackupSensor
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator

# 300 s keeps 100 concurrent waits at 1,200 requests an hour, well inside Cloud 66's 3,000.
POKE_INTERVAL = float(os.environ.get("CLOUD66_ARCHIVE_POKE_INTERVAL", "300"))
WAIT_TIMEOUT = float(os.environ.get("CLOUD66_ARCHIVE_WAIT_TIMEOUT", str(6 * 3600)))

# The newest backup made in the lookback window before the interval's end (a manual run: before it
# was triggered), so a daily run archives that day's backup and a manual run the latest one.
NEWER_THAN = "{{ ((data_interval_end or dag_run.run_after) - macros.timedelta(hours=params.lookback_hours)).isoformat() }}"

with DAG(
    dag_id="cloud66_archive_to_s3",
    description="Daily archive of Cloud 66 managed backups into an S3 data lake",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=5)},
    params={
        "targets": Param(
            [{"stack_id": "my-stack-uid", "db_type": "mysql"}],
            type="array",
            description="(stack_id, db_type) pairs; the Variable cloud66_archive_targets wins when set",
        ),
        "s3_bucket": Param("my-data-lake", type="string", description="destination bucket"),
        "lookback_hours": Param(24, type="integer", minimum=1, description="how far back a backup counts"),
        "s3_key_prefix": Param(
            "cloud66/{stack_id}/{db_type}/{database_name}/{YYYY}/{MM}/{DD}/{backup_id}/", type="string"
        ),
    },
    tags=["cloud66", "backups", "s3"],
) as dag:

    @task
    def targets(params: dict[str, Any]) -> list[dict[str, str]]:
        """The (stack, db_type) pairs to archive, checked before any sensor starts."""
        from airflow.sdk import Variable

        from airflow_provider_c66 import validation

        configured = Variable.get("cloud66_archive_targets", default=None, deserialize_json=True)
        items = configured if configured is not None else params["targets"]
        if not isinstance(items, list) or not items:
            raise ValueError("targets: must be a non-empty list of {'stack_id': ..., 'db_type': ...}")
        return [
            {
                "stack_id": validation.stack_id(item.get("stack_id")),
                "db_type": validation.db_type(item.get("db_type")),
            }
            for item in items
        ]

    @task_group
    def archive(stack_id: str, db_type: str) -> Any:
        wait = Cloud66BackupSensor(
            task_id="wait_for_backup",
            stack_id=stack_id,
            db_type=db_type,
            newer_than=NEWER_THAN,
            deferrable=True,
            poke_interval=POKE_INTERVAL,
            timeout=WAIT_TIMEOUT,
        )
        return Cloud66BackupToS3Operator(
            task_id="copy_to_s3",
            stack_id=stack_id,
            backup_id=wait.output,
            s3_bucket="{{ params.s3_bucket }}",
            s3_key_prefix="{{ params.s3_key_prefix }}",
        ).output

    @task(trigger_rule="all_done", retries=0)  # upstream states are final: a retry cannot change them
    def summary(archived: Any, wanted: list[dict[str, str]]) -> dict[str, Any]:
        """List what landed; fail the run (after reporting) if any pair was not archived."""
        uris = [uri for result in archived or [] if result for uri in result]
        for uri in uris:
            print(f"archived {uri}")
        done = sum(1 for result in archived or [] if result)
        if done < len(wanted):
            raise RuntimeError(
                f"{len(wanted) - done} of {len(wanted)} backups were not archived; see the mapped tasks"
            )
        return {"archived": done, "uris": uris}

    wanted = targets()
    summary(archive.expand_kwargs(wanted), wanted)
