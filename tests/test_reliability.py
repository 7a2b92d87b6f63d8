"""Faults not covered elsewhere, end to end: the emulator and a moto S3 server over real HTTP.

Each test carries a ``reliability`` marker; ``scripts/reliability_table.py`` turns the markers of
the whole suite into docs/reliability.md, and the last test here fails when that file is stale.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from airflow_provider_c66 import budget
from airflow_provider_c66.api import RetryPolicy
from airflow_provider_c66.exceptions import Cloud66ApiError, Cloud66ResponseError
from airflow_provider_c66.hooks.cloud66 import Cloud66Hook
from airflow_provider_c66.models import Backup, BackupFile
from airflow_provider_c66.testing.pytest_plugin import connection_json
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from airflow_provider_c66.transfers.copy import CopyError
from tests.copy_fixtures import PartWatch
from tests.helpers import assert_nothing_left, keys, open_uploads, read
from tests.s3_fixtures import catalogue_key

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
DATE = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
FAST = RetryPolicy(max_attempts=3, backoff_base=0.001, backoff_max=0.01, total_timeout=30)
reliability = pytest.mark.reliability


# --- helpers --------------------------------------------------------------------------------------
def archive_bytes(emu: Any, bid: int, stack: str = "stack-1") -> bytes:
    return b"".join(emu.iter_archive(stack, bid))


def prefix_of(emu: Any, bid: int) -> str:
    """Where the default key prefix puts a backup of stack-1's app_db."""
    raw = next(r for r in emu.backups("stack-1") if r["id"] == bid)
    date = Backup.from_api(raw).backup_date
    return f"cloud66/stack-1/mysql/app_db/{date:%Y/%m/%d}/{bid}/"


def archive_key(emu: Any, bid: int) -> str:
    return prefix_of(emu, bid) + emu.file_names("stack-1", bid)[0].split(".tar", 1)[0] + ".tar"


def assert_archived(s3_client: Any, bucket: str, emu: Any, bid: int) -> None:
    key = archive_key(emu, bid)
    expected = [key, prefix_of(emu, bid) + "manifest.json", catalogue_key(emu, bid)]
    assert keys(s3_client, bucket) == sorted(expected)
    assert read(s3_client, bucket, key) == archive_bytes(emu, bid)
    assert open_uploads(s3_client, bucket) == []
    manifest = json.loads(read(s3_client, bucket, prefix_of(emu, bid) + "manifest.json"))
    assert manifest["sha256"] == emu.archive_sha256("stack-1", bid)


def make_op(bucket: str, bid: int, **kwargs: Any) -> Cloud66BackupToS3Operator:
    kwargs.setdefault("asset_alias", None)
    kwargs.setdefault("part_size", 5 * MiB)
    return Cloud66BackupToS3Operator(
        task_id=kwargs.pop("task_id", "archive"),
        stack_id="stack-1",
        backup_id=bid,
        s3_bucket=bucket,
        **kwargs,
    )


def data_requests(emu: Any) -> list[Any]:
    """File GETs other than the size probes (``bytes=0-0``)."""
    return [r for r in emu.requests if r.kind == "file" and r.headers.get("Range") != "bytes=0-0"]


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.fixture
def on_part(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, Callable[[], None]], None]:
    """Run an action when the n-th part of the operator's copies starts (after the size probes and,
    for a multipart copy, after CreateMultipartUpload: the place for a fault meant for the data path)."""
    watch = PartWatch()
    monkeypatch.setattr(Cloud66BackupToS3Operator, "copy_observers", lambda self: [watch])
    return watch.on_start


def s3_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"}}, operation)  # type: ignore[arg-type]


