"""Patience: an outage of S3 or of the signed-URL host that outlasts botocore's and the HTTP client's
own retries is waited out within ``retries`` and ``retry_budget``, and a cancel ends the wait at once.

Emulator and moto over HTTP; S3 outages come from the tests' S3 proxy answering 503 as S3 does
(``SlowDown``), and botocore is set to one attempt so that the engine's own patience is what is tested.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import boto3
import pytest
from botocore.config import Config

from airflow_provider_c66.transfers.copy import CopyCancelled, CopyError, copy_to_s3
from tests.copy_fixtures import FAST, KEY, Archive, MiB, read_object
from tests.helpers import assert_nothing_left
from tests.s3_proxy import Answer, ProxiedRequest, S3Proxy, s3_proxy

SLOW_DOWN = Answer(503, "SlowDown", "Please reduce your request rate.")
PATIENT = replace(FAST, retries=1000, retry_budget=30.0)


@pytest.fixture
def proxy(s3_server: str) -> Iterator[S3Proxy]:
    with s3_proxy(s3_server) as running:
        yield running


def one_attempt_client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


def outage(operations: set[str], seconds: float | None) -> Callable[[ProxiedRequest], Any]:
    """503 SlowDown for these operations from the first such request on, for ``seconds`` (None: on and on)."""
    began: list[float] = []

    def rule(request: ProxiedRequest) -> Any:
        if request.operation not in operations:
            return None
        began.append(began[0] if began else time.monotonic())
        if seconds is None or time.monotonic() - began[0] < seconds:
            return SLOW_DOWN
        return None

    return rule


@pytest.mark.reliability(
    area="upload", fault="S3 answers 503 to every part for seconds", outcome="retried and succeeded"
)
def test_an_s3_outage_past_botocores_retries_is_waited_out(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, proxy: S3Proxy
) -> None:
    archive = archive_factory(3 * 5 * MiB + 11)
    proxy.rule = outage({"UploadPart", "CompleteMultipartUpload"}, 2.0)
    result = copy_to_s3(
        archive.sources(), one_attempt_client(proxy.endpoint), s3_bucket, KEY, settings=PATIENT
    )
    assert read_object(s3_client, s3_bucket) == archive.content()
    assert result.sha256 == archive.sha256()
    refused = [op for op, outcome in proxy.operations() if outcome == "answered 503"]
    assert refused and set(refused) <= {"UploadPart", "CompleteMultipartUpload"}


@pytest.mark.reliability(
    area="upload", fault="S3 refusing parts past the retry budget", outcome="aborted, nothing left"
)
def test_an_s3_outage_past_the_budget_fails_and_aborts(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, proxy: S3Proxy
) -> None:
    archive = archive_factory(2 * 5 * MiB)
    proxy.rule = outage({"UploadPart"}, None)
    started = time.monotonic()
    with pytest.raises(CopyError, match=r"S3 UploadPart \(part \d.*\) failed \d+ times over \d+ s"):
        copy_to_s3(
            archive.sources(),
            one_attempt_client(proxy.endpoint),
            s3_bucket,
            KEY,
            settings=replace(PATIENT, retry_budget=1.0),
        )
    assert time.monotonic() - started < 20
    assert_nothing_left(s3_client, s3_bucket, KEY)


def test_a_cancel_ends_the_wait_for_s3_at_once(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str, proxy: S3Proxy
) -> None:
    archive = archive_factory(2 * 5 * MiB)
    proxy.rule = outage({"UploadPart"}, None)
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(CopyCancelled):
        copy_to_s3(
            archive.sources(),
            one_attempt_client(proxy.endpoint),
            s3_bucket,
            KEY,
            settings=PATIENT,
            cancel=cancel,
        )
    assert time.monotonic() - started < 10
    assert_nothing_left(s3_client, s3_bucket, KEY)


@pytest.mark.reliability(
    area="download",
    fault="the signed-URL host answering 503 many times in a row",
    outcome="retried and succeeded",
)
def test_a_source_outage_within_the_budget_is_waited_out(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    archive = archive_factory(5 * MiB + 1)
    archive.emu.fail_next(25, r"^/c66-backups/", 503)
    copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=PATIENT)
    assert read_object(s3_client, s3_bucket) == archive.content()


def test_a_source_outage_past_the_budget_gives_up_naming_the_time(
    archive_factory: Callable[..., Archive], s3_client: Any, s3_bucket: str
) -> None:
    archive = archive_factory(5 * MiB + 1)
    archive.emu.fail_next(100_000, r"^/c66-backups/", 503)
    with pytest.raises(CopyError, match=r"giving up after \d+ failed attempts over \d+ s"):
        copy_to_s3(archive.sources(), s3_client, s3_bucket, KEY, settings=replace(PATIENT, retry_budget=0.5))
    assert_nothing_left(s3_client, s3_bucket, KEY)
