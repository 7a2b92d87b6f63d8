"""The copy engine against a live Cloud 66 emulator and a moto S3 server, both over real HTTP.

Every test ends with a byte-exact object or with no object and no open multipart upload, and checks
the requests the file server actually saw (ranges, resumes, URL fetches).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import traceback
import zlib
from base64 import b64encode
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.testing import RecordedRequest
from airflow_provider_c66.transfers import copy as engine
from airflow_provider_c66.transfers.copy import (
    ArchiveDigest,
    CopyCancelled,
    CopyError,
    CopySettings,
    Source,
    abort_open_uploads,
    checksums,
    choose_part_size,
    copy_to_s3,
    planning,
)
from tests.copy_fixtures import FAST, KEY, STACK, Archive, MiB, PartWatch, read_object
from tests.helpers import assert_nothing_left, failing_on_call

GiB = 1 << 30


# -- helpers ---------------------------------------------------------------------------------------


def ranges(requests_: list[RecordedRequest]) -> list[tuple[int, int]]:
    found = []
    for r in requests_:
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", r.headers.get("Range", ""))
        assert match, r
        found.append((int(match.group(1)), int(match.group(2))))
    return sorted(found)


def planned(size: int, part: int = 5 * MiB) -> list[tuple[int, int]]:
    return [(start, min(start + part, size) - 1) for start in range(0, size, part)]


def crc32_b64(data: bytes) -> str:
    return b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


class S3Calls:
    """Records the S3 operations a client made, with the headers and body type it sent."""

    def __init__(self, client: Any) -> None:
        self.sent: list[tuple[str, dict[str, str], type]] = []
        self.xml: dict[str, bytes] = {}  # small XML bodies by operation (CompleteMultipartUpload)
        client.meta.events.register("before-send.s3", self._record)

    def _record(self, request: Any, event_name: str, **_: Any) -> None:
        operation = event_name.split(".")[-1]
        headers = {k: v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        self.sent.append((operation, headers, type(request.body)))
        if isinstance(request.body, bytes) and request.body.startswith(b"<"):
            self.xml[operation] = request.body

    @property
    def operations(self) -> list[str]:
        return [op for op, _, _ in self.sent]


def fail_operation(client: Any, operation: str, on_call: int) -> None:
    """Make the ``on_call``-th call of an S3 operation on ``client`` fail as S3 would."""
    client.meta.events.register(f"before-call.s3.{operation}", failing_on_call(operation, on_call))


# -- part sizing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "requested", "expected"),
    [
        (0, 8 * MiB, 8 * MiB),
        (100, 8 * MiB, 8 * MiB),
        (100, 1, 5 * MiB),  # S3's floor for a part
        (10 * GiB, 8 * MiB, 8 * MiB),  # 1,280 parts
        (10_000 * 8 * MiB, 8 * MiB, 8 * MiB),  # exactly 10,000 parts
        (10_000 * 8 * MiB + 1, 8 * MiB, 9 * MiB),  # one byte more: next whole MiB
        (100 * GiB, 8 * MiB, 11 * MiB),  # 10.24 MiB rounded up
        (5 * 1024 * GiB, 8 * MiB, 525 * MiB),  # S3's largest object
        (1 * GiB, 8 * MiB + 1, 9 * MiB),  # the request itself is rounded up to a MiB
        (1 * GiB, 6 * GiB, 5 * GiB),  # S3's ceiling for a part
    ],
)
def test_choose_part_size(total: int, requested: int, expected: int) -> None:
    size = choose_part_size(total, requested)
    assert size == expected
    assert size % MiB == 0 and 5 * MiB <= size <= 5 * GiB
    assert -(-total // size) <= 10_000


@pytest.mark.parametrize(("total", "requested"), [(5 * 1024 * GiB + 1, 8 * MiB), (-1, 8 * MiB), (10, 0)])
def test_choose_part_size_refuses(total: int, requested: int) -> None:
    with pytest.raises(ValueError):
        choose_part_size(total, requested)


def test_plan_parts_span_sources() -> None:
    parts = planning._plan_parts([7, 0, 7, 2], 5)
    assert [(p.number, p.start, p.length) for p in parts] == [(1, 0, 5), (2, 5, 5), (3, 10, 5), (4, 15, 1)]
    assert [(s.source, s.offset, s.length) for s in parts[1].segments] == [(0, 5, 2), (2, 0, 3)]
    assert [(s.source, s.offset, s.length) for s in parts[3].segments] == [(3, 1, 1)]
    assert [(p.length, p.segments) for p in planning._plan_parts([0], 5)] == [(0, ())]


# -- happy paths -----------------------------------------------------------------------------------


def test_one_file_multipart(archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str) -> None:
    size = 12 * MiB + 3
    archive = archive_factory(size)
    calls = S3Calls(s3_client)
    extra = {"StorageClass": "STANDARD_IA", "Metadata": {"backup-id": "1"}, "Tagging": "source=cloud66"}

    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, extra_args=extra)
    sent = list(calls.sent)

    content = archive.content()
    assert read_object(s3_client, s3_bucket) == content
    assert result.sha256 == archive.sha256() == hashlib.sha256(content).hexdigest()
    assert (result.bucket, result.key, result.size, result.parts) == (s3_bucket, KEY, size, 3)
    assert result.source_sizes == (("tar", size),)
    assert result.etag == s3_client.head_object(Bucket=s3_bucket, Key=KEY)["ETag"].strip('"')
    head = s3_client.head_object(Bucket=s3_bucket, Key=KEY)
    assert (head["StorageClass"], head["Metadata"]) == ("STANDARD_IA", {"backup-id": "1"})
    assert s3_client.get_object_tagging(Bucket=s3_bucket, Key=KEY)["TagSet"] == [
        {"Key": "source", "Value": "cloud66"}
    ]
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []

    # The file server saw one size probe, one ranged GET per part and one probe again before the
    # upload completed (is the file still being written?): no HEAD, no auth, no compression.
    files = archive.file_requests()
    probes = [("GET", "bytes=0-0", 206)]
    assert [(r.method, r.headers["Range"], r.status) for r in files[:1]] == probes
    assert [(r.method, r.headers["Range"], r.status) for r in files[-1:]] == probes
    assert ranges(files[1:-1]) == planned(size)
    assert {(r.method, r.status) for r in files} == {("GET", 206)}
    assert all("Authorization" not in r.headers for r in files)
    assert all(r.headers.get("Accept-Encoding") == "identity" for r in files)
    assert archive.url_fetches("tar") == 1

    # CRC32 computed by the engine rides on every part and on the completion; botocore adds none
    # of its own and sends the part buffer (a bytearray) as is.
    ops = [op for op, _, _ in sent]
    assert ops[0] == "CreateMultipartUpload" and ops[-2:] == ["CompleteMultipartUpload", "HeadObject"]
    assert sorted(ops[1:-2]) == ["UploadPart"] * 3
    create_headers = sent[0][1]
    assert create_headers["x-amz-checksum-algorithm"] == "CRC32"
    part_checksums = {headers["x-amz-checksum-crc32"] for op, headers, body in sent if op == "UploadPart"}
    assert part_checksums == {crc32_b64(content[a : b + 1]) for a, b in planned(size)}
    completion = calls.xml["CompleteMultipartUpload"].decode()
    listed = re.findall(
        r"<PartNumber>(\d+)</PartNumber>.*?<ChecksumCRC32>([^<]+)</ChecksumCRC32>", completion
    )
    assert listed == [(str(n), crc32_b64(content[a : b + 1])) for n, (a, b) in enumerate(planned(size), 1)]
    assert {body for op, _, body in sent if op == "UploadPart"} == {bytearray}


def test_split_files_joined_with_parts_spanning_files(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    size = 23 * MiB + 5
    archive = archive_factory(size, split_threshold=10 * MiB, split_size=7 * MiB)
    assert archive.file_ids == ["tar-aa", "tar-ab", "tar-ac", "tar-ad"]

    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)

    assert read_object(s3_client, s3_bucket) == archive.content()
    assert result.sha256 == archive.sha256()
    assert result.parts == 5
    assert result.source_sizes == (
        ("tar-aa", 7 * MiB),
        ("tar-ab", 7 * MiB),
        ("tar-ac", 7 * MiB),
        ("tar-ad", 2 * MiB + 5),
    )
    # Part 2 (archive bytes 5-10 MiB) is the tail of tar-aa followed by the head of tar-ab.
    seen = {(r.path.rsplit("-", 1)[-1], r.headers["Range"]) for r in archive.data_requests()}
    assert ("aa", f"bytes={5 * MiB}-{7 * MiB - 1}") in seen
    assert ("ab", f"bytes=0-{3 * MiB - 1}") in seen
    assert len(seen) == len(archive.data_requests()) == 8
    assert all(archive.url_fetches(fid) == 1 for fid in archive.file_ids)


def test_the_files_of_a_split_backup_are_probed_at_once(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    # A probe may first fetch the file's signed URL: one file after another, a split backup pays two
    # round trips per file before its first byte and again before the completion. Here every probe
    # is answered after 1 s; one after another, the three would be answered at least 1 s apart.
    size = 20 * MiB + 5
    archive = archive_factory(size, split_threshold=10 * MiB, split_size=7 * MiB)
    assert archive.file_ids == ["tar-aa", "tar-ab", "tar-ac"]
    archive.emu.slow_next(3, r"-a[a-c]$", delay=1.0)  # the first three file requests: the probes

    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)

    assert read_object(s3_client, s3_bucket) == archive.content() and result.sha256 == archive.sha256()
    files = archive.file_requests()
    first_look = files[:3]
    assert sorted(r.path[-2:] for r in first_look) == ["aa", "ab", "ac"]
    assert {r.headers["Range"] for r in first_look} == {"bytes=0-0"}
    answered = [r.time for r in first_look]
    assert max(answered) - min(answered) < 0.5, "the probes ran one after another"
    # The second look probes every file again, after the last data read (7 reads for 5 parts).
    assert sorted((r.path[-2:], r.headers["Range"]) for r in files[-3:]) == [
        ("aa", "bytes=0-0"),
        ("ab", "bytes=0-0"),
        ("ac", "bytes=0-0"),
    ]
    assert len(files) == 3 + 7 + 3 and all(r.headers["Range"] != "bytes=0-0" for r in files[3:-3])


def test_the_second_look_at_the_sources_runs_while_the_last_parts_upload(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    # Downloads finish before uploads on a link where S3 is the slower side: the sources are probed
    # again (is a file still being written?) once every byte is read, not after the last upload.
    size = 17 * MiB + 3  # 4 parts of up to 5 MiB
    archive = archive_factory(size)
    probes_seen = threading.Event()

    def hold_the_last_part(request: Any, **_: Any) -> None:
        if "partNumber=4" in request.url:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not probes_seen.is_set():
                if sum(r.headers.get("Range") == "bytes=0-0" for r in archive.file_requests()) == 2:
                    probes_seen.set()
                time.sleep(0.01)

    s3_client.meta.events.register("before-send.s3.UploadPart", hold_the_last_part)
    calls = S3Calls(s3_client)

    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)

    assert probes_seen.is_set(), "the sources were probed again only after the last upload"
    assert calls.operations[-2:] == ["CompleteMultipartUpload", "HeadObject"]
    assert read_object(s3_client, s3_bucket) == archive.content() and result.sha256 == archive.sha256()


def test_empty_archive_is_one_empty_put(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    archive = archive_factory(0)
    calls = S3Calls(s3_client)

    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)
    sent = list(calls.sent)

    assert read_object(s3_client, s3_bucket) == b""
    assert (result.size, result.parts, result.sha256) == (0, 1, hashlib.sha256(b"").hexdigest())
    assert [op for op, _, _ in sent] == ["PutObject", "HeadObject"]
    # The probe's 416 (``bytes */0``) says "empty"; nothing else is read but the probe before the PUT.
    assert [(r.headers["Range"], r.status) for r in archive.file_requests()] == [("bytes=0-0", 416)] * 2


def test_small_split_archive_is_one_put(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    size = 2 * MiB + 7
    archive = archive_factory(size, split_threshold=1 * MiB, split_size=600 * 1024)
    assert len(archive.file_ids) == 4
    calls = S3Calls(s3_client)

    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)
    sent = list(calls.sent)

    assert read_object(s3_client, s3_bucket) == archive.content()
    assert (result.parts, result.sha256) == (1, archive.sha256())
    assert [op for op, _, _ in sent] == ["PutObject", "HeadObject"]
    assert sent[0][1]["x-amz-checksum-crc32"] == crc32_b64(archive.content())


class SlowUploads:
    """Holds every UploadPart for ``delay`` seconds before it is sent, and counts them in flight."""

    def __init__(self, client: Any, delay: float) -> None:
        self.delay, self.in_flight, self.peak = delay, 0, 0
        self._lock = threading.Lock()
        client.meta.events.register("before-call.s3.UploadPart", self.before)
        client.meta.events.register("after-call.s3.UploadPart", self.after)

    def before(self, **kwargs: Any) -> None:
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        time.sleep(self.delay)

    def after(self, **kwargs: Any) -> None:
        with self._lock:
            self.in_flight -= 1


def peak_reading(events: list[tuple[str, int]]) -> int:
    """The most parts downloading at once: started and not yet read."""
    reading = peak = 0
    for event, _ in events:
        reading += {"started": 1, "read": -1}.get(event, 0)
        peak = max(peak, reading)
    return peak


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("part_size", 0, "must be an integer of at least 1, got 0 (int)"),
        ("max_concurrency", 2.5, "must be an integer of at least 1, got 2.5 (float)"),
        ("retries", -1, "must be an integer of at least 0, got -1 (int)"),
        ("retry_budget", -1.0, "must be a non-negative number of seconds, got -1.0"),
        ("backoff_max", float("inf"), "must be a non-negative number of seconds, got inf"),
        ("read_timeout", "soon", "must be a non-negative number of seconds, got 'soon'"),
        ("progress_interval", 0, "must be a positive number of seconds, got 0"),
    ],
)
def test_a_copy_setting_it_cannot_run_with_is_refused_by_name(setting: str, value: Any, message: str) -> None:
    with pytest.raises(Cloud66InputError) as info:
        CopySettings(**{setting: value})
    assert info.value.field == setting
    assert str(info.value) == f"{setting}: {message}"
    assert CopySettings(retries=0, retry_budget=0, backoff_base=0).retries == 0  # zero is a choice here


def test_part_memory_is_bounded_by_twice_max_concurrency(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, watch: PartWatch
) -> None:
    """Uploads slower than downloads fill the pipeline: 2 x max_concurrency parts held, never more."""
    archive = archive_factory(41 * MiB, bandwidth_per_connection=64 * MiB)
    uploads = SlowUploads(s3_client, delay=0.3)
    settings = CopySettings(part_size=5 * MiB, max_concurrency=2, progress_interval=0.05)

    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=settings, observers=[watch])

    assert result.parts == 9 and result.sha256 == archive.sha256()
    assert read_object(s3_client, s3_bucket) == archive.content()
    assert watch.started == 9 and watch.sent == 41 * MiB
    assert watch.peak == 4  # 2 x max_concurrency: reached, never passed
    assert watch.held == 0
    assert uploads.peak == 2 and peak_reading(watch.events) <= 2


def test_downloads_go_on_while_parts_upload(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, watch: PartWatch
) -> None:
    """The pipeline: while the first parts upload, the next ones download (each stage in archive order)."""
    archive = archive_factory(30 * MiB, bandwidth_per_connection=64 * MiB)
    SlowUploads(s3_client, delay=0.5)
    settings = CopySettings(part_size=5 * MiB, max_concurrency=2, progress_interval=0.05)

    copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=settings, observers=[watch])

    first_upload_done = watch.events.index(("uploaded", 1))
    assert {("started", 3), ("started", 4), ("read", 3), ("read", 4)} <= set(watch.events[:first_upload_done])
    released = [number for event, number in watch.events if event == "released"]
    assert released == [1, 2, 3, 4, 5, 6]  # hashed in archive order
    assert read_object(s3_client, s3_bucket) == archive.content()


# -- faults on the file server ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param(
            "drop",
            marks=pytest.mark.reliability(
                area="download", fault="connection drop (reset) mid-part", outcome="retried and succeeded"
            ),
        ),
        pytest.param(
            "truncate",
            marks=pytest.mark.reliability(
                area="download",
                fault="truncated body (clean close) mid-part",
                outcome="retried and succeeded",
            ),
        ),
    ],
)
def test_broken_body_resumes_at_the_byte_it_stopped(
    fault: str,
    archive_factory: Callable[..., Archive],
    s3_client: Any,
    s3_bucket: str,
    watch: PartWatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_c66.transfers.copy")
    size = 12 * MiB + 3
    archive = archive_factory(size)
    after = 1_500_000
    inject = archive.emu.drop_connection_next if fault == "drop" else archive.emu.truncate_next
    watch.on_start(1, lambda: inject(1, r"\.tar$", after_bytes=after))

    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, observers=[watch])

    assert read_object(s3_client, s3_bucket) == archive.content()
    assert result.sha256 == archive.sha256()
    # The retry warning says where the read stopped; the next GET asks for exactly the rest.
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    match = re.search(r"app_db\.tar \(file tar\), bytes (\d+)-(\d+): (\w+)", warning)
    assert match, warning
    resume = (int(match.group(1)), int(match.group(2)))
    got = ranges(archive.data_requests())
    assert len(got) == 4 and resume in got
    (broken,) = [p for p in planned(size) if p[1] == resume[1]]
    if fault == "truncate":  # a clean FIN: every byte sent arrived
        assert resume[0] == broken[0] + after
        assert match.group(3) == "ProtocolError"  # urllib3: IncompleteRead
    else:  # a reset may discard bytes still in the socket buffer, never add any
        assert broken[0] <= resume[0] <= broken[0] + after
    assert archive.url_fetches("tar") == 1


@pytest.mark.reliability(
    area="download",
    fault="a body longer than announced",
    outcome="succeeded, byte-exact",
)
def test_overlong_body_reads_exactly_the_range(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, watch: PartWatch
) -> None:
    size = 12 * MiB + 3
    archive = archive_factory(size)
    watch.on_start(1, lambda: archive.emu.overlong_next(2, r"\.tar$", extra=4096))

    copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, observers=[watch])

    assert read_object(s3_client, s3_bucket) == archive.content()
    assert ranges(archive.data_requests()) == planned(size)


@pytest.mark.reliability(
    area="download",
    fault="Range ignored by the server (200 with the whole file)",
    outcome="succeeded, byte-exact",
)
def test_range_ignored_skips_to_the_offset(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, watch: PartWatch
) -> None:
    size = 12 * MiB + 3
    archive = archive_factory(size)
    archive.emu.ignore_range_next(1, r"\.tar$")  # the probe gets a 200 with the whole file
    watch.on_start(2, lambda: archive.emu.ignore_range_next(1, r"\.tar$"))  # so does part 2
    settings = replace(FAST, max_concurrency=1)

    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=settings, observers=[watch])

    assert read_object(s3_client, s3_bucket) == archive.content()
    assert result.size == size
    statuses = [(r.headers["Range"], r.status) for r in archive.file_requests()]
    assert statuses == [("bytes=0-0", 200)] + [
        (f"bytes={a}-{b}", 200 if a == 5 * MiB else 206) for a, b in planned(size)
    ] + [("bytes=0-0", 206)]


@pytest.mark.reliability(
    area="download",
    fault="signed URLs expired (403): one fresh URL per file, whatever the parts",
    outcome="retried and succeeded",
)
def test_expired_urls_are_fetched_again_once_per_file(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, watch: PartWatch
) -> None:
    size = 16 * MiB
    archive = archive_factory(size, split_threshold=10 * MiB, split_size=8 * MiB)
    watch.on_start(1, archive.emu.expire_urls)

    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, observers=[watch])

    assert read_object(s3_client, s3_bucket) == archive.content()
    assert result.sha256 == archive.sha256()
    assert any(r.status == 403 for r in archive.data_requests())
    # One URL for the probe, one fresh URL after the expiry, however many parts hit the 403.
    assert [archive.url_fetches(fid) for fid in archive.file_ids] == [2, 2]
    good = [r for r in archive.data_requests() if r.status == 206]
    assert sum(b - a + 1 for a, b in ranges(good)) == size


@pytest.mark.parametrize(
    "status",
    [
        *(
            pytest.param(
                status,
                marks=pytest.mark.reliability(
                    area="download", fault="5xx from the file server", outcome="retried and succeeded"
                ),
            )
            for status in (503, 500)
        ),
        pytest.param(
            429,
            marks=pytest.mark.reliability(
                area="download", fault="429 from the file server", outcome="retried and succeeded"
            ),
        ),
    ],
)
def test_server_errors_are_retried(
    status: int,
    archive_factory: Callable[..., Archive],
    s3_client: Any,
    s3_bucket: str,
    watch: PartWatch,
) -> None:
    size = 12 * MiB + 3
    archive = archive_factory(size)
    archive.emu.fail_next(1, r"\.tar$", status=status)  # the probe
    watch.on_start(1, lambda: archive.emu.fail_next(2, r"\.tar$", status=status))

    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, observers=[watch])

    assert read_object(s3_client, s3_bucket) == archive.content()
    assert result.sha256 == archive.sha256()
    assert [r.status for r in archive.file_requests()].count(status) == 3
    assert ranges([r for r in archive.data_requests() if r.status == 206]) == planned(size)


@pytest.mark.reliability(
    area="download",
    fault="a stalled answer (read timeout)",
    outcome="retried and succeeded",
)
def test_stalled_answer_times_out_and_is_retried(
    archive_factory: Callable[..., Archive],
    s3_client: Any,
    s3_bucket: str,
    watch: PartWatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_c66.transfers.copy")
    size = 12 * MiB
    archive = archive_factory(size)
    watch.on_start(1, lambda: archive.emu.slow_next(1, r"\.tar$", delay=1.0))

    result = copy_to_s3(
        archive.sources(),
        s3_client,
        s3_bucket,
        KEY,
        settings=replace(FAST, read_timeout=0.3),
        observers=[watch],
    )

    assert result.sha256 == archive.sha256()
    assert read_object(s3_client, s3_bucket) == archive.content()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert re.search(r"app_db\.tar \(file tar\), bytes \d+-\d+: ReadTimeout: ", warning), warning
    # The stalled GET is recorded only once it is answered (after the copy); the retry asked again.
    assert sorted(set(ranges(archive.data_requests()))) == planned(size)


@pytest.mark.reliability(
    area="download",
    fault="the file server failing beyond the retries",
    outcome="aborted, nothing left",
)
@pytest.mark.reliability(
    area="secrets",
    fault="the copy engine: signatures in retry logs, urllib3 DEBUG lines and the final error",
    outcome="no secret in any output",
)
def test_retries_exhausted_names_the_file_and_leaks_no_signature(
    archive_factory: Callable[..., Archive],
    s3_client: Any,
    s3_bucket: str,
    watch: PartWatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="botocore")  # its DEBUG dumps whole request bodies
    caplog.set_level(logging.DEBUG)  # after: set_level also sets the capturing handler's level
    archive = archive_factory(12 * MiB)
    watch.on_start(1, lambda: archive.emu.fail_next(100, r"\.tar$", status=503))
    settings = replace(FAST, retries=2)

    with pytest.raises(CopyError) as caught:
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=settings, observers=[watch])

    message = str(caught.value)
    assert "app_db.tar (file tar), bytes " in message
    assert "giving up after 3 failed attempts" in message and "HTTP 503" in message
    assert_nothing_left(s3_client, s3_bucket, KEY)
    assert "urllib3" in caplog.text and "/c66-backups/" in caplog.text  # the DEBUG lines were there
    assert_no_secret(archive.signatures(), message, caught.value, caplog.text)


@pytest.mark.reliability(
    area="secrets",
    fault="the copy engine: connection errors whose text carries the signed URL",
    outcome="no secret in any output",
)
def test_connection_errors_leak_no_signature(
    s3_client: Any, s3_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    """requests puts the whole URL, query string included, in a ConnectionError's text."""
    caplog.set_level(logging.DEBUG)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    secret = "S3cr3tS1gnatur3Value"
    url = f"http://127.0.0.1:{port}/c66-backups/x/db.tar?AWSAccessKeyId=AKIAX&Expires=9&Signature={secret}"
    settings = replace(FAST, retries=1)

    with pytest.raises(CopyError) as caught:
        copy_to_s3([Source("tar", "db.tar", lambda: url)], s3_client, s3_bucket, KEY, settings=settings)

    assert "db.tar (file tar), size probe: giving up after 2 failed attempts" in str(caught.value)
    assert "ConnectionError" in str(caught.value)
    assert_no_secret({secret, "AKIAX"}, str(caught.value), caught.value, caplog.text)
    assert_nothing_left(s3_client, s3_bucket, KEY)