@pytest.fixture
def s3_event_hooks(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Callable[..., None]]]:
    """(event, handler) pairs registered on every S3 client the transfer operators create."""
    original = Cloud66BackupToS3Operator._s3_client
    hooks: list[tuple[str, Callable[..., None]]] = []

    def wrapped(self: Any, max_concurrency: int) -> Any:
        client = original(self, max_concurrency)
        for event, handler in hooks:
            client.meta.events.register(event, handler)
        return client

    monkeypatch.setattr(Cloud66BackupToS3Operator, "_s3_client", wrapped)
    return hooks


# --- the API ----------------------------------------------------------------------------------------
@reliability(
    area="API",
    fault="503 throttled: hourly budget spent mid-transfer, on the last try (a URL refresh is refused)",
    outcome="waits for the budget's reset (no try spent), then succeeds",
)
def test_budget_spent_mid_transfer_reschedules_after_the_reset_and_the_next_run_resumes(
    cloud66_emulator_factory, s3_client, s3_bucket, aws_connection, on_part, s3_event_hooks
):
    from airflow.exceptions import AirflowRescheduleException

    emu = cloud66_emulator_factory(budget_window=3600.0, split_threshold=64 * MiB)
    bid = emu.add_backup("stack-1", size=12 * MiB + 5, backup_date=DATE)
    parts: list[int] = []
    s3_event_hooks.append(
        ("provide-client-params.s3.UploadPart", lambda params, **_: parts.append(params["PartNumber"]))
    )

    def spend_budget_and_expire() -> None:  # part 1 is under way; the next URL fetch is throttled
        emu.set_remaining(0)
        emu.expire_urls()

    on_part(2, spend_budget_and_expire)
    last_try = {"ti": SimpleNamespace(try_number=1, max_tries=0, map_index=3)}
    with pytest.raises(AirflowRescheduleException) as info:
        make_op(s3_bucket, bid, max_concurrency=1).execute(last_try)
    # The throttled answer's X-RateLimit-Reset is whole epoch seconds, rounded up; the task waits for
    # it plus a spread of 1 to RESET_SPREAD seconds.
    reset = datetime.fromtimestamp(math.ceil(emu.budget_resets_at()), UTC)
    spread = (info.value.reschedule_date - reset).total_seconds()
    assert 1.0 <= spread <= budget.RESET_SPREAD
    assert isinstance(info.value.__cause__, CopyError)
    assert "hourly request budget is spent" in str(info.value.__cause__)
    statuses = [r.status for r in emu.requests if r.kind == "api"]
    assert statuses.count(503) == 1, "one throttled answer; nothing more is sent until the reset"
    assert keys(s3_client, s3_bucket) == [], "no object, no manifest"
    assert len(open_uploads(s3_client, s3_bucket)) == 1, "a reschedule is not a failure: the upload stays"
    assert parts == [1]

    emu.set_remaining(3000)  # the reset has come; the scheduler runs the task again (same try)
    parts.clear()
    make_op(s3_bucket, bid, max_concurrency=1).execute(last_try)
    assert_archived(s3_client, s3_bucket, emu, bid)
    assert parts == [2, 3], "part 1, already in S3, is not uploaded again"


@reliability(
    area="API",
    fault="hourly budget spent before a plain (unmapped) transfer starts, on an Airflow that keeps no reschedule date for it",
    outcome="waits for the budget's reset (no try spent), then succeeds",
)
def test_budget_spent_where_the_scheduler_would_not_keep_a_reschedule_date_waits_in_place(
    cloud66_emulator_factory, s3_client, s3_bucket, aws_connection, monkeypatch
):
    monkeypatch.setattr(budget, "RESCHEDULE_HONOURED_FROM", (99, 0))
    emu = cloud66_emulator_factory(budget_window=2.0)
    bid = emu.add_backup("stack-1", size=MiB, backup_date=DATE)
    emu.set_remaining(0)
    monkeypatch.setattr(budget, "RESET_SPREAD", 1.5)
    make_op(s3_bucket, bid).execute({"ti": SimpleNamespace(try_number=1, max_tries=0, map_index=-1)})
    assert_archived(s3_client, s3_bucket, emu, bid)
    assert next(r.status for r in emu.requests if r.kind == "api") == 503


