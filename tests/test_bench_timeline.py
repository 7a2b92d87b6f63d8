"""The benchmark's call timeline (benchmarks/timeline.py): the parts folded, the idle time right, and
no query string (a signed URL's signature) in what it prints."""

from __future__ import annotations

from tests.helpers import load_benchmark

timeline = load_benchmark("timeline")


def test_a_signed_url_is_named_by_its_path_alone() -> None:
    url = "http://127.0.0.1:9/s/mysql/app_db.tar-ab?Expires=1&Signature=c2VjcmV0%25&AWSAccessKeyId=K"
    labels = [
        timeline.http_label("GET", url, "bytes=0-0"),
        timeline.http_label("GET", url, "bytes=0-8388607"),
        timeline.http_label("GET", "http://127.0.0.1:9/api/3/stacks/s/backups/1.json?page=2", None),
    ]
    assert labels == [
        "GET file size probe app_db.tar-ab",
        "GET file range",
        "GET API /stacks/s/backups/1.json",
    ]
    assert not any("Signature" in label or "page" in label for label in labels)


def test_phases_fold_the_parts_and_count_the_time_without_a_call() -> None:
    run = timeline.Timeline()
    run.calls = [
        (0.0, 0.1, "GET API /stacks/s/backups/1.json"),
        (0.2, 0.3, "CreateMultipartUpload lake/1/app_db.tar"),
        (0.3, 0.8, "GET file range"),
        (0.4, 1.0, "GET file range"),
        (0.8, 1.4, timeline.s3_label("UploadPart", {"Key": "lake/1/app_db.tar", "PartNumber": 1})),
        (0.9, 1.5, timeline.s3_label("UploadPart", {"Key": "lake/1/app_db.tar", "PartNumber": 2})),
        (1.5, 1.6, timeline.s3_label("CompleteMultipartUpload", {"Key": "lake/1/app_db.tar"})),
    ]
    assert run.phases(2.0) == [
        "  0.000   0.100  GET API /stacks/s/backups/1.json",
        "  0.200   0.300  CreateMultipartUpload lake/1/app_db.tar",
        "  0.300   1.000  2 x GET file range, first to last",
        "  0.800   1.500  2 x UploadPart, first to last",
        "  1.500   1.600  CompleteMultipartUpload lake/1/app_db.tar",
        "  in all 2.000 s; no call in flight for 0.500 s of it",
    ]
