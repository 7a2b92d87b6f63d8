"""Lineage: the ``cloud66`` asset scheme, OpenLineage events of a real DAG run, and hook-level lineage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_c66 import assets
from airflow_provider_c66.models import Backup, BackupStatus
from tests.s3_fixtures import ACCESS_KEY, SECRET_KEY

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def emu(cloud66_emulator_factory):
    return cloud66_emulator_factory(split_threshold=6 * MiB, split_size=5 * MiB + 123)


# --- the asset scheme ---------------------------------------------------------------------------
def test_the_cloud66_scheme_is_registered_with_airflow():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    manager.initialize_providers_asset_uri_resources()
    assert manager.asset_uri_handlers["cloud66"] is assets.sanitize_uri
    assert manager.asset_factories["cloud66"] is assets.create_asset
    assert manager.asset_to_openlineage_converters["cloud66"] is assets.convert_asset_to_openlineage


@pytest.mark.parametrize(
    "uri",
    ["cloud66://app.cloud66.com/s1", "cloud66://h:8080/s1/mysql", "cloud66://h/s1/mysql/db%2Fx/12"],
)
def test_sanitize_uri_accepts_a_stack_or_a_backup(uri):
    assert assets.sanitize_uri(urlsplit(uri)) == urlsplit(uri)


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("cloud66:///s1", "names the API host"),
        ("cloud66://h", "cloud66://<host>/<stack>"),
        ("cloud66://h/s1//db", "cloud66://<host>/<stack>"),
        ("cloud66://h/s1/mysql/db/12/extra", "cloud66://<host>/<stack>"),
        ("cloud66://h/s1/mysql/db/latest", "backup id is a number"),
    ],
)
def test_sanitize_uri_refuses_what_is_not_a_stack_or_a_backup(uri, problem):
    with pytest.raises(ValueError, match=problem):
        assets.sanitize_uri(urlsplit(uri))


def test_an_asset_and_its_openlineage_dataset_name_the_same_backup():
    backup = Backup(id=12, db_type="mysql", database_name="db/x", backup_date=_date(), status=BackupStatus.OK)
    asset = assets.create_asset(
        host="app.cloud66.com", stack_id="s1", db_type="mysql", database_name="db/x", backup_id=12
    )
    assert asset.uri == "cloud66://app.cloud66.com/s1/mysql/db%2Fx/12"
    dataset = assets.convert_asset_to_openlineage(asset, None)
    assert (dataset.namespace, dataset.name) == ("cloud66://app.cloud66.com", "s1/mysql/db%2Fx/12")
    assert dataset.name == assets.backup_name("s1", backup)
    assert assets.namespace("https://app.cloud66.com/api/3") == "cloud66://app.cloud66.com"
    assert assets.create_asset(host="h:1", stack_id="s1").uri == "cloud66://h:1/s1"


def _date() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 12, 5, tzinfo=UTC)


# --- OpenLineage events of a DAG run --------------------------------------------------------------
RUN = """
import sys
from airflow.sdk import DAG
from airflow_provider_c66.operators.backups import Cloud66CreateBackupOperator
from airflow_provider_c66.testing.dags import migrate_metadata_db, run_dag
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from airflow_provider_c66.transfers.s3_to_cloud66 import S3ToCloud66ImportOperator

migrate_metadata_db()
bid, bucket = int(sys.argv[1]), sys.argv[2]
with DAG("lineage", schedule=None) as dag:
    archived = Cloud66BackupToS3Operator(
        task_id="archive", stack_id="stack-1", backup_id=bid, s3_bucket=bucket, part_size=5 * 1024 * 1024
    )
    restored = S3ToCloud66ImportOperator(
        task_id="restore", s3_bucket=bucket, s3_key=sys.argv[3], stack_id="stack-1", group=2, db_type="mysql"
    )
    created = Cloud66CreateBackupOperator(task_id="create", stack_id="stack-1", db_type="mysql")
    archived >> restored >> created
print("STATE", run_dag(dag).state)
"""


def without_schema(value: Any) -> Any:
    """An event's datasets without the ``_producer``/``_schemaURL`` every facet carries."""
    if isinstance(value, dict):
        return {k: without_schema(v) for k, v in value.items() if k not in ("_producer", "_schemaURL")}
    if isinstance(value, list):
        return [without_schema(v) for v in value]
    return value