# Strings a record's fields can hold that are close to valid: ids, counts, and timestamps, some at
# the edges of what datetime can represent (an offset pushes year 1 or 9999 out of range).
TIMESTAMPS = st.builds(
    lambda moment, offset: moment.isoformat() + offset,
    st.datetimes(max_value=datetime(1, 1, 2))
    | st.datetimes()
    | st.datetimes(min_value=datetime(9999, 12, 30)),
    st.sampled_from(["", "Z", "+01:00", "-05:00", "+23:59", "-23:59"]),
)
EDGE_STRINGS = (
    st.sampled_from(["", " ", "0", "-1", "1.5", "tar-aa", "2026-01-01", "2026-13-01T00:00:00Z"]) | TIMESTAMPS
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | EDGE_STRINGS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
RECORD_FIELDS = [
    "id",
    "db_type",
    "database_name",
    "backup_date_iso",
    "created_at_iso",
    "updated_at_iso",
    "backup_status",
    "backup_result",
    "restore_status",
    "restore_result",
    "verify_status",
    "verify_result",
    "server_uid",
    "file_base",
    "storage_path",
    "skip_tables",
    "backup_size",
    "logical_backup",
    "group",
]
VALID_RECORD = {
    "id": 4,
    "db_type": "mysql",
    "database_name": "app_db",
    "backup_date_iso": "2026-01-02T03:04:05Z",
    "created_at_iso": "2026-01-02T03:04:05Z",
    "updated_at_iso": "2026-01-02T03:04:05Z",
    "backup_status": 0,
    "backup_result": "",
    "restore_status": 0,
    "verify_status": 0,
    "backup_size": 10,
    "group": 1,
}
# A record with some fields removed (None: the API sends null or leaves them out) or replaced.
FIELD_CHANGES = st.dictionaries(
    st.sampled_from(RECORD_FIELDS), st.none() | JSON_VALUES, min_size=1, max_size=5
) | st.dictionaries(
    st.sampled_from(["backup_date_iso", "created_at_iso", "updated_at_iso"]),
    st.none() | EDGE_STRINGS,
    min_size=1,
)


def mutate(changes: dict[str, Any]) -> dict[str, Any]:
    record = dict(VALID_RECORD)
    for name, value in changes.items():
        if value is None:
            record.pop(name, None)
        else:
            record[name] = value
    return record


def parse_or_clear_error(parse: Callable[[], Any]) -> Any:
    """The result, or None after a clear Cloud66ResponseError; any other exception fails the test."""
    try:
        return parse()
    except Cloud66ResponseError as exc:
        assert "malformed" in str(exc)
        return None


@reliability(
    area="API",
    fault="backup and file records with missing or wrongly-typed fields (hypothesis)",
    outcome="clear error",
)
@settings(max_examples=300, deadline=None, database=None)
@given(
    changes=FIELD_CHANGES,
    file_record=JSON_VALUES | st.fixed_dictionaries({"id": JSON_VALUES, "name": JSON_VALUES}),
)
@example(changes={"backup_date_iso": "0001-01-01T00:00:00+01:00"}, file_record={"id": "..", "name": "/"})
def test_fuzzed_records_parse_or_fail_clearly(changes, file_record):
    backup = parse_or_clear_error(lambda: Backup.from_api(mutate(changes)))
    if backup is not None:
        assert backup.id > 0 and backup.backup_date.tzinfo is not None
        assert Backup.from_dict(json.loads(json.dumps(backup.to_dict()))) == backup
    item = parse_or_clear_error(lambda: BackupFile.from_api(file_record))
    if item is not None:
        assert item.id and isinstance(item.name, str) and isinstance(item.archive_name, str)


@reliability(
    area="API",
    fault="records with missing or wrongly-typed fields over HTTP (hypothesis, emulator extra_fields)",
    outcome="clear error",
)
@settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=FIELD_CHANGES)
@example(changes={"created_at_iso": "9999-12-31T23:59:59-05:00", "backup_date_iso": None})
def test_fuzzed_records_over_http_end_in_a_record_or_a_clear_error(cloud66_emulator, changes):
    emu = cloud66_emulator
    stack = f"fuzz-{len(emu.requests)}-{time.monotonic_ns()}"
    emu.add_stack(stack)
    bid = emu.add_backup(stack, backup_date=DATE, extra_fields=changes)  # None: the API sends null
    hook = Cloud66Hook(retry_policy=FAST)
    for call in (lambda: hook.get_backup(stack, bid), lambda: hook.latest_backups(stack)):
        try:
            result = call()
        except Cloud66ResponseError as exc:
            assert "malformed backup record" in str(exc)
        else:
            backups = result if isinstance(result, list) else [result]
            assert all(isinstance(b, Backup) for b in backups)


