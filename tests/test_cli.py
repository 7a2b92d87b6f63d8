"""The command line (``c66-backups``, ``python -m airflow_provider_c66``): run as a user runs it, in a
subprocess, against the emulator and the S3 server over HTTP; bad input in process, where the
emulator's request log proves nothing was sent."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_c66 import cli
from airflow_provider_c66.testing.emulator import FILE_PREFIX
from airflow_provider_c66.transfers.copy import CopyResult
from tests.helpers import keys, read
from tests.s3_fixtures import ACCESS_KEY, SECRET_KEY

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(UTC).replace(microsecond=0)
DAY = f"{NOW:%Y/%m/%d}"


@pytest.fixture
def emu(cloud66_emulator_factory):
    return cloud66_emulator_factory(split_threshold=6 * MiB, split_size=5 * MiB + 123)


def command_env(emu: Any, s3_server: str, **extra: str) -> dict[str, str]:
    """A user's shell: the token in CLOUD66_ACCESS_TOKEN, S3 credentials in boto3's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "CLOUD66_"))}
    env.update(
        CLOUD66_ACCESS_TOKEN=emu.token,
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        NO_PROXY="127.0.0.1",
        **extra,
    )
    return env


def explicit(emu: Any, s3_server: str) -> list[str]:
    return ["--api-url", emu.base_url, "--endpoint-url", s3_server, "--region", "us-east-1"]


