"""Resume instead of restarting: a try that fails leaves its multipart upload for the next try, which
uploads only what S3 does not already hold (checked against the source), and the result is exact.

Emulator and moto over HTTP; S3 faults are injected with botocore ``before-call`` handlers (as S3's
InternalError), and the bytes each try sends are counted from the requests the client makes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS

from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator
from airflow_provider_c66.transfers.copy import CopyError, SourceChanged, copy_to_s3
from tests.copy_fixtures import FAST, KEY, Archive, MiB, read_object
from tests.helpers import failing_on_call, open_uploads

PART = 5 * MiB
DATE = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def sent_parts(client: Any) -> list[int]:
    numbers: list[int] = []

    def record(**kwargs: Any) -> None:
        numbers.append(int(kwargs["params"]["PartNumber"]))

    client.meta.events.register("provide-client-params.s3.UploadPart", record)
    return numbers


def fail_part(client: Any, number: int) -> Callable[..., None]:
    """Every UploadPart of part ``number`` fails, as S3's InternalError would, retries included."""

    def handler(params: Any, **_: Any) -> None:
        if int(params.get("PartNumber", 0)) == number:
            failing_on_call("UploadPart", 1)()

    client.meta.events.register("provide-client-params.s3.UploadPart", handler)
    return handler


@pytest.mark.reliability(
    area="upload",
    fault="a try fails mid-upload with tries left",
    outcome="retried and succeeded",
)
def test_a_failed_try_leaves_its_upload_and_the_next_uploads_only_what_is_missing(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    archive = archive_factory(6 * PART + 123)
    settings = FAST.__class__(**{**FAST.__dict__, "max_concurrency": 1})
    handler = fail_part(s3_client, 4)
    with pytest.raises(CopyError, match=r"UploadPart \(part 4"):
        copy_to_s3(
            archive.sources(), s3_client, s3_bucket, KEY, settings=settings, keep_upload_on_failure=True
        )
    (left,) = open_uploads(s3_client, s3_bucket)
    held = [
        p["PartNumber"]
        for p in s3_client.list_parts(Bucket=s3_bucket, Key=KEY, UploadId=left["UploadId"])["Parts"]
    ]
    assert held == [1, 2, 3]

    s3_client.meta.events.unregister("provide-client-params.s3.UploadPart", handler)
    numbers = sent_parts(s3_client)
    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=settings, resume=True)

    assert sorted(numbers) == [4, 5, 6, 7], "parts 1-3 are not uploaded again"
    assert result.reused == 3 * PART
    assert read_object(s3_client, s3_bucket) == archive.content()
    assert result.sha256 == archive.sha256(), "the SHA-256 covers the reused parts too"
    assert result.crc32 and open_uploads(s3_client, s3_bucket) == []


@pytest.mark.reliability(
    area="upload",
    fault="an open upload holding stale parts",
    outcome="succeeded, byte-exact",
)
def test_a_part_in_s3_that_differs_from_the_source_is_uploaded_again(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    """An open upload whose part 2 holds other bytes of the same size (stale, or another plan)."""
    archive = archive_factory(3 * PART + 9)
    data = archive.content()
    upload = s3_client.create_multipart_upload(Bucket=s3_bucket, Key=KEY, ChecksumAlgorithm="CRC32")
    for number, chunk in ((1, data[:PART]), (2, bytes(PART))):
        s3_client.upload_part(
            Bucket=s3_bucket,
            Key=KEY,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=chunk,
            ChecksumAlgorithm="CRC32",
        )
    numbers = sent_parts(s3_client)
    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, resume=True)
    assert sorted(numbers) == [2, 3, 4]
    assert result.reused == PART
    assert read_object(s3_client, s3_bucket) == data
    assert open_uploads(s3_client, s3_bucket) == []