def assert_no_secret(secrets: set[str], message: str, error: BaseException, logs: str) -> None:
    shown = "".join(traceback.format_exception(error))
    for text in (message, shown, logs):
        for secret in secrets:
            assert secret not in text
        assert not re.search(r"Signature=(?!\[redacted\])", text)


@pytest.mark.reliability(area="download", fault="no signed URL can be fetched", outcome="clear error")
def test_url_provider_failure_names_the_file(s3_client: Any, s3_bucket: str) -> None:
    def broken() -> str:
        raise RuntimeError("the Cloud 66 API is down")

    with pytest.raises(CopyError, match=r"^db\.tar \(file tar\): could not get a signed URL: the Cloud 66"):
        copy_to_s3([Source("tar", "db.tar", broken)], s3_client, s3_bucket, KEY, settings=FAST)
    assert_nothing_left(s3_client, s3_bucket, KEY)


@pytest.mark.reliability(
    area="download",
    fault="the file changes size during the copy",
    outcome="aborted, nothing left",
)
def test_file_size_changed_during_copy(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, watch: PartWatch
) -> None:
    """The probe saw one size; after a 403 the fresh URL serves a file of another size."""
    archive = archive_factory(12 * MiB)
    other = archive.emu.add_backup(STACK, size=13 * MiB)
    first = archive.provider("tar")
    second = archive.provider("tar", backup_id=other)
    providers = iter([first, second, second, second])
    watch.on_start(1, archive.emu.expire_urls)
    source = Source("tar", "app_db.tar", lambda: next(providers)())

    with pytest.raises(CopyError, match=r"size changed from 12582912 to 13631488 bytes"):
        copy_to_s3([source], s3_client, s3_bucket, KEY, settings=FAST, observers=[watch])
    assert_nothing_left(s3_client, s3_bucket, KEY)