def test_openlineage_events_name_the_backup_each_object_and_the_stack(
    emu, s3_server, s3_client, s3_bucket, tmp_path
):
    bid = emu.add_backup("stack-1", size=12 * MiB + 7, database_name="app_db")
    raw = next(r for r in emu.backups("stack-1") if r["id"] == bid)
    day = raw["backup_date_iso"][:10].replace("-", "/")
    key = f"cloud66/stack-1/mysql/app_db/{day}/{bid}/app_db.tar"
    events_file = tmp_path / "openlineage.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__DATABASE__"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "home"),
        AIRFLOW__CORE__DAGS_FOLDER=str(tmp_path / "dags"),
        AIRFLOW_CONN_CLOUD66_DEFAULT=json.dumps(
            {"conn_type": "cloud66", "host": emu.base_url, "password": emu.token}
        ),
        AIRFLOW_CONN_AWS_DEFAULT=json.dumps(
            {
                "conn_type": "aws",
                "login": ACCESS_KEY,
                "password": SECRET_KEY,
                "extra": {"endpoint_url": s3_server, "region_name": "us-east-1"},
            }
        ),
        AIRFLOW__OPENLINEAGE__TRANSPORT=json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        AIRFLOW__OPENLINEAGE__NAMESPACE="c66-tests",
    )
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(RUN), str(bid), s3_bucket, key],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert "STATE success" in result.stdout, (result.stdout + result.stderr)[-5000:]

    text = events_file.read_text()
    events = [json.loads(line) for line in text.splitlines()]
    complete = {
        e["job"]["name"]: without_schema({"inputs": e["inputs"], "outputs": e["outputs"]})
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"].startswith("lineage.")
    }
    api = f"cloud66://127.0.0.1:{emu.port}"
    assert complete == {
        "lineage.archive": {
            "inputs": [{"namespace": api, "name": f"stack-1/mysql/app_db/{bid}", "facets": {}}],
            "outputs": [
                {
                    "namespace": f"s3://{s3_bucket}",
                    "name": key,
                    "facets": {},
                    "outputFacets": {"outputStatistics": {"size": 12 * MiB + 7, "fileCount": 1}},
                }
            ],
        },
        "lineage.restore": {
            "inputs": [{"namespace": f"s3://{s3_bucket}", "name": key, "facets": {}}],
            "outputs": [{"namespace": api, "name": "stack-1", "facets": {}}],
        },
        "lineage.create": {
            "inputs": [],
            "outputs": [{"namespace": api, "name": "stack-1", "facets": {}}],
        },
    }
    # No secret reaches a lineage event: not the token, not the signature of the presigned URL.
    assert emu.token not in text
    assert "Signature" not in text and "X-Amz-Credential" not in text


# --- hook-level lineage ---------------------------------------------------------------------------
@pytest.fixture
def collector(monkeypatch):
    """A real hook lineage collector, as Airflow makes one when a lineage reader is installed."""
    import airflow.providers.common.compat.sdk as compat_sdk

    try:
        from airflow.sdk.lineage import HookLineageCollector
    except ImportError:  # Airflow < 3.2
        from airflow.lineage.hook import HookLineageCollector  # type: ignore[no-redef]

    made = HookLineageCollector()
    monkeypatch.setattr(compat_sdk, "get_hook_lineage_collector", lambda: made)
    return made


@pytest.mark.parametrize("join_parts", [True, False])
def test_hook_lineage_has_one_asset_per_final_object_never_per_part(
    emu, s3_bucket, aws_connection, collector, join_parts
):
    from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator

    bid = emu.add_backup("stack-1", size=12 * MiB + 7, database_name="app_db")
    assert len(emu.file_ids("stack-1", bid)) == 3
    uris = Cloud66BackupToS3Operator(
        task_id="archive",
        stack_id="stack-1",
        backup_id=bid,
        s3_bucket=s3_bucket,
        part_size=5 * MiB,
        join_parts=join_parts,
        asset_alias=None,
    ).execute({})

    lineage = collector.collected_assets
    assert [(i.asset.uri, i.count) for i in lineage.inputs] == [
        (f"cloud66://127.0.0.1:{emu.port}/stack-1/mysql/app_db/{bid}", 1)
    ]
    assert [(o.asset.uri, o.count) for o in lineage.outputs] == [(uri, 1) for uri in uris]
    assert len(uris) == (1 if join_parts else 3)