@reliability(
    area="API",
    fault="2xx answers that are not a Cloud 66 envelope, or an envelope of the wrong shape (hypothesis)",
    outcome="clear error",
)
@settings(
    max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=40)
    | st.builds(lambda v: json.dumps(v).encode(), JSON_VALUES)
    | st.builds(lambda v: json.dumps({"response": v}).encode(), JSON_VALUES)
)
def test_fuzzed_answers_end_in_a_result_or_a_clear_error(cloud66_emulator, body):
    emu = cloud66_emulator
    emu.clear_faults()
    emu.fail_next(FAST.max_attempts, r"/stacks/stack-1/backups\.json$", status=200, body=body)
    try:
        backups = Cloud66Hook(retry_policy=FAST).latest_backups("stack-1")
    except Cloud66ApiError as exc:
        assert isinstance(exc, Cloud66ResponseError), exc
    else:
        assert all(isinstance(b, Backup) for b in backups)


# --- the download ---------------------------------------------------------------------------------
@reliability(
    area="download",
    fault="signed URL expires mid-part and the connection drops: the resume gets 403",
    outcome="retried and succeeded",
)
def test_url_expiring_mid_part_resumes_at_the_byte_with_a_fresh_url(
    cloud66_emulator, s3_client, s3_bucket, aws_connection, on_part, monkeypatch
):
    emu = cloud66_emulator
    size = 10 * MiB + 3
    bid = emu.add_backup("stack-1", size=size, backup_date=DATE)
    # The URL expires just after the first part's GET was accepted, while its body is on the way;
    # that body then breaks off after 2 MiB, so the resume is sent with the expired URL.
    on_part(1, lambda: emu.truncate_next(1, r"\.tar$", after_bytes=2 * MiB))
    accept = emu.file_reply
    expired: list[bool] = []

    def file_reply(method: str, path: str, query: Any, headers: Any, ignore_range: bool) -> Any:
        reply = accept(method, path, query, headers, ignore_range)
        if reply.status == 206 and headers.get("Range") != "bytes=0-0" and not expired:
            expired.append(True)
            emu.expire_urls()
        return reply

    monkeypatch.setattr(emu, "file_reply", file_reply)
    make_op(s3_bucket, bid, max_concurrency=1).execute({})  # one part at a time: the resume meets the expiry

    assert read(s3_client, s3_bucket, archive_key(emu, bid)) == archive_bytes(emu, bid)
    starts = [(int(r.headers["Range"][6:].split("-")[0]), r.status) for r in data_requests(emu)]
    resumes = [start for start, _ in starts if start not in (0, 5 * MiB, 10 * MiB)]
    assert resumes == [2 * MiB, 2 * MiB], starts  # exactly where the body broke off ...
    assert starts[:3] == [(0, 206), (2 * MiB, 403), (2 * MiB, 206)]  # ... refused as expired, then resumed
    fetches = [r for r in emu.requests if r.kind == "api" and r.path.endswith("/files/tar.json")]
    assert len(fetches) == 2  # the first URL and one fresh one
    assert open_uploads(s3_client, s3_bucket) == []


