"""The README's demo: run the ``cloud66_archive_to_s3`` example DAG end to end and check what landed.

Embedded mode (the default): starts the package's Cloud 66 emulator and a local S3-protocol server
(moto in server mode) on 127.0.0.1, points ``cloud66_default`` and ``aws_default`` at them, runs the
DAG through Airflow (``dag.test()``), verifies every archive's bytes against the emulator's source,
and stops what it started. Exit status 0 only when every archive is complete and byte-exact.

Real mode: when ``AIRFLOW_CONN_CLOUD66_DEFAULT``, ``AIRFLOW_CONN_AWS_DEFAULT``,
``AIRFLOW_VAR_CLOUD66_ARCHIVE_TARGETS`` and ``CLOUD66_DEMO_BUCKET`` are all set, nothing is started:
the DAG runs against real Cloud 66 and real S3, and each archive is checked against its manifest.

The terminal shows a report: where things run, a line per target as its archive completes, a table
of the archives and the result. The servers' access logs and Airflow's own output go to a log file
named at the end; ``--verbose`` shows them instead, ``--show-manifest`` prints one manifest.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
DAG_FILE = ROOT / "example_dags" / "cloud66_archive_to_s3.py"
COPY_TASK = "archive.copy_to_s3"
MiB = 1024 * 1024
REAL_MODE_ENV = (
    "AIRFLOW_CONN_CLOUD66_DEFAULT",
    "AIRFLOW_CONN_AWS_DEFAULT",
    "AIRFLOW_VAR_CLOUD66_ARCHIVE_TARGETS",
    "CLOUD66_DEMO_BUCKET",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="small backups (CI)")
    parser.add_argument(
        "--verbose", action="store_true", help="show the servers' access logs and Airflow's output here"
    )
    parser.add_argument("--show-manifest", action="store_true", help="print the first archive's manifest")
    parser.add_argument("--log-file", type=Path, help="where the full output goes (default: a new temp file)")
    args = parser.parse_args()
    log_file = args.log_file or Path(tempfile.mkstemp(prefix="c66-demo-", suffix=".log")[1])
    real = all(os.environ.get(name) for name in REAL_MODE_ENV)
    if "AIRFLOW_HOME" not in os.environ:
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="c66-demo-airflow-")
        atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ["CLOUD66_ARCHIVE_POKE_INTERVAL"] = os.environ.get(
        "CLOUD66_ARCHIVE_POKE_INTERVAL", "1" if not real else "60"
    )
    with report_to_terminal(log_file, verbose=args.verbose) as report, ExitStack() as stack:
        try:
            if real:
                report.line("Real mode: Cloud 66 and S3 from the AIRFLOW_CONN_* variables.")
                bucket, emulator = os.environ["CLOUD66_DEMO_BUCKET"], None
            else:
                bucket, emulator = start_embedded(stack, report, fast=args.fast)
            status = run_and_check(report, bucket, emulator, show_manifest=args.show_manifest)
        except Exception as exc:  # the traceback is in the log; the terminal says what failed
            import traceback

            traceback.print_exc()
            report.line(f"FAIL: {type(exc).__name__}: {exc}")
            status = 1
        if not args.verbose:
            report.line(f"Full log: {log_file}")
        return status


class Report:
    """The lines a user sees, written to the terminal whatever else is redirected."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()

    def line(self, text: str = "") -> None:
        with self._lock:
            self.out.write(text + "\n")
            self.out.flush()


@contextmanager
def report_to_terminal(log_file: Path, *, verbose: bool) -> Iterator[Report]:
    """Everything written to file descriptors 1 and 2 (servers, Airflow, warnings) goes to the log
    file; the report keeps a handle on the real standard output. ``verbose`` redirects nothing."""
    if verbose:
        yield Report(sys.stdout)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    terminal = os.fdopen(os.dup(saved[0]), "w", encoding="utf-8", errors="replace")
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield Report(terminal)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)
        terminal.close()


