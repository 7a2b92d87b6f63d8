"""Verify every new archive as soon as it lands: a DAG scheduled on the archive operator's asset alias.

Use it to catch an archive that does not read back as it was written, hours after it was written
rather than on the day it is needed, and as a model for any DAG that reacts to new archives.
``Cloud66BackupToS3Operator`` announces each object it writes as an asset event under
``AssetAlias("cloud66-backup-archives")``, and each event carries the archive: stack, backup id, db
type, database, backup date, the object's size and SHA-256, and the manifest's key. This DAG runs
whenever such events arrive and reads what it needs from them, with no Cloud 66 API call: it lists
the manifests of the new archives and verifies each one against S3 (every object read back; size,
SHA-256 and CRC32 compared with the manifest). The same events can drive a restore drill or a
catalogue update.

Connections: ``aws_default`` (``s3:GetObject`` on the archives; no Cloud 66 connection is needed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from airflow.sdk import DAG, AssetAlias, task

from airflow_provider_c66.transfers.backup_to_s3 import DEFAULT_ASSET_ALIAS
from airflow_provider_c66.transfers.verify_archive import Cloud66ArchiveVerifyOperator

ALIAS = AssetAlias(name=DEFAULT_ASSET_ALIAS)


def manifests_of(events: Iterable[Any]) -> list[str]:
    """The ``s3://`` URI of each new archive's manifest, once each, in the order the events came.

    An event names its object (``event.asset.uri``) and, in its extra, the manifest's key; an event
    without one (another writer) names the object itself, which the verify operator also accepts.
    """
    uris: list[str] = []
    for event in events:
        extra: Mapping[str, Any] = event.extra or {}
        bucket = event.asset.uri.removeprefix("s3://").split("/", 1)[0]
        uri = f"s3://{bucket}/{extra['manifest_key']}" if extra.get("manifest_key") else event.asset.uri
        if uri not in uris:
            uris.append(uri)
    return uris


with DAG(
    dag_id="cloud66_verify_new_archives",
    description="Read every new Cloud 66 archive back from S3 and check it against its manifest",
    schedule=[ALIAS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2},
    tags=["cloud66", "backups", "s3"],
) as dag:

    @task
    def new_archives(triggering_asset_events: Any = None) -> list[str]:
        """The manifests behind the events that started this run (none for a manual run)."""
        try:
            events = triggering_asset_events[ALIAS] if triggering_asset_events else []
        except KeyError:
            events = []
        for event in events:
            extra = event.extra or {}
            print(
                f"new archive object {event.asset.uri}: backup {extra.get('backup_id')} of "
                f"{extra.get('stack_id')}/{extra.get('db_type')}/{extra.get('database_name')}, "
                f"{extra.get('size')} bytes, sha256 {extra.get('sha256')}"
            )
        return manifests_of(events)

    Cloud66ArchiveVerifyOperator.partial(task_id="verify", aws_conn_id="aws_default").expand(
        archive=new_archives()
    )