def test_an_upload_made_another_way_is_not_resumed(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    """An open upload S3 lists with another checksum algorithm (another tool) is left alone."""
    archive = archive_factory(2 * PART + 1)
    other = s3_client.create_multipart_upload(Bucket=s3_bucket, Key=KEY, ChecksumAlgorithm="SHA256")[
        "UploadId"
    ]
    if "ChecksumAlgorithm" not in open_uploads(s3_client, s3_bucket)[0]:
        pytest.skip("this S3 server lists no upload's checksum algorithm (nanio, radosgw, moto before 5.2)")
    numbers = sent_parts(s3_client)
    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, resume=True)
    assert sorted(numbers) == [1, 2, 3] and result.reused == 0
    assert read_object(s3_client, s3_bucket) == archive.content()
    assert [u["UploadId"] for u in open_uploads(s3_client, s3_bucket)] == [other], "not ours to abort here"


def test_without_tries_left_or_when_the_source_changed_the_upload_is_aborted(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    archive = archive_factory(3 * PART)
    handler = fail_part(s3_client, 2)
    with pytest.raises(CopyError):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)
    assert open_uploads(s3_client, s3_bucket) == [], "the last try aborts"
    s3_client.meta.events.unregister("provide-client-params.s3.UploadPart", handler)

    def changed(sizes: Any) -> None:
        raise SourceChanged("its file list changed")

    with pytest.raises(SourceChanged):
        copy_to_s3(
            archive.sources(),
            s3_client,
            s3_bucket,
            KEY,
            settings=FAST,
            keep_upload_on_failure=True,
            before_complete=changed,
        )
    assert open_uploads(s3_client, s3_bucket) == [], "parts of a changing source are never kept"