# -- faults on the S3 side, and cancellation -------------------------------------------------------


@pytest.mark.reliability(area="upload", fault="S3 error on UploadPart", outcome="aborted, nothing left")
def test_failed_upload_part_aborts(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    archive = archive_factory(16 * MiB)
    calls = S3Calls(s3_client)
    fail_operation(s3_client, "UploadPart", on_call=2)

    with pytest.raises(CopyError, match=r"S3 UploadPart \(part \d, archive bytes \d+-\d+\) failed.*injected"):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)

    assert "AbortMultipartUpload" in calls.operations
    assert "CompleteMultipartUpload" not in calls.operations
    assert_nothing_left(s3_client, s3_bucket, KEY)


@pytest.mark.reliability(
    area="upload",
    fault="S3 error on CompleteMultipartUpload",
    outcome="aborted, nothing left",
)
def test_failed_complete_aborts(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    archive = archive_factory(12 * MiB)
    calls = S3Calls(s3_client)
    fail_operation(s3_client, "CompleteMultipartUpload", on_call=1)

    with pytest.raises(CopyError, match="S3 CompleteMultipartUpload failed"):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)

    assert calls.operations[-1] == "AbortMultipartUpload"
    assert_nothing_left(s3_client, s3_bucket, KEY)


@pytest.mark.reliability(
    area="worker",
    fault="cancel (on_kill) mid-copy, in the copy engine",
    outcome="aborted, nothing left",
)
def test_cancel_mid_copy_aborts(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, watch: PartWatch
) -> None:
    archive = archive_factory(16 * MiB, bandwidth_per_connection=4 * MiB)
    calls = S3Calls(s3_client)
    cancel = threading.Event()
    cancelled_at: list[float] = []

    def cancel_soon() -> None:
        def fire() -> None:
            cancelled_at.append(time.monotonic())
            cancel.set()

        threading.Timer(0.4, fire).start()

    watch.on_start(1, cancel_soon)

    with pytest.raises(CopyCancelled, match=r"cancelled after .* nothing was left in S3"):
        copy_to_s3(
            archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, cancel=cancel, observers=[watch]
        )

    assert time.monotonic() - cancelled_at[0] < 2.0
    assert calls.operations[0] == "CreateMultipartUpload"
    assert calls.operations[-1] == "AbortMultipartUpload"
    assert_nothing_left(s3_client, s3_bucket, KEY)
    assert watch.held == 0


