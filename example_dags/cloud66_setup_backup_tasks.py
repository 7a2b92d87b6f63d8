"""Create Cloud 66 backup tasks for a stack and wait for the first backup they produce.

Use it once per stack (trigger it by hand with the params you want) to switch on managed backups
with chosen settings: which databases, how often (a 5-field cron), how many to keep, gzip, tables
to leave out, and whether to run on a replica. Cloud 66 answers a backup-task request with no
backup id, so the operator records the newest backup per database type first and then waits for
a newer one; a retry of the task does not create a second backup task (Airflow 3.3 and later).

Connections: ``cloud66_default`` with a Cloud 66 access token that has the ``admin`` scope.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from airflow_provider_c66.operators.backups import Cloud66CreateBackupOperator

with DAG(
    dag_id="cloud66_setup_backup_tasks",
    description="Switch on Cloud 66 managed backups for a stack and wait for the first one",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "stack_id": Param("my-stack-uid", type="string"),
        "db_type": Param(
            "all", type="string", description="all, or comma-separated mysql/postgresql/redis/mongodb"
        ),
        "frequency": Param("0 */6 * * *", type="string", description="5-field cron"),
        "keep_count": Param(28, type="integer", minimum=1),
        "gzip": Param(True, type="boolean"),
        "excluded_tables": Param("", type="string", description="comma-separated table names, or empty"),
        "run_on_replica_server": Param(True, type="boolean"),
    },
    render_template_as_native_obj=True,
    tags=["cloud66", "backups"],
) as dag:
    Cloud66CreateBackupOperator(
        task_id="create_backup_task",
        stack_id="{{ params.stack_id }}",
        db_type="{{ params.db_type }}",
        frequency="{{ params.frequency }}",
        keep_count="{{ params.keep_count }}",
        gzip="{{ params.gzip }}",
        excluded_tables="{{ params.excluded_tables or None }}",
        run_on_replica_server="{{ params.run_on_replica_server }}",
        wait_for_completion=True,
        deferrable=True,
    )
