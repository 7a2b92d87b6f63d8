"""A real S3-protocol server on 127.0.0.1 for the whole test session.

``C66_S3_SERVER`` chooses which (``make test-s3-compat`` runs the transfer tests under each):

- ``moto`` (default): moto in server mode, in this process.
- ``nanio``: ``nanio serve`` (the ``bench`` extra), a disk-backed server, started here as a subprocess
  on a free port with a scratch data directory and stopped at the end.
- ``radosgw`` (or any other name): a server already running at ``C66_S3_ENDPOINT``, e.g. Ceph's S3
  gateway started by ``scripts/radosgw.sh``.

Every server is signed to with ``C66_S3_ACCESS_KEY`` / ``C66_S3_SECRET_KEY`` (default ``testing`` /
``testing``, which some tests also write out themselves): nanio and radosgw check SigV4 signatures,
so the server must have been given the same keys (``scripts/radosgw.sh`` and the nanio start here do).

Tests that need what only some servers do say so with markers, skipped elsewhere with their reason:
``@pytest.mark.moto_only(reason)`` and ``@pytest.mark.s3_unsupported(*servers, reason=...)``.
``SERVER_LIMITS`` below puts the same markers on tests by node ID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

SERVER = os.environ.get("C66_S3_SERVER", "moto").strip().lower() or "moto"
ACCESS_KEY = os.environ.get("C66_S3_ACCESS_KEY", "testing")
SECRET_KEY = os.environ.get("C66_S3_SECRET_KEY", "testing")

# What a server does differently from moto that a test depends on, by test node ID (a test's own
# markers say the same thing; this table is for tests whose files are better left alone).
# {node ID (without parameters): {server: reason}}; "*" stands for every server but moto.
_NANIO_NO_VERSIONING = "nanio has no bucket versioning (PutBucketVersioning is taken for CreateBucket: 409 BucketAlreadyOwnedByYou)"
_NANIO_NO_LOCK = "nanio has no Object Lock (a bucket created with it enabled has no lock configuration)"
_NANIO_NO_TAGGING = "nanio accepts x-amz-tagging but stores no tags (GetObjectTagging answers 500)"
_NANIO_NO_CONDITIONS = (
    "nanio ignores If-None-Match: * (PutObject and CompleteMultipartUpload overwrite the key)"
)
_RADOSGW_MULTIPART_TAGS = (
    "radosgw 16.2 drops x-amz-tagging sent with CreateMultipartUpload (GetObjectTagging answers 200, empty "
    "body); tags sent with PutObject or PutObjectTagging are kept"
)
_NO_STORED_CHECKSUM = (
    "stores no x-amz-checksum-* of an object (HeadObject with ChecksumMode=ENABLED answers none), so there is "
    "no stored checksum to report"
)
_RADOSGW_NO_KMS = "radosgw here has no KMS backend: SSE-KMS writes answer 400 InvalidRequest"
SERVER_LIMITS: dict[str, dict[str, str]] = {
    "tests/transfers/copy/test_copy_engine.py::test_one_file_multipart": {
        "nanio": "nanio ignores x-amz-storage-class (HEAD answers STANDARD) and stores no tags (GetObjectTagging answers 500)",
        "radosgw": _RADOSGW_MULTIPART_TAGS,
    },
    "tests/transfers/test_catalog.py::test_an_archive_is_catalogued_with_what_s3_holds": {
        "nanio": "nanio ignores x-amz-storage-class (HEAD answers STANDARD), and the record says what S3 reports",
    },
    "tests/test_s3_strict.py::test_archive_and_rerun_into_a_versioned_bucket_with_the_documented_policy": {
        "nanio": _NANIO_NO_VERSIONING,
    },
    "tests/test_s3_strict.py::test_tags_need_put_object_tagging": {
        "nanio": _NANIO_NO_TAGGING,
        "radosgw": _RADOSGW_MULTIPART_TAGS,
    },
    "tests/test_s3_strict.py::test_sse_kms_multipart_needs_the_documented_kms_actions": {
        "nanio": _NANIO_NO_VERSIONING,
        "radosgw": _RADOSGW_NO_KMS,
    },
    "tests/test_s3_strict.py::test_restore_with_the_documented_policy_reads_an_sse_kms_archive": {
        "radosgw": _RADOSGW_NO_KMS,
    },
    "tests/test_s3_strict.py::test_archive_and_manifest_are_written_under_object_lock": {
        "nanio": _NANIO_NO_LOCK
    },
    "tests/test_s3_strict.py::test_object_lock_on_a_bucket_without_it_is_refused_before_any_upload": {
        "nanio": _NANIO_NO_VERSIONING,
    },
    "tests/test_s3_strict.py::test_a_store_that_ignores_object_lock_leaves_no_unprotected_object": {
        "nanio": _NANIO_NO_LOCK,
    },
    "tests/test_s3_strict.py::test_a_policy_that_cannot_read_the_lock_fails_naming_the_permission": {
        "nanio": _NANIO_NO_LOCK,
    },
    "tests/test_s3_strict.py::test_a_lock_call_the_store_refuses_leaves_no_unprotected_object": {
        "nanio": _NANIO_NO_LOCK,
    },
    "tests/test_s3_strict.py::test_another_runs_object_is_never_overwritten": {
        "nanio": _NANIO_NO_CONDITIONS,
        "radosgw": "radosgw 16.2 ignores If-None-Match: * on CompleteMultipartUpload (it honours it on PutObject)",
    },
    "tests/transfers/test_verify_archive.py::test_verify_fails_loudly_on_changed_bytes_of_the_same_size": {
        "nanio": f"nanio {_NO_STORED_CHECKSUM}",
        "radosgw": f"radosgw 16.2 {_NO_STORED_CHECKSUM}",
    },
    "tests/test_s3_strict.py::test_another_runs_manifest_of_the_same_archive_is_adopted": {
        "nanio": _NANIO_NO_CONDITIONS,
    },
}


def pytest_report_header(config: pytest.Config) -> str:
    return f"S3 server: {SERVER}" + (
        f" at {os.environ.get('C66_S3_ENDPOINT')}" if SERVER not in ("moto", "nanio") else ""
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for server, reason in SERVER_LIMITS.get(item.nodeid.split("[", 1)[0], {}).items():
            if server == "*":
                item.add_marker(pytest.mark.moto_only(reason))
            else:
                item.add_marker(pytest.mark.s3_unsupported(server, reason=reason))
        if SERVER == "moto":
            continue
        for mark in item.iter_markers("moto_only"):
            reason = mark.kwargs.get("reason") or (mark.args[0] if mark.args else "relies on moto")
            item.add_marker(pytest.mark.skip(reason=f"moto only: {reason}"))
            break
        else:
            for mark in item.iter_markers("s3_unsupported"):
                if SERVER in mark.args:
                    item.add_marker(pytest.mark.skip(reason=f"{SERVER}: {mark.kwargs.get('reason', '')}"))
                    break


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(endpoint: str) -> bool:
    """Whether an HTTP server answers at ``endpoint`` (any status: an anonymous request is refused)."""
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _moto() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextlib.contextmanager
def _nanio(workdir: Path) -> Iterator[str]:
    nanio = shutil.which("nanio", path=str(Path(sys.executable).parent)) or shutil.which("nanio")
    if nanio is None:
        pytest.fail(
            "C66_S3_SERVER=nanio but nanio is not installed (the bench extra: pip install -e '.[bench]')"
        )
    port, data, log_path = _free_port(), workdir / "data", workdir / "nanio.log"
    data.mkdir()
    env = {**os.environ, "NANIO_ACCESS_KEY": ACCESS_KEY, "NANIO_SECRET_KEY": SECRET_KEY}
    command = [nanio, "serve", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--no-access-log", "--log-level", "warning"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not _answers(endpoint):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"nanio did not start at {endpoint}: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of the session's S3-protocol server (``C66_S3_SERVER``)."""
    if SERVER == "moto":
        with _moto() as endpoint:
            yield endpoint
    elif SERVER == "nanio":
        with _nanio(tmp_path_factory.mktemp("nanio")) as endpoint:
            yield endpoint
    else:
        endpoint = os.environ.get("C66_S3_ENDPOINT", "").rstrip("/")
        if not endpoint:
            pytest.fail(
                f"C66_S3_SERVER={SERVER} needs C66_S3_ENDPOINT (scripts/radosgw.sh start DIR prints it)"
            )
        if not _answers(endpoint):
            pytest.fail(f"no S3 server answers at C66_S3_ENDPOINT={endpoint}")
        yield endpoint


@pytest.fixture
def s3_client(s3_server: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        # moto before 5.2 answers GetObject of a multipart object with a wrong full-object CRC32
        # (real S3 sends a composite "-N" checksum that botocore does not check); reading back in
        # tests compares the bytes themselves instead.
        config=Config(response_checksum_validation="when_required"),
    )


@pytest.fixture
def s3_bucket(s3_client: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def aws_connection(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point Airflow's ``aws_default`` connection (and so ``S3Hook``) at the local S3 server."""
    import json

    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps(
            {
                "conn_type": "aws",
                "login": ACCESS_KEY,
                "password": SECRET_KEY,
                "extra": {"endpoint_url": s3_server, "region_name": "us-east-1"},
            }
        ),
    )
    return "aws_default"


def catalogue_key(emu: Any, bid: int, stack: str = "stack-1") -> str:
    """The catalogue record the archive operator writes for a backup (default catalog_prefix)."""
    from airflow_provider_c66.models import Backup
    from airflow_provider_c66.transfers import archive

    raw = next(r for r in emu.backups(stack) if r["id"] == bid)
    return archive.catalog_key(archive.DEFAULT_CATALOG_PREFIX, stack, Backup.from_api(raw))