@pytest.mark.parametrize("at", ["part_started", "part_uploaded", "copy_started"])
def test_an_observer_that_raises_fails_the_copy_and_leaves_nothing(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, at: str
) -> None:
    archive = archive_factory(16 * MiB)

    class Broken(engine.CopyObserver):
        def __getattribute__(self, name: str) -> Any:
            if name == at:

                def fail(*args: Any) -> None:
                    raise RuntimeError(f"metrics backend down in {at}")

                return fail
            return super().__getattribute__(name)

    with pytest.raises(RuntimeError, match=f"metrics backend down in {at}"):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, observers=[Broken()])
    assert_nothing_left(s3_client, s3_bucket, KEY)


def test_cancel_before_start(archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str) -> None:
    archive = archive_factory(1024)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CopyCancelled):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, cancel=cancel)
    assert archive.file_requests() == []
    assert_nothing_left(s3_client, s3_bucket, KEY)


def test_refuses_unknown_extra_args(s3_client: Any, s3_bucket: str) -> None:
    with pytest.raises(ValueError, match="ChecksumAlgorithm"):
        copy_to_s3(
            [Source("tar", "x", str)], s3_client, s3_bucket, KEY, extra_args={"ChecksumAlgorithm": "SHA1"}
        )


# -- stale uploads ---------------------------------------------------------------------------------


