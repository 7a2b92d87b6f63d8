"""Wrong results a user hit when the package met the documented API and real S3 (issue 10).

Each test failed before its fix. Emulator and moto over HTTP; Airflow itself where a DAG runs.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS
from airflow.sdk import DAG, BaseOperator
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_c66.api import RetryPolicy
from airflow_provider_c66.exceptions import Cloud66ApiError, Cloud66OutcomeUnknownError, Cloud66ResponseError
from airflow_provider_c66.get_provider_info import get_provider_info
from airflow_provider_c66.hooks.cloud66 import Cloud66Hook
from airflow_provider_c66.models import Backup
from airflow_provider_c66.operators.backups import Cloud66CreateBackupOperator, Cloud66ImportBackupOperator
from airflow_provider_c66.redaction import redact_text
from airflow_provider_c66.sensors.backups import Cloud66BackupSensor
from airflow_provider_c66.testing.pytest_plugin import connection_json
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from airflow_provider_c66.transfers.prune_archives import Cloud66ArchivePruneOperator
from airflow_provider_c66.transfers.s3_to_cloud66 import S3ToCloud66ImportOperator
from airflow_provider_c66.transfers.verify_archive import Cloud66ArchiveVerifyOperator
from airflow_provider_c66.watermark import ANY_TYPE, BackupWait, Watermark
from tests.helpers import Failures, archive_of, list_gets, record, run_sensor, task_instance, xcom_value

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(UTC).replace(microsecond=0)
RUN = NOW - timedelta(hours=1)
FAST = RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_max=0.01, total_timeout=30)
SIGNATURE = "Zm9vYmFy%2FSecretSig%3D"
REMOTE_URL = (
    "https://bucket.s3.eu-west-1.amazonaws.com/dumps/app_db.tar?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    f"&X-Amz-Credential=AKIAEXAMPLE%2F20261204%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Signature={SIGNATURE}"
)
reliability = pytest.mark.reliability


# --- 1. a group filter matches records that carry no group ----------------------------------------
@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_sensor_with_a_group_finds_records_that_name_no_group(cloud66_emulator, run_dag, mode):
    emu = cloud66_emulator  # records as documented: no "group" field
    bid = emu.add_backup("stack-1", backup_date=NOW, group=2)
    emu.add_backup("stack-1", backup_date=NOW + timedelta(minutes=1), group=3)  # newer, other group
    dagrun = run_sensor(
        run_dag, f"group_{mode}", group=2, poke_interval=0.2, timeout=20, deferrable=mode == "deferrable"
    )
    assert dagrun.state == "success"
    assert xcom_value(dagrun, "wait") == record(emu, bid)
    assert [r.query for r in list_gets(emu)] == [{"group": "2", "page": "1"}]


def test_a_record_that_names_another_group_is_still_filtered_out():
    wait = BackupWait("stack-1", {ANY_TYPE: Watermark()}, group=2)
    date = datetime(2026, 1, 1, tzinfo=UTC)

    def of(group: int | None) -> Backup:
        raw = {"id": 7, "db_type": "mysql", "backup_date_iso": "2026-01-01T00:00:00Z", "backup_status": 0}
        return Backup.from_api({**raw, "group": group} if group else raw)

    assert wait.evaluate([of(None)]).status == "success"  # the server's filtered answer
    assert wait.evaluate([of(2)]).status == "success"
    assert wait.evaluate([of(3)]).status == "waiting"  # an API that ignored the filter
    assert of(3).backup_date == date


def test_sensor_filters_on_group_when_the_records_carry_one(cloud66_emulator_factory, run_dag):
    emu = cloud66_emulator_factory(record_group=True)
    bid = emu.add_backup("stack-1", backup_date=NOW, group=2)
    dagrun = run_sensor(run_dag, "group_field", group=2, poke_interval=0.2, timeout=20, deferrable=False)
    assert dagrun.state == "success" and xcom_value(dagrun, "wait")["group"] == 2
    assert xcom_value(dagrun, "wait") == record(emu, bid)


# --- 2. a POST is never sent twice ----------------------------------------------------------------
@reliability(
    area="API",
    fault="a 2xx answer to a POST that is not a Cloud 66 envelope (proxy HTML, truncated JSON)",
    outcome="not repeated; clear error",
)
@pytest.mark.parametrize("answer", ["html", "truncated"])
def test_a_post_answered_with_a_non_envelope_is_not_repeated(cloud66_emulator, answer):
    emu = cloud66_emulator
    if answer == "html":
        emu.fail_next(1, r"/backups\.json$", 200, body=b"<html>Be right back</html>", method="POST")
    else:
        emu.malformed_json_next(1, r"/backups\.json$", method="POST")
    hook = Cloud66Hook(retry_policy=FAST)
    with pytest.raises(Cloud66ResponseError, match="not sent again: Cloud 66 may have carried it out"):
        hook.create_backup_task("stack-1", db_type="mysql")
    assert len([r for r in emu.requests if r.method == "POST"]) == 1
    # A GET answered so is still worth another try.
    emu.fail_next(1, r"/backups\.json$", 200, body=b"<html>Be right back</html>", method="GET")
    assert hook.list_backups("stack-1") == []
    assert len([r for r in emu.requests if r.method == "GET"]) == 2


def test_an_import_operator_answered_with_html_posts_once(cloud66_emulator, run_dag):
    emu = cloud66_emulator
    emu.fail_next(1, r"/backups\.json$", 200, body=b"<html>Maintenance</html>", method="POST")
    failures = Failures()
    with DAG("import_html", schedule=None) as dag:
        failures.wrap(Cloud66ImportBackupOperator)(
            task_id="backup", stack_id="stack-1", group=1, db_type="mysql", remote_url=REMOTE_URL, retries=0
        )
    assert run_dag(dag).state == "failed"
    assert "not sent again" in str(failures.only)
    assert len([r for r in emu.requests if r.method == "POST"]) == 1


POST_PATH = "/api/3/stacks/stack-1/backups.json"
UNKNOWN_OUTCOMES: dict[str, tuple[Any, str]] = {
    # answer -> (how the emulator gives it after the POST reached it, what the error says it was)
    "html": (
        lambda emu: emu.fail_next(
            1, r"/backups\.json$", 200, body=b"<html>Be right back</html>", method="POST"
        ),
        r"the answer is not a Cloud 66 JSON envelope \(non-JSON answer \(text/html, 26 bytes\)\)",
    ),
    "truncated": (
        lambda emu: emu.malformed_json_next(1, r"/backups\.json$", method="POST"),
        r"the answer is not a Cloud 66 JSON envelope \(non-JSON answer \(application/json, 42 bytes\)\)",
    ),
    "502": (
        lambda emu: emu.fail_next(1, r"/backups\.json$", 502, method="POST"),
        r"Cloud 66 answered 502 internal_error: Emulated failure \(502\)",
    ),
    "dropped": (
        lambda emu: emu.drop_connection_next(1, r"/backups\.json$", after_bytes=0, method="POST"),
        r"no answer from Cloud 66 \((ChunkedEncodingError|ConnectionError): .+\)",
    ),
}


@reliability(
    area="API",
    fault="a POST answered by a non-envelope 2xx, a 5xx or no answer, in a task with retries",
    outcome="not repeated; clear error",
)
@pytest.mark.parametrize("answer", sorted(UNKNOWN_OUTCOMES))
@pytest.mark.parametrize("operator", ["create", "import"])
def test_a_post_of_unknown_outcome_fails_the_task_without_a_retry(
    cloud66_emulator, run_dag, operator, answer
):
    emu = cloud66_emulator
    inject, what = UNKNOWN_OUTCOMES[answer]
    inject(emu)
    failures = Failures()
    common = {"retries": 1, "retry_delay": timedelta(0), "wait_for_completion": True, "poll_interval": 0.2}
    with DAG(f"unknown_post_{operator}_{answer}", schedule=None) as dag:
        if operator == "create":
            failures.wrap(Cloud66CreateBackupOperator)(task_id="backup", stack_id="stack-1", **common)
        else:
            failures.wrap(Cloud66ImportBackupOperator)(
                task_id="backup",
                stack_id="stack-1",
                group=1,
                db_type="mysql",
                remote_url=REMOTE_URL,
                **common,
            )
    dagrun = run_dag(dag)

    assert dagrun.state == "failed"
    error = failures.only  # one try: Airflow did not retry
    assert isinstance(error, AirflowFailException)
    assert isinstance(error.__cause__, Cloud66OutcomeUnknownError)
    assert re.fullmatch(
        f"POST /stacks/stack-1/backups.json: {what}. It was not sent again: Cloud 66 may have carried it "
        r"out. Check the stack's backups \(and its backup tasks\) in Cloud 66 before running this task "
        r"again. This task fails without retries, since a retry would POST again.",
        str(error),
    ), str(error)
    assert task_instance(dagrun, "backup").try_number == 1
    # The watermark, then the one POST; nothing after it.
    assert [(r.method, r.path) for r in emu.requests] == [("GET", POST_PATH), ("POST", POST_PATH)]


@pytest.mark.parametrize("answer", ["html", "502"])
def test_a_restore_whose_import_post_has_an_unknown_outcome_fails_without_a_retry(
    cloud66_emulator, s3_client, s3_bucket, aws_connection, run_dag, answer
):
    """S3ToCloud66ImportOperator POSTs the import once, whatever ``retries`` says."""
    emu = cloud66_emulator
    s3_client.put_object(Bucket=s3_bucket, Key="dump.tar", Body=b"x" * 10)
    inject, what = UNKNOWN_OUTCOMES[answer]
    inject(emu)
    failures = Failures()
    with DAG(f"unknown_restore_post_{answer}", schedule=None) as dag:
        failures.wrap(S3ToCloud66ImportOperator)(
            task_id="backup",
            s3_bucket=s3_bucket,
            s3_key="dump.tar",
            stack_id="stack-1",
            group=1,
            db_type="mysql",
            retries=1,
            retry_delay=timedelta(0),
        )
    dagrun = run_dag(dag)

    assert dagrun.state == "failed"
    error = failures.only
    assert isinstance(error, AirflowFailException) and isinstance(error.__cause__, Cloud66OutcomeUnknownError)
    assert re.match(f"POST /stacks/stack-1/backups.json: {what}. It was not sent again", str(error)), str(
        error
    )
    assert str(error).endswith("This task fails without retries, since a retry would POST again.")
    assert task_instance(dagrun, "backup").try_number == 1
    assert [(r.method, r.path) for r in emu.requests] == [("POST", POST_PATH)]


# --- 4. every operator and the sensor can be deep-copied ------------------------------------------
def every_task_args() -> list[tuple[type, dict[str, Any]]]:
    """Each operator and sensor of the package, with every argument its constructors take."""
    common = {"retries": 2, "retry_delay": timedelta(seconds=5)}
    return [
        (
            Cloud66CreateBackupOperator,
            {
                "task_id": "create",
                "stack_id": "s",
                "db_type": ["mysql", "redis"],
                "frequency": "0 3 * * *",
                "keep_count": 5,
                "gzip": True,
                "excluded_tables": ["audit"],
                "run_on_replica_server": False,
                "wait_for_completion": True,
                "poll_interval": 30,
                "timeout": 600,
                "settle_seconds": 60,
                "cloud66_conn_id": "c66",
                "deferrable": True,
                "durable": False,
                **common,
            },
        ),
        (
            Cloud66ImportBackupOperator,
            {
                "task_id": "import",
                "stack_id": "s",
                "group": 3,
                "db_type": "mysql",
                "remote_url": REMOTE_URL,
                "wait_for_completion": True,
                "poll_interval": 30,
                "timeout": 600,
                "settle_seconds": 60,
                "cloud66_conn_id": "c66",
                "deferrable": False,
                "durable": True,
                **common,
            },
        ),
        (
            Cloud66BackupSensor,
            {
                "task_id": "sensor",
                "stack_id": "s",
                "db_type": "mysql",
                "database_name": "db",
                "group": 3,
                "newer_than": "2026-01-01T00:00:00Z",
                "after_backup_id": 41,
                "fail_on_failed_backup": False,
                "settle_seconds": 60,
                "cloud66_conn_id": "c66",
                "deferrable": True,
                "poke_interval": 30,
                "timeout": 600,
                "mode": "reschedule",
                **common,
            },
        ),
        (
            Cloud66BackupToS3Operator,
            {
                "task_id": "archive",
                "stack_id": "s",
                "backup_id": {"id": 5},
                "s3_bucket": "bucket",
                "s3_key_prefix": "lake/{backup_id}/",
                "aws_conn_id": "aws",
                "cloud66_conn_id": "c66",
                "join_parts": False,
                "replace": True,
                "storage_class": "STANDARD_IA",
                "server_side_encryption": "aws:kms",
                "sse_kms_key_id": "alias/backups",
                "tags": {"team": "data"},
                "part_size": 16 * MiB,
                "max_concurrency": 8,
                "verify_backup_size": False,
                "retry_budget": 40,
                "object_lock_mode": "GOVERNANCE",
                "object_lock_retain_days": 30,
                "object_lock_retain_until": datetime(2030, 1, 1, tzinfo=UTC),
                "object_lock_legal_hold": True,
                "asset_alias": "archives",
                "catalog_prefix": "lake/_catalog/",
                **common,
            },
        ),
        (
            S3ToCloud66ImportOperator,
            {
                "task_id": "restore",
                "s3_bucket": "bucket",
                "s3_key": "lake/5/app_db.tar",
                "stack_id": "s",
                "group": 3,
                "db_type": "mysql",
                "aws_conn_id": "aws",
                "cloud66_conn_id": "c66",
                "expires_in": 3600,
                **common,
            },
        ),
        (
            Cloud66ArchiveVerifyOperator,
            {"task_id": "verify", "archive": ["s3://bucket/lake/5/"], "aws_conn_id": "aws", **common},
        ),
        (
            Cloud66ArchivePruneOperator,
            {
                "task_id": "prune",
                "s3_bucket": "bucket",
                "s3_prefix": "lake/",
                "keep_last": 3,
                "keep_daily": 7,
                "keep_weekly": 4,
                "keep_monthly": 12,
                "keep_yearly": 5,
                "dry_run": True,
                "catalog_prefix": "lake/_catalog/",
                "aws_conn_id": "aws",
                "max_archives": 500,
                **common,
            },
        ),
    ]


def every_task() -> list[Any]:
    return [cls(**kwargs) for cls, kwargs in every_task_args()]


def own_arguments(cls: type) -> set[str]:
    """The arguments the package's own constructors (and mixins) add to BaseOperator's."""
    names: set[str] = set()
    for klass in cls.__mro__:
        ours = klass.__module__.startswith("airflow_provider_c66") or klass.__name__ == "ResumableJobMixin"
        if ours and "__init__" in vars(klass):
            params = inspect.signature(vars(klass)["__init__"]).parameters.values()
            names |= {p.name for p in params if p.name != "self" and p.kind is not p.VAR_KEYWORD}
    return names


def package_tasks() -> set[type]:
    """Every public operator and sensor class of the modules the provider declares."""
    info = get_provider_info()
    modules = [
        m for kind in ("operators", "sensors") for entry in info[kind] for m in entry["python-modules"]
    ]
    modules += [entry["python-module"] for entry in info["transfers"]]
    found = set()
    for name in modules:
        module = __import__(name, fromlist=["_"])
        found |= {
            obj
            for attr, obj in vars(module).items()
            if isinstance(obj, type)
            and issubclass(obj, BaseOperator)
            and obj.__module__ == name
            and not attr.startswith("_")
        }
    return found


def test_every_task_args_cover_every_operator_and_every_argument():
    args = every_task_args()
    assert {cls for cls, _ in args} == package_tasks()
    for cls, kwargs in args:
        missing = own_arguments(cls) - set(kwargs)
        assert not missing, f"{cls.__name__}: {sorted(missing)}"


def test_every_operator_and_the_sensor_deep_copy_with_every_argument():
    for (cls, _), task in zip(every_task_args(), every_task(), strict=True):
        clone = copy.deepcopy(task)
        assert type(clone) is cls
        for name in own_arguments(cls) | set(task.template_fields):
            assert getattr(clone, name) == getattr(task, name), (cls.__name__, name)


def test_a_partial_subset_deep_copies_every_task():
    with DAG("every_task", schedule=None) as dag:
        every_task()
    subset = dag.partial_subset(task_ids=["archive", "sensor", "restore", "verify"])
    assert sorted(subset.task_dict) == ["archive", "restore", "sensor", "verify"]


def test_an_archive_operator_deep_copied_while_it_runs_copies_and_stays_apart(
    cloud66_emulator_factory, s3_client, s3_bucket, aws_connection
):
    emu = cloud66_emulator_factory(bandwidth_per_connection=4 * MiB)
    bid = emu.add_backup("stack-1", size=12 * MiB, backup_date=RUN)
    task = Cloud66BackupToS3Operator(
        task_id="archive",
        stack_id="stack-1",
        backup_id=bid,
        s3_bucket=s3_bucket,
        part_size=5 * MiB,
        max_concurrency=2,
        asset_alias=None,
    )
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["keys"] = task.execute({})
        except BaseException as exc:  # reported below
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    deadline = time.monotonic() + 60
    while not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"):
        assert worker.is_alive() and time.monotonic() < deadline, outcome
        time.sleep(0.02)

    clone = copy.deepcopy(task)  # mid-copy: its stop signal exists
    assert worker.is_alive(), "the copy was still running when deep-copied"
    assert type(clone) is Cloud66BackupToS3Operator and clone.backup_id == bid
    clone.on_kill()  # the copy is not the running try: stopping it stops nothing that runs
    worker.join(60)
    assert not worker.is_alive() and "error" not in outcome, outcome
    data, _ = archive_of(emu, s3_client, s3_bucket, bid)
    assert data == b"".join(emu.iter_archive("stack-1", bid))
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


# --- 5. a kill during an API outage still aborts the upload at once -------------------------------
WORKER = """
import signal, sys
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator

op = Cloud66BackupToS3Operator(
    task_id="archive", stack_id="stack-1", backup_id=int(sys.argv[1]), s3_bucket=sys.argv[2],
    part_size=5 * 1024 * 1024, max_concurrency=2, asset_alias=None,
)
signal.signal(signal.SIGTERM, lambda signum, frame: op.on_kill())  # what Airflow's task runner does
try:
    op.execute({})
except Exception as exc:
    print("FAILED", type(exc).__name__, exc, flush=True)
    sys.exit(3)
print("DONE", flush=True)
"""


@reliability(
    area="worker",
    fault="SIGTERM while the API is down or throttled and a signed URL needs refreshing (abort within 10 s)",
    outcome="aborted, nothing left",
)
@pytest.mark.parametrize("api", ["down", "throttled"])
def test_sigterm_during_an_api_outage_aborts_within_ten_seconds(
    cloud66_emulator_factory, s3_client, s3_bucket, aws_connection, api
):
    # A throttled budget resets 50 s after the window began: the hook would wait that out.
    emu = cloud66_emulator_factory(bandwidth_per_connection=2 * MiB, conn_id=None, budget_window=50)
    bid = emu.add_backup("stack-1", size=30 * MiB, backup_date=RUN)
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(bid), s3_bucket],
        cwd=ROOT,
        env={**os.environ, "AIRFLOW_CONN_CLOUD66_DEFAULT": connection_json(emu)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"):
            assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()[0]
            time.sleep(0.05)
        # Mid-copy: every URL expires and Cloud 66 stops answering well.
        if api == "down":
            emu.fail_next(10_000, r"/files/", 503)
        else:
            emu.set_remaining(0)
        emu.expire_urls()
        refused = 503
        while not any(r.kind == "api" and r.status == refused for r in emu.requests):
            assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()[0]
            time.sleep(0.05)
        time.sleep(1.0)  # the refresh is now waiting out the outage
        killed = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=30)[0]
        took = time.monotonic() - killed
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 3, output
    assert "FAILED CopyCancelled" in output, output
    assert took < 10, f"the worker took {took:.1f} s to stop after SIGTERM"
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert s3_client.list_objects_v2(Bucket=s3_bucket).get("KeyCount") == 0


# --- 8. Cloud 66's own texts are redacted ---------------------------------------------------------
ENCODINGS = {
    "plain": lambda url: url,
    "percent-encoded": lambda url: quote(url, safe=""),
    "encoded twice": lambda url: quote(quote(url, safe=""), safe=""),
    "json-escaped": lambda url: url.replace("&", "\\u0026").replace("=", "\\u003d"),
}


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_an_api_error_echoing_a_signed_url_is_redacted(cloud66_emulator, caplog, encoding):
    emu = cloud66_emulator
    echoed = ENCODINGS[encoding](REMOTE_URL)
    body = (
        '{"error": "bad_request", "error_description": "cannot fetch", "details": "could not download '
        + echoed.replace("\\", "\\\\")
        + '"}'
    ).encode()
    emu.fail_next(1, r"/backups\.json$", 400, body=body, headers={"Content-Type": "application/json"})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Cloud66ApiError) as raised:
        Cloud66Hook(retry_policy=FAST).import_backup(
            "stack-1", group=1, db_type="mysql", remote_url=REMOTE_URL
        )
    seen = [str(raised.value), raised.value.description or "", caplog.text]
    assert "could not download" in str(raised.value)
    for text in seen:
        assert "SecretSig" not in text and "AKIAEXAMPLE" not in text, text


def test_a_failed_import_whose_result_echoes_the_url_is_redacted(cloud66_emulator, run_dag):
    emu = cloud66_emulator
    result = f"Import failed: 403 from {quote(REMOTE_URL, safe='')}"
    emu.add_backup("stack-1", backup_date=NOW, status=1, result=result)
    failures = Failures()
    dagrun = run_sensor(run_dag, "failed_redacted", poke_interval=0.2, failures=failures, deferrable=False)
    assert dagrun.state == "failed"
    message = str(failures.only)
    assert (
        "Import failed: 403 from" in message and "SecretSig" not in message and "AKIAEXAMPLE" not in message
    )


@reliability(
    area="secrets",
    fault="Cloud 66's success message echoes a signed URL",
    outcome="no secret in any output",
)
@pytest.mark.parametrize("encoding", ["plain", "percent-encoded"])
def test_a_success_message_echoing_a_signed_url_is_redacted(
    cloud66_emulator, run_dag, caplog, capfd, encoding
):
    emu = cloud66_emulator
    message = "queued for creation from " + ENCODINGS[encoding](REMOTE_URL)
    redacted = redact_text(message)
    assert "SecretSig" not in redacted and "[redacted]" in redacted
    body = json.dumps({"response": {"ok": True, "message": message}}).encode()
    emu.fail_next(
        2, r"/backups\.json$", 200, body=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    caplog.set_level(logging.DEBUG)

    assert Cloud66Hook(retry_policy=FAST).create_backup_task("stack-1", db_type="mysql") == redacted
    with DAG(f"success_message_{encoding.replace('-', '_')}", schedule=None) as dag:
        Cloud66CreateBackupOperator(task_id="backup", stack_id="stack-1", db_type="mysql")
    dagrun = run_dag(dag)

    assert dagrun.state == "success"
    assert xcom_value(dagrun, "backup") == redacted
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert f"Cloud 66 answered: {redacted}" in logged
    assert "SecretSig" not in logged and "AKIAEXAMPLE" not in logged
    assert [r.method for r in emu.requests] == ["POST", "POST"]
    if AIRFLOW_V_3_3_PLUS:  # the task state store keeps the message for a retry
        from airflow.models.task_state_store import TaskStateStoreModel
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = session.query(TaskStateStoreModel).filter_by(dag_id=dag.dag_id).all()
            stored = [row.value for row in rows]
        assert len(stored) == 1 and "[redacted]" in stored[0] and "SecretSig" not in stored[0]


@settings(max_examples=200, deadline=None)
@given(
    signature=st.text("ABCDEFabcdef0123456789+/=%", min_size=8, max_size=60).filter(lambda s: "Sig" not in s),
    encoding=st.sampled_from(sorted(ENCODINGS)),
    name=st.sampled_from(["Signature", "X-Amz-Signature", "x-amz-security-token", "X-Amz-Credential"]),
    before=st.sampled_from(["", "see ", "url: ", "(", "'"]),
)
def test_redaction_removes_a_credential_in_any_encoding(signature, encoding, name, before):
    token = "TOK" + signature
    url = f"https://b.s3.amazonaws.com/k.tar?X-Amz-Date=20261204T000000Z&{name}={token}&X-Amz-Expires=300"
    text = before + ENCODINGS[encoding](url) + " failed"
    redacted = redact_text(text)
    assert "TOK" not in redacted and "[redacted]" in redacted


# --- 9. the watermark is read only as far as a poll reads -----------------------------------------
@pytest.mark.parametrize(("db_type", "pages"), [("mysql", 1), ("all", 5)])
def test_watermark_read_is_bounded_like_a_poll(cloud66_emulator_factory, run_dag, db_type, pages):
    emu = cloud66_emulator_factory(backup_delay=0.2)
    start = datetime(2020, 1, 1, tzinfo=UTC)
    for hour in range(200):  # years of hourly backups would be thousands; 7 pages show the point
        emu.add_backup("stack-1", backup_date=start + timedelta(hours=hour))
    with DAG(f"bounded_watermark_{db_type}", schedule=None) as dag:
        Cloud66CreateBackupOperator(
            task_id="backup",
            stack_id="stack-1",
            db_type=db_type,
            wait_for_completion=True,
            poll_interval=0.2,
            timeout=30,
        )
    assert run_dag(dag).state == "success"
    post = next(i for i, r in enumerate(emu.requests) if r.method == "POST")
    before = emu.requests[:post]
    assert [r.query.get("page") for r in before] == [str(n) for n in range(1, pages + 1)]