def test_the_operator_keeps_the_upload_while_airflow_will_retry_and_resumes_it(
    cloud66_emulator_factory: Any,
    s3_client: Any,
    s3_bucket: str,
    aws_connection: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Try 1 of 2 fails at part 3: its upload stays; try 2 uploads only parts 3 on; the last try's
    failure aborts."""
    import botocore.client

    emu = cloud66_emulator_factory(split_threshold=64 * MiB)
    bid = emu.add_backup("stack-1", size=4 * PART + 5, backup_date=DATE)
    data = b"".join(emu.iter_archive("stack-1", bid))
    numbers: list[int] = []
    failing = {"part": 3}

    real = botocore.client.BaseClient._make_api_call

    def api_call(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "UploadPart":
            numbers.append(int(params["PartNumber"]))
            if params["PartNumber"] == failing["part"]:
                from botocore.exceptions import ClientError

                raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, operation)
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", api_call)

    def run(try_number: int, max_tries: int) -> list[str]:
        op = Cloud66BackupToS3Operator(
            task_id="archive",
            stack_id="stack-1",
            backup_id=bid,
            s3_bucket=s3_bucket,
            part_size=PART,
            max_concurrency=1,
            asset_alias=None,
        )
        result: list[str] = op.execute({"ti": SimpleNamespace(try_number=try_number, max_tries=max_tries)})
        return result

    with pytest.raises(Exception, match="injected"):
        run(1, 1)
    assert len(open_uploads(s3_client, s3_bucket)) == 1
    first = sorted(numbers)
    numbers.clear()
    failing["part"] = 0
    (uri,) = run(2, 1)
    assert first == [1, 2, 3] and sorted(numbers) == [3, 4, 5]
    assert s3_client.get_object(Bucket=s3_bucket, Key=uri.split("/", 3)[3])["Body"].read() == data
    assert open_uploads(s3_client, s3_bucket) == []

    other = emu.add_backup("stack-1", size=3 * PART, backup_date=DATE)
    failing["part"] = 2
    with pytest.raises(Exception, match="injected"):
        Cloud66BackupToS3Operator(
            task_id="archive",
            stack_id="stack-1",
            backup_id=other,
            s3_bucket=s3_bucket,
            part_size=PART,
            asset_alias=None,
        ).execute({"ti": SimpleNamespace(try_number=2, max_tries=1)})
    assert open_uploads(s3_client, s3_bucket) == [], "the last try aborts"


def test_a_refusal_by_s3_aborts_even_with_tries_left(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    """A 4xx (S3 refusing the request) would be refused again: the upload is not kept for a retry."""
    from botocore.exceptions import ClientError

    archive = archive_factory(3 * PART)

    def refuse(params: Any, **_: Any) -> None:
        if int(params.get("PartNumber", 0)) == 2:
            error = {
                "Error": {"Code": "InvalidRequest", "Message": "no"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
            raise ClientError(error, "UploadPart")  # type: ignore[arg-type]

    s3_client.meta.events.register("provide-client-params.s3.UploadPart", refuse)
    with pytest.raises(CopyError, match="InvalidRequest"):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, keep_upload_on_failure=True)
    assert open_uploads(s3_client, s3_bucket) == []


# --- the recorded UploadId (Airflow 3.3's task state store, or any UploadIdStore) -----------------
class RecordedIds:
    """An UploadIdStore in a dict, logging every call (the operator's is the task state store)."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []

    def get(self, key: str) -> str | None:
        self.calls.append(("get", key))
        return self.ids.get(key)

    def put(self, key: str, upload_id: str) -> None:
        self.calls.append(("put", key))
        self.ids[key] = upload_id

    def drop(self, key: str) -> None:
        self.calls.append(("drop", key))
        self.ids.pop(key, None)


def test_a_recorded_upload_is_continued_and_a_concurrent_copys_upload_left_alone(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    """Try 1 records its UploadId and fails at part 4. Then another copy of the same backup opens an
    upload on the key (newer, so a listing would pick it). Try 2 continues try 1's upload, by its id,
    and does not touch the other copy's."""
    archive = archive_factory(6 * PART + 123)
    settings = FAST.__class__(**{**FAST.__dict__, "max_concurrency": 1})
    ids = RecordedIds()
    handler = fail_part(s3_client, 4)
    with pytest.raises(CopyError):
        copy_to_s3(
            archive.sources(),
            s3_client,
            s3_bucket,
            KEY,
            settings=settings,
            resume=True,
            keep_upload_on_failure=True,
            upload_ids=ids,
        )
    s3_client.meta.events.unregister("provide-client-params.s3.UploadPart", handler)
    (ours,) = open_uploads(s3_client, s3_bucket)
    assert ids.ids == {KEY: ours["UploadId"]}, "recorded when created, kept for the next try"
    concurrent = s3_client.create_multipart_upload(Bucket=s3_bucket, Key=KEY, ChecksumAlgorithm="CRC32")

    numbers = sent_parts(s3_client)
    result = copy_to_s3(
        archive.sources(), s3_client, s3_bucket, KEY, settings=settings, resume=True, upload_ids=ids
    )
    assert sorted(numbers) == [4, 5, 6, 7], "parts 1-3 of the recorded upload are not uploaded again"
    assert result.reused == 3 * PART
    assert read_object(s3_client, s3_bucket) == archive.content()
    assert [u["UploadId"] for u in open_uploads(s3_client, s3_bucket)] == [concurrent["UploadId"]]
    assert ids.ids == {}, "dropped once completed"
    assert ids.calls == [("get", KEY), ("put", KEY), ("get", KEY), ("drop", KEY)]


def test_a_recorded_upload_that_is_gone_starts_afresh_and_never_takes_another(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    """The recorded upload was aborted meanwhile (a lifecycle rule, a concurrent copy that finished):
    the copy starts a new upload rather than continue an unrecorded one found on the key."""
    archive = archive_factory(2 * PART + 1)
    data = archive.content()
    stranger = s3_client.create_multipart_upload(Bucket=s3_bucket, Key=KEY, ChecksumAlgorithm="CRC32")
    s3_client.upload_part(
        Bucket=s3_bucket,
        Key=KEY,
        UploadId=stranger["UploadId"],
        PartNumber=1,
        Body=data[:PART],
        ChecksumAlgorithm="CRC32",
    )
    gone = s3_client.create_multipart_upload(Bucket=s3_bucket, Key=KEY, ChecksumAlgorithm="CRC32")
    s3_client.abort_multipart_upload(Bucket=s3_bucket, Key=KEY, UploadId=gone["UploadId"])
    ids = RecordedIds()
    ids.ids[KEY] = gone["UploadId"]

    numbers = sent_parts(s3_client)
    result = copy_to_s3(
        archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, resume=True, upload_ids=ids
    )
    assert sorted(numbers) == [1, 2, 3] and result.reused == 0, "the unrecorded upload's part 1 is not used"
    assert read_object(s3_client, s3_bucket) == data
    assert [u["UploadId"] for u in open_uploads(s3_client, s3_bucket)] == [stranger["UploadId"]]
    assert ids.ids == {}
    assert ids.calls == [("get", KEY), ("put", KEY), ("drop", KEY)], "the new upload recorded in its place"


def test_a_failing_upload_id_store_never_fails_the_copy(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(RecordedIds):
        def get(self, key: str) -> str | None:
            raise RuntimeError("store down")

        def put(self, key: str, upload_id: str) -> None:
            raise RuntimeError("store down")

        def drop(self, key: str) -> None:
            raise RuntimeError("store down")

    archive = archive_factory(2 * PART + 1)
    copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, resume=True, upload_ids=Broken())
    assert read_object(s3_client, s3_bucket) == archive.content()
    assert open_uploads(s3_client, s3_bucket) == []
    logged = [r.getMessage() for r in caplog.records if "in its store" in r.getMessage()]
    assert logged == [
        f"s3://{s3_bucket}/{KEY}: could not {action} the upload's id in its store (store down)"
        for action in ("get", "record", "forget")
    ]


@pytest.mark.skipif(
    not AIRFLOW_V_3_3_PLUS, reason="the task state store that records the UploadId is Airflow 3.3+"
)
@pytest.mark.reliability(
    area="upload",
    fault="a retry while a concurrent copy has an upload open on the key (Airflow 3.3+)",
    outcome="retried and succeeded",
)
def test_through_airflow_a_retry_continues_its_own_upload_from_the_task_state_store(
    cloud66_emulator_factory: Any,
    s3_client: Any,
    s3_bucket: str,
    aws_connection: str,
    run_dag: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dag.test() with retries=1: try 1 loses its connection at part 3 and keeps its upload, whose id
    is in the task state store; meanwhile another copy opens a newer upload on the key. Try 2
    continues try 1's upload (parts 3-5 only), the archive is byte-exact, and nothing is left: no
    upload, no entry in the store."""
    import botocore.client
    from airflow.models.task_state_store import TaskStateStoreModel
    from airflow.sdk import DAG
    from airflow.utils.session import create_session

    emu = cloud66_emulator_factory(split_threshold=64 * MiB)
    bid = emu.add_backup("stack-1", size=4 * PART + 5, backup_date=DATE)
    data = b"".join(emu.iter_archive("stack-1", bid))
    numbers: list[int] = []
    concurrent: list[str] = []
    real = botocore.client.BaseClient._make_api_call

    def api_call(self: Any, operation: str, params: dict[str, Any]) -> Any:
        if operation == "UploadPart":
            numbers.append(int(params["PartNumber"]))
            if params["PartNumber"] == 3 and not concurrent:
                opened = real(self, "CreateMultipartUpload", {"Bucket": s3_bucket, "Key": params["Key"]})
                concurrent.append(opened["UploadId"])
                raise ConnectionResetError("injected: connection reset by peer")
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", api_call)
    with DAG("archive_resumes_own_upload", schedule=None) as dag:
        Cloud66BackupToS3Operator(
            task_id="archive",
            stack_id="stack-1",
            backup_id=bid,
            s3_bucket=s3_bucket,
            part_size=PART,
            max_concurrency=1,
            asset_alias=None,
            retries=1,
            retry_delay=timedelta(0),
        )
    dagrun = run_dag(dag)

    assert dagrun.state == "success"
    assert dagrun.get_task_instance("archive").try_number == 2
    assert numbers == [1, 2, 3, 3, 4, 5], "try 2 sends only what try 1's upload lacks"
    (key,) = [
        k
        for k in (o["Key"] for o in s3_client.list_objects_v2(Bucket=s3_bucket)["Contents"])
        if "manifest" not in k and "_catalog" not in k
    ]
    assert s3_client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == data
    assert open_uploads(s3_client, s3_bucket) == [], (
        "the concurrent upload is aborted once the archive is complete"
    )
    with create_session() as session:
        rows = session.query(TaskStateStoreModel).filter_by(dag_id="archive_resumes_own_upload").all()
    assert rows == []