def test_abort_open_uploads_under_a_prefix(s3_client: Any, s3_bucket: str) -> None:
    for key in ("backups/a/1.tar", "backups/a/1.tar", "backups/b/2.tar", "other/3.tar"):
        s3_client.create_multipart_upload(Bucket=s3_bucket, Key=key)

    # moto reports every upload as initiated in 2010: "before 2001" keeps them all.
    before_2001 = datetime(2001, 1, 1, tzinfo=UTC)
    assert abort_open_uploads(s3_client, s3_bucket, prefix="backups/", initiated_before=before_2001) == 0
    assert abort_open_uploads(s3_client, s3_bucket, prefix="backups/") == 3

    left = s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert [u["Key"] for u in left] == ["other/3.tar"]


def test_abort_open_uploads_on_exact_keys_only(s3_client: Any, s3_bucket: str) -> None:
    for key in ("lake/1/app.tar", "lake/1/app.tar", "lake/1/app.tar.bak", "lake/1/other.tar"):
        s3_client.create_multipart_upload(Bucket=s3_bucket, Key=key)

    assert abort_open_uploads(s3_client, s3_bucket, keys=["lake/1/app.tar", "lake/1/gone.tar"]) == 2

    left = s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])
    assert sorted(u["Key"] for u in left) == ["lake/1/app.tar.bak", "lake/1/other.tar"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix": ""}, "empty prefix would abort every upload"),
        ({}, "either keys or a prefix"),
        ({"keys": ["a"], "prefix": "a"}, "either keys or a prefix"),
    ],
)
def test_abort_open_uploads_refuses_an_unbounded_or_ambiguous_scope(
    s3_client: Any, s3_bucket: str, kwargs: dict[str, Any], message: str
) -> None:
    s3_client.create_multipart_upload(Bucket=s3_bucket, Key="kept")
    with pytest.raises(ValueError, match=message):
        abort_open_uploads(s3_client, s3_bucket, **kwargs)
    assert len(s3_client.list_multipart_uploads(Bucket=s3_bucket)["Uploads"]) == 1