def run(args: list[str], env: dict[str, str], *, script: bool = False) -> subprocess.CompletedProcess[str]:
    program = (
        [str(Path(sys.executable).parent / "c66-backups")]
        if script
        else [sys.executable, "-m", "airflow_provider_c66"]
    )
    return subprocess.run([*program, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


# --- archive ------------------------------------------------------------------------------------
def test_archive_latest_copies_the_newest_good_backup_byte_exact_with_progress(
    emu, s3_server, s3_client, s3_bucket
):
    older = emu.add_backup(
        "stack-1", size=3 * MiB, backup_date=NOW - timedelta(hours=2), database_name="shop"
    )
    good = emu.add_backup(
        "stack-1", size=13 * MiB + 5, backup_date=NOW - timedelta(hours=1), database_name="shop"
    )
    failed = emu.add_backup(
        "stack-1", size=1, backup_date=NOW, database_name="shop", status=1, result="disk full"
    )
    emu.add_backup("stack-1", db_type="redis", size=1, backup_date=NOW, database_name="cache")
    assert older and len(emu.file_ids("stack-1", good)) == 3  # split by Cloud 66, joined in S3

    args = ["archive", "stack-1", "--latest", "mysql", f"s3://{s3_bucket}/adhoc", "--part-size-mib", "5"]
    result = run([*args, "--progress-interval", "0", *explicit(emu, s3_server)], command_env(emu, s3_server))

    assert result.returncode == 0, result.stderr
    prefix = f"adhoc/stack-1/mysql/shop/{NOW - timedelta(hours=1):%Y/%m/%d}/{good}/"
    assert result.stdout == f"s3://{s3_bucket}/{prefix}shop.tar\n"
    assert read(s3_client, s3_bucket, prefix + "shop.tar") == b"".join(emu.iter_archive("stack-1", good))
    manifest = json.loads(read(s3_client, s3_bucket, prefix + "manifest.json"))
    assert manifest["backup"]["id"] == good and manifest["sha256"] == emu.archive_sha256("stack-1", good)
    assert keys(s3_client, s3_bucket) == sorted(
        [
            f"cloud66/_catalog/stack-1/mysql/shop/{NOW - timedelta(hours=1):%Y-%m-%d}-{good}.json",
            prefix + "manifest.json",
            prefix + "shop.tar",
        ]
    )
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    # Some library versions log a warning of their own on stderr (OpenLineage's client on import, on
    # the floor); every other line is the command's.
    lines = [line for line in result.stderr.splitlines() if "warning" not in line]
    assert lines[0] == f"Skipping backup {failed} ({NOW:%Y-%m-%d %H:%M} UTC): failed: disk full"
    assert lines[1] == (
        f"Archiving mysql backup {good} of stack-1 (shop, {NOW - timedelta(hours=1):%Y-%m-%d %H:%M} UTC)"
    )
    # Not a terminal: plain progress lines, the done bytes never above the total, then the summary.
    progress = [
        re.fullmatch(r"shop\.tar: (\d+)%  ([\d.]+)/13\.0 MiB  [\d.]+ MiB/s  ETA \S+", line)
        for line in lines[2:-1]
    ]
    assert progress and all(progress), [line for line, m in zip(lines[2:-1], progress, strict=True) if not m]
    percents = [int(m.group(1)) for m in progress if m]
    assert percents == sorted(percents) and percents[-1] <= 100
    assert re.fullmatch(
        rf"shop\.tar: 13\.0 MiB in [\d.]+ s \([\d.]+ MiB/s\), sha256 {emu.archive_sha256('stack-1', good)}",
        lines[-1],
    )
    assert emu.token not in result.stdout + result.stderr

    # Again: the archive is complete, so nothing is copied and the same URI is printed.
    before = s3_client.head_object(Bucket=s3_bucket, Key=prefix + "shop.tar")["LastModified"]
    emu.clear_requests()
    again = run(args + explicit(emu, s3_server), command_env(emu, s3_server))
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout
    assert s3_client.head_object(Bucket=s3_bucket, Key=prefix + "shop.tar")["LastModified"] == before
    assert [r.path for r in emu.requests if "/files/" in r.path or r.path.startswith(FILE_PREFIX)] == []


def test_archive_by_id_through_airflow_connections_with_split_files(
    emu, s3_server, s3_client, s3_bucket, aws_connection
):
    bid = emu.add_backup("stack-1", size=12 * MiB + 7, backup_date=NOW, database_name="app_db")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUD66_")}
    env["AIRFLOW_CONN_MY_C66"] = env.pop("AIRFLOW_CONN_CLOUD66_DEFAULT")
    env["AIRFLOW_CONN_MY_S3"] = env.pop("AIRFLOW_CONN_AWS_DEFAULT")
    args = ["archive", "stack-1", "--backup-id", str(bid), f"s3://{s3_bucket}", "--split", "--no-catalog"]
    result = run([*args, "--cloud66-conn-id", "my_c66", "--aws-conn-id", "my_s3"], env, script=True)

    assert result.returncode == 0, result.stderr
    prefix = f"cloud66/stack-1/mysql/app_db/{DAY}/{bid}/"
    names = emu.file_names("stack-1", bid)
    assert result.stdout.splitlines() == [f"s3://{s3_bucket}/{prefix}{name}" for name in names]
    assert keys(s3_client, s3_bucket) == sorted([prefix + "manifest.json", *(prefix + n for n in names)])
    for file_id, name in zip(emu.file_ids("stack-1", bid), names, strict=True):
        assert read(s3_client, s3_bucket, prefix + name) == emu.file_bytes("stack-1", bid, file_id)


def test_connections_kept_in_the_metadata_database_are_found(emu, s3_server, s3_client, s3_bucket, tmp_path):
    """Connections added with the UI or ``airflow connections add`` live in the metadata database,
    which Airflow 3's hooks do not read outside a task: the command finds them there too."""
    bid = emu.add_backup("stack-1", size=3000, backup_date=NOW, database_name="app_db")
    # A user's Airflow, not the test session's (whose unit-test mode leaves the database out of lookups).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLOUD66_"))}
    env.update(AIRFLOW_HOME=str(tmp_path / "airflow-home"), AIRFLOW__CORE__LOAD_EXAMPLES="False")
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    stored = {
        "c66_db": {"conn_type": "cloud66", "host": emu.base_url, "password": emu.token},
        "s3_db": {
            "conn_type": "aws",
            "login": ACCESS_KEY,
            "password": SECRET_KEY,
            "extra": {"endpoint_url": s3_server, "region_name": "us-east-1"},
        },
    }
    for conn_id, fields in stored.items():
        subprocess.run(
            [airflow, "connections", "add", conn_id, "--conn-json", json.dumps(fields)],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    conns = ["--cloud66-conn-id", "c66_db", "--aws-conn-id", "s3_db"]
    result = run(
        ["archive", "stack-1", "--backup-id", str(bid), f"s3://{s3_bucket}", "--no-catalog", *conns], env
    )
    assert result.returncode == 0, result.stderr
    key = f"cloud66/stack-1/mysql/app_db/{DAY}/{bid}/app_db.tar"
    assert result.stdout == f"s3://{s3_bucket}/{key}\n"
    assert read(s3_client, s3_bucket, key) == b"".join(emu.iter_archive("stack-1", bid))
    assert emu.token not in result.stdout + result.stderr


def test_a_template_prefix_is_the_whole_key_prefix(emu, s3_server, s3_client, s3_bucket):
    bid = emu.add_backup("stack-1", size=1000, backup_date=NOW, database_name="app_db")
    destination = f"s3://{s3_bucket}/manual/{{db_type}}-{{backup_id}}"
    result = run(
        [
            "archive",
            "stack-1",
            "--backup-id",
            str(bid),
            destination,
            "--no-catalog",
            *explicit(emu, s3_server),
        ],
        command_env(emu, s3_server),
    )
    assert result.returncode == 0, result.stderr
    assert keys(s3_client, s3_bucket) == [
        f"manual/mysql-{bid}/app_db.tar",
        f"manual/mysql-{bid}/manifest.json",
    ]


@pytest.mark.reliability(
    area="worker",
    fault="Ctrl-C (SIGINT) during a copy started from the command line",
    outcome="aborted, nothing left",
)
def test_ctrl_c_aborts_the_upload_and_leaves_nothing(
    cloud66_emulator_factory, s3_server, s3_client, s3_bucket
):
    emu = cloud66_emulator_factory(bandwidth_per_connection=2 * MiB)
    bid = emu.add_backup("stack-1", size=40 * MiB, backup_date=NOW)
    program = [sys.executable, "-m", "airflow_provider_c66", "archive", "stack-1", "--backup-id", str(bid)]
    process = subprocess.Popen(
        [
            *program,
            f"s3://{s3_bucket}",
            "--part-size-mib",
            "5",
            "--progress-interval",
            "0",
            *explicit(emu, s3_server),
        ],
        cwd=ROOT,
        env=command_env(emu, s3_server),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:  # wait until bytes are flowing, and a part is in S3
            seen.append(line)
            if s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"):
                break
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, "".join(seen) + err
    assert err.splitlines()[-1] == (
        "c66-backups: interrupted: SIGINT; the upload in progress was aborted, nothing partial is left in S3"
    )
    assert out == ""
    assert keys(s3_client, s3_bucket) == []
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []


def test_a_failure_is_one_line_naming_what_failed(emu, s3_server, s3_bucket):
    result = run(
        ["archive", "stack-1", "--backup-id", "999", f"s3://{s3_bucket}", *explicit(emu, s3_server)],
        command_env(emu, s3_server),
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("c66-backups: archive failed: ") and "999" in result.stderr
    assert "Traceback" not in result.stderr and emu.token not in result.stderr


# --- list and verify ----------------------------------------------------------------------------
def test_list_prints_the_newest_first(emu, s3_server):
    ids = [
        emu.add_backup(
            "stack-1", size=(n + 1) * MiB, backup_date=NOW - timedelta(days=n), database_name="shop"
        )
        for n in range(3)
    ]
    failed = emu.add_backup(
        "stack-1", db_type="redis", database_name="cache", status=1, backup_date=NOW + timedelta(minutes=1)
    )
    result = run(["list", "stack-1", *explicit(emu, s3_server)], command_env(emu, s3_server))
    assert result.returncode == 0, result.stderr
    assert [line.split() for line in result.stdout.splitlines()] == [
        ["id", "date", "(UTC)", "db", "type", "database", "status", "size"],
        [
            str(failed),
            *f"{NOW + timedelta(minutes=1):%Y-%m-%d %H:%M:%S}".split(),
            "redis",
            "cache",
            "failed",
            "0.0",
            "MiB",
        ],
        *[
            [
                str(ident),
                *f"{NOW - timedelta(days=n):%Y-%m-%d %H:%M:%S}".split(),
                "mysql",
                "shop",
                "ok",
                f"{n + 1}.0",
                "MiB",
            ]
            for n, ident in enumerate(ids)
        ],
    ]

    limited = run(
        ["list", "stack-1", "--db-type", "mysql", "--limit", "2", "--json", *explicit(emu, s3_server)],
        command_env(emu, s3_server),
    )
    assert limited.returncode == 0, limited.stderr
    records = [json.loads(line) for line in limited.stdout.splitlines()]
    assert [r["id"] for r in records] == ids[:2]
    by_id = {r["id"]: r for r in emu.backups("stack-1")}
    assert all(r["backup_date_iso"] == by_id[r["id"]]["backup_date_iso"] for r in records)


def test_verify_passes_an_intact_archive_and_fails_a_changed_one(emu, s3_server, s3_client, s3_bucket):
    bid = emu.add_backup("stack-1", size=2 * MiB, backup_date=NOW, database_name="app_db")
    env = command_env(emu, s3_server)
    done = run(
        ["archive", "stack-1", "--backup-id", str(bid), f"s3://{s3_bucket}", *explicit(emu, s3_server)], env
    )
    assert done.returncode == 0, done.stderr
    uri = done.stdout.strip()
    digest = hashlib.sha256(b"".join(emu.iter_archive("stack-1", bid))).hexdigest()

    good = run(["verify", uri, "--endpoint-url", s3_server, "--region", "us-east-1"], env)
    assert good.returncode == 0, good.stderr
    assert good.stdout.splitlines() == [
        f"ok  {uri}  sha256 {digest}",
        f"Verified 1 object(s), {2 * MiB:,} bytes, against {uri.rsplit('/', 1)[0]}/manifest.json",
    ]

    bucket, key = uri[len("s3://") :].split("/", 1)
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"x" * (2 * MiB))
    bad = run(["verify", uri, "--endpoint-url", s3_server, "--region", "us-east-1"], env)
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr.startswith(f"c66-backups: verify failed: The archive at s3://{bucket}/")
    assert (
        f"- {uri}: SHA-256 read back is {hashlib.sha256(b'x' * (2 * MiB)).hexdigest()}, the manifest says {digest}"
        in bad.stderr
    )


# --- bad input: refused before any request ------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["archive", "stack-1", "--backup-id", "1", "bucket/x"],
            "destination: must be s3://BUCKET[/PREFIX], got 'bucket/x'",
        ),
        (["archive", "stack-1", "--backup-id", "1", "s3://Bad_Bucket"], "destination: "),
        (
            ["archive", "stack-1", "--backup-id", "1", "s3://bucket/a/../b"],
            "destination: must not hold empty, '.' or '..'",
        ),
        (["archive", "stack-1", "--backup-id", "x", "s3://bucket"], "--backup-id: "),
        (
            ["archive", "stack-1", "--backup-id", "1", "s3://bucket", "--part-size-mib", "1"],
            "--part-size-mib: must be at least",
        ),
        (
            ["archive", "stack-1", "--backup-id", "1", "s3://bucket", "--max-concurrency", "0"],
            "--max-concurrency: ",
        ),
        (
            ["archive", "stack-1", "--backup-id", "1", "s3://bucket", "--storage-class", "COLD"],
            "--storage-class: must be one of",
        ),
        (
            ["archive", "stack-1", "--backup-id", "1", "s3://bucket", "--kms-key-id", "k"],
            "--kms-key-id: needs server_side_encryption",
        ),
        (
            ["archive", "stack-1", "--backup-id", "1", "s3://bucket", "--database", "d"],
            "--database: goes with --latest",
        ),
        (["archive", "stack-1", "--latest", "mysql", "s3://bucket/{nope}"], "destination: "),
        (["list", "stack-1", "--limit", "0"], "--limit: "),
        (["verify", "s3://bucket"], "archive: must name a key under the bucket"),
    ],
)
@pytest.mark.reliability(
    area="bad input",
    fault="a command-line option out of range or malformed",
    outcome="refused before any request",
)
def test_bad_input_exits_2_naming_the_option_before_any_request(emu, capsys, args, message):
    emu.clear_requests()
    os.environ["CLOUD66_ACCESS_TOKEN"] = emu.token
    try:
        status = cli.main([*args, "--api-url", emu.base_url])
    finally:
        del os.environ["CLOUD66_ACCESS_TOKEN"]
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(f"c66-backups: error: {message}"), err
    assert emu.requests == []


def test_api_url_without_the_token_variable_is_refused(capsys, monkeypatch):
    monkeypatch.delenv("CLOUD66_ACCESS_TOKEN", raising=False)
    assert cli.main(["list", "stack-1", "--api-url", "http://127.0.0.1:9/api/3"]) == 2
    assert capsys.readouterr().err == (
        "c66-backups: error: --api-url: needs the API token in the CLOUD66_ACCESS_TOKEN environment variable\n"
    )


# --- the progress display -----------------------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_one_redrawn_bar():
    clock = iter([0.0, 0.1, 1.0, 1.1, 2.0])
    stream = Terminal()
    progress = cli.Progress(stream, clock=lambda: next(clock))
    progress.copy_started("cloud66/s/mysql/db/2026/12/05/7/db.tar", 4 * MiB, [4 * MiB])
    progress.bytes_read(MiB)  # 0.1 s: too soon to redraw
    progress.bytes_read(MiB)  # 1.0 s: drawn
    progress.bytes_read(3 * MiB)  # 1.1 s: too soon; a retried range read again is capped at the total
    result = CopyResult("b", "k", 4 * MiB, "e", "ab" * 32, 1, (("f", 4 * MiB),))
    progress.copy_finished(result, 2.0)
    assert stream.getvalue() == (
        "\rdb.tar  [........................]   0%  0.0/4.0 MiB  0.0 MiB/s  ETA --:--:--\x1b[K"
        "\rdb.tar  [############............]  50%  2.0/4.0 MiB  2.0 MiB/s  ETA 0:00:01\x1b[K"
        "\rdb.tar  [########################] 100%  4.0/4.0 MiB  2.0 MiB/s  ETA 0:00:00\x1b[K\n"
        f"db.tar: 4.0 MiB in 2.0 s (2.0 MiB/s), sha256 {'ab' * 32}\n"
    )


def test_progress_elsewhere_is_a_plain_line_every_interval():
    clock = iter([0.0, 1.0, 5.0, 6.0])
    stream = io.StringIO()
    progress = cli.Progress(stream, interval=5.0, clock=lambda: next(clock))
    progress.copy_started("k/db.tar", 10 * MiB, [10 * MiB])
    progress.bytes_read(MiB)
    progress.bytes_read(4 * MiB)
    progress.copy_finished(CopyResult("b", "k", 10 * MiB, "e", "cd" * 32, 2, ()), 6.0)
    assert stream.getvalue().splitlines() == [
        "db.tar: 50%  5.0/10.0 MiB  1.0 MiB/s  ETA 0:00:05",
        f"db.tar: 10.0 MiB in 6.0 s (1.7 MiB/s), sha256 {'cd' * 32}",
    ]