def start_embedded(stack: ExitStack, report: Report, *, fast: bool) -> tuple[str, Any]:
    """Start the emulator and a moto S3 server, wire the two connections and the targets to them."""
    import boto3
    from moto.server import ThreadedMotoServer

    from airflow_provider_c66.testing import Cloud66Emulator

    size = 1 if fast else 4
    emulator = stack.enter_context(Cloud66Emulator(split_threshold=size * 3 * MiB, split_size=size * 2 * MiB))
    s3_server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    s3_server.start()
    stack.callback(s3_server.stop)
    host, port = s3_server.get_host_and_port()
    endpoint = f"http://{host}:{port}"

    now = datetime.now(UTC)
    stacks = {
        "shop-prod": [("mysql", "shop"), ("redis", "cache")],
        "blog-prod": [("postgresql", "blog")],
        "events-prod": [("mongodb", "events")],
    }
    targets = []
    for uid, databases in stacks.items():
        emulator.add_stack(uid, databases=databases)
        for index, (db_type, name) in enumerate(databases):
            big = uid == "events-prod"  # split into parts, as Cloud 66 does for large backups
            emulator.add_backup(
                uid,
                db_type=db_type,
                database_name=name,
                size=(size * 7 * MiB + 12345) if big else (size * MiB // 2 + index),
                backup_date=now - timedelta(minutes=5),
            )
            targets.append({"stack_id": uid, "db_type": db_type})

    bucket = f"demo-lake-{uuid.uuid4().hex[:8]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="demo",
        aws_secret_access_key="demo",
    ).create_bucket(Bucket=bucket)
    os.environ["AIRFLOW_CONN_CLOUD66_DEFAULT"] = json.dumps(
        {"conn_type": "cloud66", "host": emulator.base_url, "password": emulator.token}
    )
    os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
        {
            "conn_type": "aws",
            "login": "demo",
            "password": "demo",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    )
    os.environ["AIRFLOW_VAR_CLOUD66_ARCHIVE_TARGETS"] = json.dumps(targets)
    report.line(f"Cloud 66     the package's emulator at {emulator.base_url} (embedded mode)")
    report.line(f"S3           moto at {endpoint}, bucket {bucket}")
    return bucket, emulator