def test_part_buffers_are_reused_and_bounded() -> None:
    from airflow_provider_c66.transfers.copy.pipeline import _PartBuffers

    buffers = _PartBuffers(2)
    first, second = buffers.take(8), buffers.take(8)
    assert buffers.peak == 2
    with pytest.raises(AssertionError, match="3 part buffers in use, limit 2"):
        buffers.take(8)
    buffers.in_use -= 1  # undo the refused take
    buffers.give_back(first)
    assert buffers.take(8) is first, "a buffer of the same size is reused"
    buffers.give_back(second)
    last = buffers.take(3)
    assert last is not second and len(last) == 3, "a different size gets its own buffer"


def test_an_upload_already_aborted_elsewhere_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from botocore.exceptions import ClientError

    from airflow_provider_c66.transfers.copy.pipeline import _ArchiveCopy

    class Client:
        def abort_multipart_upload(self, **kwargs: Any) -> None:
            raise ClientError({"Error": {"Code": "NoSuchUpload", "Message": "gone"}}, "AbortMultipartUpload")

    copy = _ArchiveCopy.__new__(_ArchiveCopy)
    copy.client, copy.bucket, copy.key, copy.target = Client(), "b", "k", "s3://b/k"
    copy.log = logging.getLogger("test-abort")
    with caplog.at_level(logging.INFO, logger="test-abort"):
        copy._abort("upload-1")
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "already gone" in caplog.records[0].getMessage()