# --- the upload -----------------------------------------------------------------------------------
@reliability(area="upload", fault="the bucket does not exist", outcome="clear error")
def test_missing_bucket_is_a_clear_error_and_nothing_is_downloaded(
    cloud66_emulator, s3_client, aws_connection
):
    emu = cloud66_emulator
    bid = emu.add_backup("stack-1", size=2048, backup_date=DATE)
    with pytest.raises(ClientError, match="NoSuchBucket"):
        make_op("no-such-bucket-c66", bid).execute({})
    assert [r for r in emu.requests if r.kind == "file"] == []
    with pytest.raises(ClientError):
        s3_client.head_bucket(Bucket="no-such-bucket-c66")


DENIED_WRITES = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")


@pytest.mark.parametrize(
    ("size", "denied_from_part"),
    [
        pytest.param(
            2048,
            None,
            id="small-put",
            marks=reliability(
                area="upload",
                fault="access denied (s3:PutObject) on a one-part archive",
                outcome="clear error",
            ),
        ),
        pytest.param(
            12 * MiB,
            None,
            id="multipart",
            marks=reliability(
                area="upload",
                fault="access denied (s3:PutObject) on a multipart archive",
                outcome="clear error",
            ),
        ),
        pytest.param(
            16 * MiB,
            2,
            id="denied-mid-copy",
            marks=reliability(
                area="upload",
                fault="access denied from the second UploadPart on (policy changed mid-copy)",
                outcome="aborted, nothing left",
            ),
        ),
    ],
)
def test_access_denied_leaves_no_object_and_no_upload(
    cloud66_emulator, s3_client, s3_bucket, aws_connection, s3_event_hooks, size, denied_from_part
):
    emu = cloud66_emulator
    bid = emu.add_backup("stack-1", size=size, backup_date=DATE)
    part_calls = [0]

    def deny(event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        if operation == "UploadPart":
            part_calls[0] += 1
            if denied_from_part is not None and part_calls[0] < denied_from_part:
                return
        elif denied_from_part is not None:
            return
        raise s3_error("AccessDenied", operation)

    for operation in DENIED_WRITES:
        s3_event_hooks.append((f"before-call.s3.{operation}", deny))
    with pytest.raises(CopyError, match="AccessDenied") as info:
        make_op(s3_bucket, bid, max_concurrency=1).execute({})
    assert f"s3://{s3_bucket}/" in str(info.value)
    assert_nothing_left(s3_client, s3_bucket)


# --- the worker -----------------------------------------------------------------------------------
WORKER = """
import signal, sys
from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator

op = Cloud66BackupToS3Operator(
    task_id="archive", stack_id="stack-1", backup_id=int(sys.argv[1]), s3_bucket=sys.argv[2],
    part_size=5 * 1024 * 1024, max_concurrency=2, asset_alias=None,
)
# What Airflow 3's task runner does on SIGTERM: call the task's on_kill() and carry on.
signal.signal(signal.SIGTERM, lambda signum, frame: op.on_kill())
try:
    op.execute({})
except Exception as exc:
    print("FAILED", type(exc).__name__, exc, flush=True)
    sys.exit(3)
print("DONE", flush=True)
"""


def start_worker(emu: Any, bid: int, bucket: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(bid), bucket],
        cwd=ROOT,
        env={**os.environ, "AIRFLOW_CONN_CLOUD66_DEFAULT": connection_json(emu)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def mid_copy(emu: Any, s3_client: Any, bucket: str, worker: subprocess.Popen[str]) -> bool:
    """Whether the worker has an upload open and part bodies streaming."""
    assert worker.poll() is None, worker.communicate()[0]
    return bool(data_requests(emu)) and bool(open_uploads(s3_client, bucket))


@reliability(
    area="worker", fault="SIGTERM mid-copy (the task runner calls on_kill)", outcome="aborted, nothing left"
)
@reliability(
    area="worker",
    fault="SIGKILL mid-copy (nothing can run): an open multipart upload is left",
    outcome="next run cleans up and completes",
)
def test_sigterm_and_sigkill_mid_copy(
    cloud66_emulator_factory, s3_client, s3_bucket, aws_connection, capfd, monkeypatch
):
    """Two workers, each a real process running the operator, one stopped with SIGTERM and one with
    SIGKILL while parts are in flight; then the next run of each completes the archive byte-exact."""
    emus = {
        sig: cloud66_emulator_factory(bandwidth_per_connection=2 * MiB, conn_id=None)
        for sig in ("term", "kill")
    }
    buckets = {"term": s3_bucket, "kill": f"{s3_bucket}-k"}
    s3_client.create_bucket(Bucket=buckets["kill"])
    bids = {sig: emu.add_backup("stack-1", size=16 * MiB, backup_date=DATE) for sig, emu in emus.items()}
    workers: dict[str, subprocess.Popen[str]] = {}
    stop = {"term": lambda w: w.send_signal(signal.SIGTERM), "kill": lambda w: w.kill()}
    try:
        for sig, emu in emus.items():
            workers[sig] = start_worker(emu, bids[sig], buckets[sig])
        pending = set(workers)
        deadline = time.monotonic() + 120
        while pending:  # each worker is stopped as soon as its parts are in flight
            assert time.monotonic() < deadline, "the workers did not start copying"
            for sig in sorted(pending):
                if mid_copy(emus[sig], s3_client, buckets[sig], workers[sig]):
                    time.sleep(0.2)
                    stop[sig](workers[sig])
                    pending.discard(sig)
            time.sleep(0.02)
        outputs = {sig: worker.communicate(timeout=60)[0] for sig, worker in workers.items()}
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                worker.kill()

    # SIGTERM: on_kill cancels the copy, the engine aborts the upload; nothing is left.
    assert workers["term"].returncode == 3, outputs["term"]
    assert "FAILED CopyCancelled" in outputs["term"] and "nothing was left in S3" in outputs["term"]
    assert_nothing_left(s3_client, buckets["term"])
    # SIGKILL: no code runs; the open upload stays behind, with no object.
    assert workers["kill"].returncode == -signal.SIGKILL
    (left,) = open_uploads(s3_client, buckets["kill"])
    assert left["Key"] == archive_key(emus["kill"], bids["kill"]) and keys(s3_client, buckets["kill"]) == []

    # The next run of each task (Airflow's retry) completes; the SIGKILLed one resumes the upload it
    # left (parts already in S3 are checked, not sent again), so no upload stays open.
    for sig, emu in emus.items():
        emu.bandwidth_per_connection = None
        monkeypatch.setenv("AIRFLOW_CONN_CLOUD66_DEFAULT", connection_json(emu))
        capfd.readouterr()
        make_op(buckets[sig], bids[sig]).execute({})
        assert_archived(s3_client, buckets[sig], emu, bids[sig])
        logged = "".join(capfd.readouterr())
        assert ("resuming the multipart upload an earlier try left open" in logged) is (sig == "kill"), logged
        assert open_uploads(s3_client, buckets[sig]) == []


# --- concurrency ----------------------------------------------------------------------------------
@reliability(
    area="concurrency",
    fault="20 transfers of the same backup at once, overlapping (own operator instance each)",
    outcome="one archive; all succeeded or skipped",
)
def test_concurrent_transfers_of_one_backup_all_succeed_with_one_archive(
    cloud66_emulator_factory, s3_client, s3_bucket, s3_server, monkeypatch
):
    """Twenty copies, as twenty mapped tasks would be: ten start together, ten more each while an
    upload is open (a mapped task group with less parallelism than tasks, or two DAG runs). Before
    the fix, a copy that started aborted every open upload under its prefix, so copies already
    running failed with NoSuchUpload."""
    # Real S3 answers a call on an aborted upload with 404 NoSuchUpload, which botocore does not
    # retry; moto answers 500, which older botocore retries for seconds: cap the retries here.
    extra = {
        "endpoint_url": s3_server,
        "region_name": "us-east-1",
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }
    connection = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    emu = cloud66_emulator_factory(bandwidth_per_connection=8 * MiB)
    bid = emu.add_backup("stack-1", size=16 * MiB + 1, backup_date=DATE)
    results: dict[int, list[str]] = {}
    errors: dict[int, BaseException] = {}
    together, copies = 10, 20
    barrier = threading.Barrier(together)

    def run(index: int) -> None:
        try:
            if index < together:
                barrier.wait(30)
            # moto answers 500 (real S3: 404) to a part of an upload another copy completed; a 500 is
            # waited out for retry_budget seconds, so keep it short here.
            op = make_op(s3_bucket, bid, task_id=f"archive_{index}", max_concurrency=2, retry_budget=1)
            results[index] = op.execute({})
        except BaseException as exc:
            errors[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(copies)]
    for thread in threads[:together]:
        thread.start()
    for thread in threads[together:]:
        wait_until(lambda: bool(open_uploads(s3_client, s3_bucket)) or not any(t.is_alive() for t in threads))
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join(120)

    assert not errors, {i: repr(e) for i, e in errors.items()}
    uri = f"s3://{s3_bucket}/{archive_key(emu, bid)}"
    assert results == {i: [uri] for i in range(copies)}
    assert_archived(s3_client, s3_bucket, emu, bid)


@reliability(
    area="concurrency",
    fault="two DAG runs for the same data interval (a re-run, and another DAG archiving the same backup)",
    outcome="skipped, nothing copied",
)
def test_two_dag_runs_for_the_same_interval_archive_once(
    cloud66_emulator, s3_client, s3_bucket, aws_connection, run_dag
):
    from airflow.sdk import DAG

    from airflow_provider_c66.sensors.backups import Cloud66BackupSensor
    from tests.helpers import xcom_value

    emu = cloud66_emulator
    interval = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    bid = emu.add_backup("stack-1", size=6 * MiB, backup_date=interval + timedelta(minutes=30))

    def dag(dag_id: str) -> Any:
        with DAG(dag_id, schedule="@hourly", start_date=interval - timedelta(days=1), catchup=False) as built:
            wait = Cloud66BackupSensor(
                task_id="wait", stack_id="stack-1", db_type="mysql", poke_interval=0.2, timeout=30
            )
            copy = Cloud66BackupToS3Operator(
                task_id="archive",
                stack_id="stack-1",
                backup_id=wait.output,
                s3_bucket=s3_bucket,
                part_size=5 * MiB,
            )
            wait >> copy
        return built

    first = run_dag(dag("reliability_same_interval"), logical_date=interval)
    assert first.state == "success"
    assert_archived(s3_client, s3_bucket, emu, bid)
    uris = xcom_value(first, "archive")
    listing = s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"]

    for dag_id in ("reliability_same_interval", "reliability_same_interval_other"):
        emu.clear_requests()
        again = run_dag(dag(dag_id), logical_date=interval)
        assert again.state == "success"
        assert xcom_value(again, "archive") == uris
        assert [r for r in emu.requests if r.kind == "file"] == [], "nothing is downloaded again"
        assert s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"] == listing, "nothing is written"


# --- the table ------------------------------------------------------------------------------------
def test_reliability_table_is_up_to_date():
    """docs/reliability.md is generated from the markers; regenerate: python scripts/reliability_table.py"""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "reliability_table.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