def load_dag() -> Any:
    spec = importlib.util.spec_from_file_location("cloud66_archive_to_s3", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@dataclass
class Archive:
    """One archive of the run, as its manifest and the copy task describe it."""

    manifest_key: str
    manifest: dict[str, Any]
    seconds: float | None  # the copy task's run time
    problems: list[str]


def run_and_check(report: Report, bucket: str, emulator: Any, *, show_manifest: bool) -> int:
    import airflow
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_provider_c66.testing import dags

    targets = json.loads(os.environ["AIRFLOW_VAR_CLOUD66_ARCHIVE_TARGETS"])
    report.line(f"Airflow      {airflow.__version__}, dag.test() of {DAG_FILE.stem}")
    report.line(
        f"Targets      {len(targets)}: {', '.join(t['stack_id'] + '/' + t['db_type'] for t in targets)}"
    )
    report.line()
    client = S3Hook(aws_conn_id="aws_default").get_conn()
    dags.migrate_metadata_db()
    started = time.monotonic()
    with watch_manifests(report, client, bucket, started):
        dagrun = dags.run_dag(load_dag(), run_conf={"s3_bucket": bucket})
    report.line(f"\nDAG run {dagrun.run_id}: {dagrun.state} in {time.monotonic() - started:.1f} s")

    problems = [] if dagrun.state == "success" else [f"the DAG run ended {dagrun.state}"]
    archives = []
    for keys, seconds in copy_results(dagrun):
        manifest_key = keys[0].rsplit("/", 1)[0] + "/manifest.json"
        manifest = json.loads(client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
        archives.append(
            Archive(manifest_key, manifest, seconds, check_archive(client, bucket, manifest, emulator))
        )
    report.line()
    print_table(report, archives)
    if show_manifest and archives:
        report.line(f"\n{archives[0].manifest_key}:\n{json.dumps(archives[0].manifest, indent=2)}")
    problems += [problem for item in archives for problem in item.problems]
    if len(archives) != len(targets):
        problems.append(f"{len(archives)} complete archives, expected {len(targets)}")
    report.line()
    for problem in problems:
        report.line(f"FAIL: {problem}")
    if not problems:
        report.line(f"OK: {len(archives)} archives complete and byte-exact.")
    return 1 if problems else 0


@contextmanager
def watch_manifests(report: Report, client: Any, bucket: str, started: float) -> Iterator[None]:
    """A line per archive as its manifest (written last) appears in the bucket."""
    stop = threading.Event()
    since = datetime.now(UTC) - timedelta(seconds=5)

    def scan(seen: set[str]) -> None:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key in seen or not key.endswith("/manifest.json") or obj["LastModified"] < since:
                    continue
                seen.add(key)
                document = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
                backup = document["backup"]
                target = f"{document['stack_id']}/{backup['db_type']}/{backup['database_name']}"
                size = f"{document['total_size'] / MiB:.1f} MiB"
                report.line(f"  archived  {target:<32} {size:>10}  at +{time.monotonic() - started:.1f} s")

    def watch() -> None:
        seen: set[str] = set()
        while True:
            last = stop.is_set()  # one more look after the run, so no archive goes unreported
            try:
                scan(seen)
            except Exception as exc:  # the report goes on; the table below is what counts
                print(f"watching the bucket: {exc!r}", file=sys.stderr)
            if last:
                return
            stop.wait(0.5)

    thread = threading.Thread(target=watch, name="demo-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def copy_results(dagrun: Any) -> list[tuple[list[str], float | None]]:
    """Each archive's keys (from its copy task's return value) and, when the task made only that
    archive, the task's run time; in map order."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    results = []
    with create_session() as session:
        instances = session.scalars(
            select(TaskInstance)
            .where(TaskInstance.dag_id == dagrun.dag_id, TaskInstance.run_id == dagrun.run_id)
            .where(TaskInstance.task_id == COPY_TASK)
            .order_by(TaskInstance.map_index)
        ).all()
        for ti in instances:
            row = session.scalars(
                XComModel.get_many(
                    run_id=dagrun.run_id,
                    dag_ids=dagrun.dag_id,
                    task_ids=COPY_TASK,
                    map_indexes=ti.map_index,
                    key="return_value",
                )
            ).first()
            uris = [] if row is None else XComModel.deserialize_value(row) or []
            archives: dict[str, list[str]] = {}  # a copy task archives each of its stack's types
            for uri in uris:
                key = uri.split("/", 3)[3]
                archives.setdefault(key.rsplit("/", 1)[0], []).append(key)
            seconds = (ti.end_date - ti.start_date).total_seconds() if ti.start_date and ti.end_date else None
            for keys in archives.values():  # a task's time is one archive's only when it made one
                results.append((keys, seconds if len(archives) == 1 else None))
    return results


def check_archive(client: Any, bucket: str, manifest: dict[str, Any], emulator: Any) -> list[str]:
    """Read every object back; compare with the manifest and, in embedded mode, the emulator's source."""
    problems = []
    stack_id, backup_id = manifest["stack_id"], manifest["backup"]["id"]
    for entry in manifest["objects"]:
        digest = hashlib.sha256()
        size = 0
        for chunk in client.get_object(Bucket=bucket, Key=entry["key"])["Body"].iter_chunks(MiB):
            digest.update(chunk)
            size += len(chunk)
        if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
            problems.append(f"{entry['key']}: {size} bytes, sha256 {digest.hexdigest()} != manifest")
        if emulator is not None and digest.hexdigest() != emulator.archive_sha256(stack_id, backup_id):
            problems.append(f"{entry['key']}: bytes differ from backup {backup_id} of {stack_id}")
    return problems


TABLE_COLUMNS = ("stack", "db type", "database", "key", "size", "MiB/s", "sha256", "byte-exact")


def print_table(report: Report, archives: list[Archive]) -> None:
    """One row per archived object; MiB/s is the archive's size over its copy task's run time."""
    rows = []
    for item in archives:
        backup = item.manifest["backup"]
        rate = item.manifest["total_size"] / MiB / item.seconds if item.seconds else None
        for entry in item.manifest["objects"]:
            rows.append(
                (
                    item.manifest["stack_id"],
                    backup["db_type"],
                    backup["database_name"],
                    entry["key"],
                    f"{entry['size'] / MiB:.1f} MiB",
                    "-" if rate is None else f"{rate:.1f}",
                    entry["sha256"][:12],
                    "no" if item.problems else "yes",
                )
            )
    widths = [max(len(str(cell)) for cell in column) for column in zip(TABLE_COLUMNS, *rows, strict=False)]
    right = {4, 5}
    for cells in (TABLE_COLUMNS, *rows):
        report.line(
            "  ".join(
                str(cell).rjust(width) if index in right else str(cell).ljust(width)
                for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()
        )


if __name__ == "__main__":
    sys.exit(main())