# -- answers lost, sessions expired, sources still being written -----------------------------------


@pytest.mark.reliability(
    area="upload",
    fault="the answer to CompleteMultipartUpload lost; botocore's retry gets NoSuchUpload",
    outcome="accepted after checking the object",
)
def test_lost_complete_answer_accepts_the_completed_object(
    archive_factory: Callable[..., Archive], s3_server: str, s3_client: Any, s3_bucket: str
) -> None:
    import boto3
    from botocore.config import Config

    from tests.s3_proxy import NO_SUCH_UPLOAD, s3_proxy

    size = 12 * MiB + 3
    archive = archive_factory(size)
    with s3_proxy(s3_server) as proxy:
        completed: set[str] = set()

        def lose_first_complete(request: Any) -> Any:
            if request.operation != "CompleteMultipartUpload":
                return None
            upload = request.query["uploadId"]
            if upload in completed:  # AWS: a completed upload is gone (moto would complete it again)
                return NO_SUCH_UPLOAD
            completed.add(upload)
            return "lose_answer"

        proxy.rule = lose_first_complete
        client = boto3.client(
            "s3",
            endpoint_url=proxy.endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "max_attempts": 3}),
        )
        metadata = {"c66-stack-id": STACK, "c66-backup-id": str(archive.backup_id)}
        result = copy_to_s3(
            archive.sources(), client, s3_bucket, KEY, settings=FAST, extra_args={"Metadata": metadata}
        )
        completes = [outcome for op, outcome in proxy.operations() if op == "CompleteMultipartUpload"]

    # S3 completed the upload at the first Complete; botocore sent it again and heard NoSuchUpload.
    assert completes == ["lose_answer", "answered 404"]
    assert read_object(s3_client, s3_bucket) == archive.content()
    assert result.sha256 == archive.sha256() and result.size == size
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_lost_complete_answer_with_another_object_at_the_key_is_not_accepted(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    """NoSuchUpload with an object that is not this copy's (another size): the copy fails."""
    archive = archive_factory(12 * MiB + 3)
    s3_client.put_object(Bucket=s3_bucket, Key=KEY, Body=b"someone else's")

    def no_such_upload(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "NoSuchUpload", "Message": "gone"}}, "CompleteMultipartUpload")

    s3_client.meta.events.register("before-call.s3.CompleteMultipartUpload", no_such_upload)
    with pytest.raises(CopyError, match="CompleteMultipartUpload failed"):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)
    assert read_object(s3_client, s3_bucket) == b"someone else's"


def _lose_every_complete(client: Any) -> None:
    """Every CompleteMultipartUpload answers NoSuchUpload, as botocore's resend after a lost answer does;
    the object at the key is then whatever was there before."""

    def no_such_upload(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "NoSuchUpload", "Message": "gone"}}, "CompleteMultipartUpload")

    client.meta.events.register("before-call.s3.CompleteMultipartUpload", no_such_upload)


@pytest.mark.reliability(
    area="upload",
    fault="lost Complete answer; the object at the key has this copy's size and metadata, other bytes",
    outcome="clear error",
)
def test_lost_complete_answer_with_other_bytes_of_the_same_size_is_not_accepted(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    size = 12 * MiB + 3
    archive = archive_factory(size)
    other = Archive(archive.emu, archive.emu.add_backup(STACK, size=size))  # another seed: other bytes
    assert len(other.content()) == size and other.content() != archive.content()
    metadata = {"c66-stack-id": STACK, "c66-backup-id": "7"}
    # Another copy put its bytes at the key, with the same part layout and the same metadata.
    copy_to_s3(other.sources(), s3_client, s3_bucket, KEY, settings=FAST, extra_args={"Metadata": metadata})
    before = s3_client.head_object(Bucket=s3_bucket, Key=KEY)
    assert (before["ContentLength"], before["Metadata"]) == (size, metadata)

    _lose_every_complete(s3_client)
    with pytest.raises(CopyError, match="CompleteMultipartUpload failed"):
        copy_to_s3(
            archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, extra_args={"Metadata": metadata}
        )
    assert read_object(s3_client, s3_bucket) == other.content()
    assert s3_client.head_object(Bucket=s3_bucket, Key=KEY)["ETag"] == before["ETag"]
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []

    # The same copy of the bytes that are there is accepted: only the bytes told the two apart.
    result = copy_to_s3(
        other.sources(), s3_client, s3_bucket, KEY, settings=FAST, extra_args={"Metadata": metadata}
    )
    assert (result.size, result.sha256) == (size, other.sha256())


@pytest.mark.reliability(
    area="upload",
    fault="lost Complete answer; the object at the key has this copy's bytes but not its metadata",
    outcome="clear error",
)
def test_lost_complete_answer_with_the_same_bytes_without_this_packages_metadata_is_not_accepted(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    size = 12 * MiB + 3
    archive = archive_factory(size)
    metadata = {"c66-stack-id": STACK, "c66-backup-id": str(archive.backup_id)}
    # The same bytes, copied the same way (same parts, so the same checksum and ETag), by something
    # that did not set this package's metadata.
    copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)
    before = s3_client.head_object(Bucket=s3_bucket, Key=KEY)
    assert (before["ContentLength"], before["Metadata"]) == (size, {})

    _lose_every_complete(s3_client)
    with pytest.raises(CopyError, match="CompleteMultipartUpload failed"):
        copy_to_s3(
            archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, extra_args={"Metadata": metadata}
        )
    after = s3_client.head_object(Bucket=s3_bucket, Key=KEY)
    assert (after["ETag"], after["Metadata"]) == (before["ETag"], {})
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []

    # Without the metadata the same copy is accepted: only the metadata told the two apart.
    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)
    assert (result.size, result.sha256) == (size, archive.sha256())


