"""No secret in any output: the suite's DAGs run through ``dag.test()``, faults and retries included,
and every log line, exception text, XCom value and rendered template field is searched for the API
token and for every URL signature that was issued (Cloud 66's signed file URLs, S3 presigned URLs).
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from airflow_provider_c66.operators.backups import Cloud66CreateBackupOperator, Cloud66ImportBackupOperator
from airflow_provider_c66.sensors.backups import Cloud66BackupSensor
from airflow_provider_c66.testing.emulator import Cloud66Emulator
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from airflow_provider_c66.transfers.s3_to_cloud66 import S3ToCloud66ImportOperator
from tests.copy_fixtures import PartWatch
from tests.helpers import Failures, failing_on_call, task_instance

MiB = 1 << 20
TOKEN = "c66-SECRET-token-8f2b1e9a7c41d3"
NOW = datetime.now(UTC).replace(microsecond=0)
# The AWS SDK's own DEBUG tracing (request signing, whole request bodies) is not the package's
# output and is off at Airflow's default INFO; everything else is captured at DEBUG.
SDK_LOGGERS = ("botocore", "boto3", "s3transfer")


@pytest.fixture
def issued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every signed file URL the emulator hands out, as it hands it out."""
    urls: list[str] = []
    original = Cloud66Emulator.sign_url

    def sign(self: Cloud66Emulator, backup: Any, part: Any) -> str:
        url = original(self, backup, part)
        urls.append(url)
        return url

    monkeypatch.setattr(Cloud66Emulator, "sign_url", sign)
    return urls


def signatures(urls: Iterable[str]) -> set[str]:
    """Each URL's signature as it may appear anywhere: raw, URL-quoted, and Cloud 66's ``%25`` form."""
    found: set[str] = set()
    for url in urls:
        query = parse_qs(urlsplit(url).query)
        for name in ("Signature", "X-Amz-Signature"):
            for raw in query.get(name, []):
                quoted = quote(raw, safe="")
                found |= {raw, quoted, quoted.replace("%", "%25")}
    return found


def run_outputs(dagrun: Any) -> dict[str, str]:
    """XCom values and rendered template fields of a run, as stored in the metadata database."""
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    outputs: dict[str, str] = {}
    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=dagrun.run_id, dag_ids=dagrun.dag_id)).all()
        for row in rows:
            value = XComModel.deserialize_value(row)
            outputs[f"xcom {row.task_id}[{row.map_index}] {row.key}"] = json.dumps(value, default=str)
        fields = session.query(RenderedTaskInstanceFields).filter_by(
            dag_id=dagrun.dag_id, run_id=dagrun.run_id
        )
        for rendered in fields:
            outputs[f"rendered {rendered.task_id}[{rendered.map_index}]"] = json.dumps(
                rendered.rendered_fields, default=str
            )
    return outputs


def assert_no_secret(secrets: set[str], texts: dict[str, str]) -> None:
    assert len(secrets) > 3 and all(len(secret) >= 16 for secret in secrets)
    leaks = [
        f"secret #{sorted(secrets).index(secret)} in {where}"
        for where, text in texts.items()
        for secret in secrets
        if secret in text
    ]
    assert leaks == []


