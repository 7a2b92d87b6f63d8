"""Archive the latest successful Cloud 66 backup of every configured stack and database into S3, daily.

Use it to keep your own copy of Cloud 66 managed backups in an S3 data lake. Each stack gets its own
mapped sensor and copy: the sensor (deferrable, so it holds no worker slot) waits until every
database type archived from the stack has a backup made in the ``lookback_hours`` before the run's
data interval ends (for a daily run, the interval itself; for a manual run, the day before it was
triggered), with one list request per poll for all of them; the copy streams each newest backup into
``s3://<bucket>/cloud66/<stack>/<db_type>/<database>/<YYYY>/<MM>/<DD>/<backup id>/`` with a
``manifest.json``, and a summary lists what landed. A failed backup fails its own stack's tasks
only (that stack's other types are archived by the next run); the summary then fails the run after
reporting, so the failure is visible. A second run for the same interval finds the complete
archives and copies nothing. When Cloud 66's hourly request budget is spent, tasks wait for its
reset instead of failing, and the targets task warns when the poll interval cannot fit the budget.

Retention, off by default: set the ``retention`` param to keep_* counts (for example
``{"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 12, "keep_yearly": 5}``) and, once a week (on
``prune_weekday``, by the run's data interval end in UTC) after every pair was archived, a prune
deletes the archives under the key prefix's fixed part that no rule keeps (restic's ``forget
--keep-*`` rules; archives under Object Lock and objects this package did not write are left alone).
With ``retention`` null (the default) nothing is ever deleted.

Connections: ``cloud66_default`` (Cloud 66 access token, ``public`` scope) and ``aws_default``
(write access to the bucket; with retention, also the README's prune policy). Configuration, read
when the run starts (never at parse time): the Airflow Variable ``cloud66_archive_targets`` (JSON
list of ``{"stack_id": ..., "db_type": ...}``, or ``{"discover": {...}}``), else the ``discover``
param (every stack the token sees, filtered by ``include``/``exclude`` globs on uid or name, with
the types each backed up in the last ``max_age_days``), else the ``targets`` param; the ``s3_bucket``
param, and ``retention`` and ``prune_weekday``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, task, task_group

from airflow_provider_c66.sensors.backups import Cloud66BackupSensor
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from airflow_provider_c66.transfers.prune_archives import Cloud66ArchivePruneOperator

# 300 s keeps 100 concurrent waits at 1,200 requests an hour, well inside Cloud 66's 3,000.
POKE_INTERVAL = float(os.environ.get("CLOUD66_ARCHIVE_POKE_INTERVAL", "300"))
WAIT_TIMEOUT = float(os.environ.get("CLOUD66_ARCHIVE_WAIT_TIMEOUT", str(6 * 3600)))

# The newest backup made in the lookback window before the interval's end (a manual run: before it
# was triggered), so a daily run archives that day's backup and a manual run the latest one.
NEWER_THAN = "{{ ((data_interval_end or dag_run.run_after) - macros.timedelta(hours=params.lookback_hours)).isoformat() }}"
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
# The prune looks under the fixed part of the key prefix (up to its last "/" before a placeholder).
PRUNE_PREFIX = "{{ params.s3_key_prefix.split('{')[0].rpartition('/')[0] ~ '/' }}"


def keep(rule: str) -> str:
    """One keep_* count of the retention param, rendered when the prune runs (0 when not given)."""
    return f"{{{{ (params.retention or {{}}).get('{rule}', 0) }}}}"


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
        "discover": Param(
            None,
            type=["null", "object"],
            description='instead of targets, every stack the token sees, e.g. {"include": ["prod-*"], '
            '"exclude": ["*-staging"], "db_types": ["mysql", "postgresql"], "max_age_days": 7}',
        ),
        "s3_bucket": Param("my-data-lake", type="string", description="destination bucket"),
        "lookback_hours": Param(24, type="integer", minimum=1, description="how far back a backup counts"),
        "s3_key_prefix": Param(
            "cloud66/{stack_id}/{db_type}/{database_name}/{YYYY}/{MM}/{DD}/{backup_id}/", type="string"
        ),
        "retention": Param(
            None,
            type=["null", "object"],
            description='keep_* counts for a weekly prune, e.g. {"keep_daily": 7, "keep_weekly": 4, '
            '"keep_monthly": 12, "keep_yearly": 5}; null: archives are never deleted',
        ),
        "prune_weekday": Param(
            "sunday", type="string", enum=WEEKDAYS, description="the day of the week the prune runs (UTC)"
        ),
    },
    tags=["cloud66", "backups", "s3"],
) as dag:

    @task
    def targets(params: dict[str, Any]) -> list[dict[str, Any]]:
        """The stacks to archive, each with its database types, checked before any sensor starts."""
        import logging

        from airflow.sdk import Variable

        from airflow_provider_c66 import targets as lake
        from airflow_provider_c66.budget import ScheduleCost
        from airflow_provider_c66.hooks.cloud66 import Cloud66Hook

        log = logging.getLogger("airflow.task")
        configured = Variable.get("cloud66_archive_targets", default=None, deserialize_json=True)
        if isinstance(configured, dict) and set(configured) == {"discover"}:
            configured, discover = None, configured["discover"]
        else:
            discover = params.get("discover")
        if configured is None and discover is not None:
            chosen = lake.Discovery.from_json(discover).targets(Cloud66Hook(), log)
            log.info("Discovered %d stack(s) to archive", len(chosen))
        else:
            chosen = lake.from_pairs(configured if configured is not None else params["targets"])
        archives = sum(len(t.db_types) for t in chosen)
        problem = ScheduleCost(stacks=len(chosen), poll_interval=POKE_INTERVAL, archives=archives).problem()
        if problem:
            log.warning("The Cloud 66 request budget is tight: %s", problem)
        return [t.to_json() for t in chosen]

    @task_group
    def archive(stack_id: str, db_types: list[str]) -> Any:
        # One sensor per stack: each poll is one list request for all its database types.
        wait = Cloud66BackupSensor(
            task_id="wait_for_backup",
            stack_id=stack_id,
            db_type=db_types,
            newer_than=NEWER_THAN,
            deferrable=True,
            poke_interval=POKE_INTERVAL,
            timeout=WAIT_TIMEOUT,
        )
        return Cloud66BackupToS3Operator(
            task_id="copy_to_s3",
            stack_id=stack_id,
            backup_id=wait.output,  # one record per type, each archived in turn
            s3_bucket="{{ params.s3_bucket }}",
            s3_key_prefix="{{ params.s3_key_prefix }}",
        ).output

    @task(trigger_rule="all_done", retries=0)  # upstream states are final: a retry cannot change them
    def summary(archived: Any, wanted: list[dict[str, Any]]) -> dict[str, Any]:
        """List what landed; fail the run (after reporting) if any archive is missing."""
        results = list(archived or [])
        if results and all(isinstance(r, str) for r in results):
            results = [results]  # Airflow hands over a lone successful copy's value unwrapped
        uris = [uri for result in results if result for uri in result]
        for uri in uris:
            print(f"archived {uri}")
        done = len({uri.rsplit("/", 1)[0] for uri in uris})  # one key prefix per archive
        expected = sum(len(target["db_types"]) for target in wanted)
        if done < expected:
            raise RuntimeError(
                f"{expected - done} of {expected} backups were not archived; see the mapped tasks"
            )
        return {"archived": done, "uris": uris}

    @task.short_circuit(retries=0)  # a bad retention param does not heal by waiting
    def prune_today(params: dict[str, Any], dag_run: Any = None, data_interval_end: Any = None) -> bool:
        """Let the prune run only when retention is set and this run falls on the chosen weekday."""
        from datetime import UTC

        from airflow_provider_c66.transfers.retention import RetentionPolicy

        retention = params.get("retention")
        if not retention:
            print("retention is not set: nothing is pruned")
            return False
        policy = RetentionPolicy.of(**retention)  # a bad rule fails here, before any request
        day = WEEKDAYS[(data_interval_end or dag_run.run_after).astimezone(UTC).weekday()]
        if day != params["prune_weekday"]:
            print(f"today is {day}; the prune runs on {params['prune_weekday']}s")
            return False
        print(f"pruning with {policy.describe()}")
        return True

    wanted = targets()
    done = summary(archive.expand_kwargs(wanted), wanted)
    # Only after every pair was archived (the summary succeeded): never prune on a failed day.
    (
        done
        >> prune_today()
        >> Cloud66ArchivePruneOperator(
            task_id="prune",
            s3_bucket="{{ params.s3_bucket }}",
            s3_prefix=PRUNE_PREFIX,
            keep_last=keep("keep_last"),
            keep_daily=keep("keep_daily"),
            keep_weekly=keep("keep_weekly"),
            keep_monthly=keep("keep_monthly"),
            keep_yearly=keep("keep_yearly"),
        )
    )