@given(st.binary(max_size=3000), st.binary(max_size=3000), st.binary(max_size=70))
@settings(max_examples=200, deadline=None)
def test_the_archive_crc_from_part_crcs_is_the_crc_of_the_bytes(a: bytes, b: bytes, c: bytes) -> None:
    """The whole archive's CRC32 is combined from the parts' (no second pass), and equals zlib's."""
    assert engine.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    combined, read = ArchiveDigest(), ArchiveDigest()
    for chunk in (a, b, c):
        combined.update(chunk, crc32_b64(chunk))
        read.update(chunk)
    assert (combined.crc32, combined.sha256, combined.size) == (read.crc32, read.sha256, read.size)
    assert combined.crc32 == crc32_b64(a + b + c)


def test_composite_checksum_and_etag_are_s3s() -> None:
    """The figures a lost Complete is checked against, as S3 documents them (CRC of the part CRCs;
    MD5 of the part MD5s), each with the part count."""
    parts = [b"a" * 10, b"b" * 7]
    crcs = [crc32_b64(p) for p in parts]
    joined = b"".join(zlib.crc32(p).to_bytes(4, "big") for p in parts)
    assert checksums._composite_crc32(crcs) == f"{crc32_b64(joined)}-2"
    md5s = [hashlib.md5(p).hexdigest() for p in parts]
    expected = hashlib.md5(b"".join(bytes.fromhex(m) for m in md5s)).hexdigest() + "-2"
    assert checksums._multipart_etag([f'"{m}"' for m in md5s]) == expected
    assert checksums._multipart_etag(["not-an-md5"]) is None


@pytest.mark.reliability(
    area="download",
    fault="signed URL made with temporary credentials whose session ended (400 ExpiredToken)",
    outcome="retried and succeeded",
)
@pytest.mark.parametrize("code", ["ExpiredToken", "TokenRefreshRequired"])
def test_expired_session_token_fetches_a_fresh_url(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, watch: PartWatch, code: str
) -> None:
    archive = archive_factory(12 * MiB + 3)
    watch.on_start(2, lambda: archive.emu.expire_urls(code))

    result = copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, observers=[watch])

    assert read_object(s3_client, s3_bucket) == archive.content() and result.size == 12 * MiB + 3
    statuses = [r.status for r in archive.file_requests()]
    assert 400 in statuses and archive.url_fetches("tar") == 2


def test_another_400_is_not_mistaken_for_an_expiry(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    archive = archive_factory(3 * MiB)
    body = b"<Error><Code>InvalidArgument</Code><Message>bad</Message></Error>"
    archive.emu.fail_next(1, r"\.tar$", 400, body=body, headers={"Content-Type": "application/xml"})
    with pytest.raises(CopyError, match="HTTP 400 InvalidArgument"):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)
    assert archive.url_fetches("tar") == 1
    assert_nothing_left(s3_client, s3_bucket, KEY)


@pytest.mark.reliability(
    area="source",
    fault="a file grows after its last byte was read (the backup is still being written)",
    outcome="retryable error, nothing completed",
)
@pytest.mark.parametrize("size", [3 * MiB, 12 * MiB + 3], ids=["single-put", "multipart"])
def test_a_file_that_grows_after_it_was_read_completes_nothing(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, size: int
) -> None:
    archive = archive_factory(size)
    reads = 1 + len(planned(size))  # the probe, then one GET per part; the next probe sees the growth
    archive.emu.grow_backup(STACK, archive.backup_id, 1000, after_downloads=reads)
    with pytest.raises(engine.SourceChanged, match=f"was {size} bytes .* is {size + 1000} bytes now"):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)
    assert_nothing_left(s3_client, s3_bucket, KEY)


def test_a_file_that_grows_mid_copy_is_still_being_written(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    archive = archive_factory(12 * MiB + 3)
    archive.emu.grow_backup(STACK, archive.backup_id, 2 * MiB, after_downloads=2)
    with pytest.raises(engine.SourceChanged, match=r"size changed .* still being written"):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST)
    assert_nothing_left(s3_client, s3_bucket, KEY)


def test_expected_size_disagreeing_fails_before_any_upload(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    archive = archive_factory(3 * MiB)
    calls = S3Calls(s3_client)
    with pytest.raises(engine.SourceChanged, match=f"hold {3 * MiB} bytes but .* says {3 * MiB + 1}"):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, expected_size=3 * MiB + 1)
    assert calls.operations == [] and archive.data_requests() == []


def test_before_complete_sees_the_sizes_and_can_refuse(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    archive = archive_factory(12 * MiB + 3)
    seen: list[tuple[int, ...]] = []

    def refuse(sizes: Any) -> None:
        seen.append(tuple(sizes))
        raise engine.SourceChanged("a new file appeared")

    with pytest.raises(engine.SourceChanged, match="a new file appeared"):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=FAST, before_complete=refuse)
    assert seen == [(12 * MiB + 3,)]
    assert_nothing_left(s3_client, s3_bucket, KEY)