@pytest.mark.reliability(
    area="secrets",
    fault="the API token and every URL signature, through DAG runs with faults and retries: sensor → "
    "transfer, create and import operators (an expanded import too), the S3 import (logs, exception texts, "
    "XCom, rendered fields)",
    outcome="no secret in any output",
)
def test_dag_runs_with_faults_and_retries_leak_no_secret(
    cloud66_emulator_factory,
    s3_client,
    s3_bucket,
    aws_connection,
    run_dag,
    issued,
    caplog,
    capfd,
    monkeypatch,
):
    from airflow.sdk import DAG

    caplog.set_level(logging.DEBUG)
    for name in SDK_LOGGERS:
        caplog.set_level(logging.INFO, logger=name)
    emu = cloud66_emulator_factory(
        token=TOKEN, split_threshold=6 * MiB, split_size=5 * MiB + 123, backup_delay=0.3
    )
    good = emu.add_backup("stack-1", size=11 * MiB, backup_date=NOW - timedelta(minutes=5))
    missing = emu.add_backup(
        "stack-1",
        db_type="postgresql",
        database_name="ledger",
        size=2048,
        backup_date=NOW - timedelta(hours=3),
    )
    s3_client.put_object(Bucket=s3_bucket, Key="restore/app_db.tar", Body=b"x" * 100)
    presigned = s3_client.generate_presigned_url(
        "get_object", Params={"Bucket": s3_bucket, "Key": "restore/app_db.tar"}, ExpiresIn=3600
    )
    presigned_many = [  # for an expanded (mapped) import, whose fields Airflow renders on its own path
        s3_client.generate_presigned_url(
            "get_object", Params={"Bucket": s3_bucket, "Key": "restore/app_db.tar"}, ExpiresIn=seconds
        )
        for seconds in (1800, 2400)
    ]

    # Faults. The API: a 503 burst and a reset on reads, a 429, a 500 on a URL fetch, a 500 on an
    # import's POST (it may have been carried out: never sent again, its task fails without retry).
    emu.fail_next(2, r"/stacks/stack-1/backups\.json$", status=503, method="GET")
    emu.drop_connection_next(1, r"/backups/\d+\.json$", after_bytes=0)
    emu.rate_limit_next(1, r"/files\.json$", retry_after=0)
    emu.fail_next(1, r"/files/[^/]+\.json$", status=500)
    emu.add_stack("stack-2")
    emu.fail_next(1, r"/stacks/stack-2/backups\.json$", status=500, method="POST")
    # The download: a 429 on a size probe, URLs expiring once parts flow, a connection dropped mid-part;
    # a 404 for the other backup's file (the "broken" task fails for good).
    emu.rate_limit_next(1, r"app_db\.tar", retry_after=0)
    emu.fail_next(1, r"ledger\.tar$", status=404)

    def expire_and_drop() -> None:
        emu.expire_urls()
        emu.drop_connection_next(1, r"app_db\.tar", after_bytes=200_000)

    watch = PartWatch()
    watch.on_start(1, expire_and_drop)
    monkeypatch.setattr(Cloud66BackupToS3Operator, "copy_observers", lambda self: [watch])
    # The upload: the first try's second UploadPart fails (the try fails, the retry completes).
    original_client = Cloud66BackupToS3Operator._s3_client
    upload_part_fault = failing_on_call("UploadPart", on_call=2)

    def client_with_fault(self: Any, max_concurrency: int) -> Any:
        client = original_client(self, max_concurrency)
        client.meta.events.register("before-call.s3.UploadPart", upload_part_fault)
        return client

    monkeypatch.setattr(Cloud66BackupToS3Operator, "_s3_client", client_with_fault)

    failures = Failures()
    record = failures.wrap
    retry = {"retries": 1, "retry_delay": timedelta(0)}
    with DAG("secrets_archive", schedule=None) as archive_dag:
        wait = record(Cloud66BackupSensor)(
            task_id="wait",
            stack_id="stack-1",
            db_type="mysql",
            deferrable=True,
            poke_interval=0.2,
            timeout=60,
        )
        copy = record(Cloud66BackupToS3Operator)(
            task_id="archive", stack_id="stack-1", backup_id=wait.output, s3_bucket=s3_bucket, **retry
        )
        record(Cloud66BackupToS3Operator)(
            task_id="broken",
            stack_id="stack-1",
            backup_id=missing,
            s3_bucket=s3_bucket,
            s3_key_prefix="b/{backup_id}/",
        )
        wait >> copy
    with DAG("secrets_post", schedule=None, params={"remote_url": presigned}) as post_dag:
        create = record(Cloud66CreateBackupOperator)(
            task_id="create",
            stack_id="stack-1",
            db_type="mysql",
            frequency="0 */6 * * *",
            wait_for_completion=True,
            deferrable=True,
            poll_interval=0.2,
            timeout=60,
            **retry,
        )
        restore = record(S3ToCloud66ImportOperator)(
            task_id="restore",
            s3_bucket=s3_bucket,
            s3_key="restore/app_db.tar",
            stack_id="stack-1",
            group=1,
            db_type="mysql",
        )
        imported = record(Cloud66ImportBackupOperator)(
            task_id="import",
            stack_id="stack-1",
            group=1,
            db_type="mysql",
            remote_url="{{ params.remote_url }}",
        )
        imported_many = record(Cloud66ImportBackupOperator).partial(
            task_id="import_many", stack_id="stack-1", group=1, db_type="mysql"
        )
        mapped = imported_many.expand(remote_url=presigned_many)
        create >> restore >> imported >> mapped
        lost = record(Cloud66ImportBackupOperator)(
            task_id="lost_answer",
            stack_id="stack-2",
            group=1,
            db_type="mysql",
            remote_url="{{ params.remote_url }}",
            **retry,
        )

    archive_run = run_dag(archive_dag, logical_date=NOW - timedelta(hours=1))
    post_run = run_dag(post_dag, logical_date=NOW - timedelta(hours=1))

    # The faults really happened, and the runs ended as they should.
    assert archive_run.state == "failed" and post_run.state == "failed"
    assert {type(e).__name__ for e in failures.errors} >= {"CopyError", "AirflowFailException"}
    assert task_instance(post_run, lost.task_id).state == "failed"
    assert any(
        "It was not sent again" in str(e)
        for e in failures.errors
        if type(e).__name__ == "AirflowFailException"
    )
    assert all(task_instance(post_run, t).state == "success" for t in ("create", "restore", "import"))
    statuses = [(r.kind, r.status) for r in emu.requests]
    for fault in [("api", 503), ("api", 429), ("api", 500), ("file", 403), ("file", 429), ("file", 404)]:
        assert fault in statuses, fault
    key = f"cloud66/stack-1/mysql/app_db/{NOW - timedelta(minutes=5):%Y/%m/%d}/{good}/app_db.tar"
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == b"".join(
        emu.iter_archive("stack-1", good)
    )
    posted = [r.json["remote_url"] for r in emu.requests if r.method == "POST" and r.json.get("remote_url")]
    assert len(posted) == 5  # restore, import, import_many x2, lost_answer (once: never repeated)

    # Everything that came out.
    out, err = capfd.readouterr()
    texts = {"stdout": out, "stderr": err, "caplog": caplog.text}
    texts |= {f"log record {i}": r.getMessage() for i, r in enumerate(caplog.records)}
    for i, error in enumerate(failures.errors):
        texts[f"exception {i}"] = "".join(traceback.format_exception(error))
    texts |= run_outputs(archive_run) | run_outputs(post_run)
    log_dir = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    for path in log_dir.rglob("*") if log_dir.exists() else []:
        if path.is_file():
            texts[f"file {path}"] = path.read_text(errors="replace")
    # The capture worked: the runs' own log lines, errors, XComs and rendered fields are in there.
    everything = "\n".join(texts.values())
    for expected in (
        "Copying 3 file(s)",
        "fetching a fresh signed URL",
        "retry 1 of 40",
        "Importing http://127.0.0.1",
    ):
        assert expected in everything, expected
    assert any(k.startswith("xcom archive") for k in texts)
    assert {"rendered import[-1]", "rendered import_many[0]", "rendered import_many[1]"} <= set(texts)

    secrets = {TOKEN} | signatures([*issued, *posted, presigned, *presigned_many])
    assert len(issued) >= 4
    assert_no_secret(secrets, texts)
