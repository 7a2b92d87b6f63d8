"""The README's demo: run the ``cloud66_archive_to_s3`` example DAG end to end and check what landed.

Embedded mode (the default): starts the package's Cloud 66 emulator and a local S3-protocol server
(moto in server mode) on 127.0.0.1, points ``cloud66_default`` and ``aws_default`` at them, runs the
DAG through Airflow (``dag.test()``), prints the bucket's keys, sizes and one manifest, verifies every
archive's bytes against the emulator's source, and stops what it started. Exit status 0 only when
every archive is complete and byte-exact.

Real mode: when ``AIRFLOW_CONN_CLOUD66_DEFAULT``, ``AIRFLOW_CONN_AWS_DEFAULT``,
``AIRFLOW_VAR_CLOUD66_ARCHIVE_TARGETS`` and ``CLOUD66_DEMO_BUCKET`` are all set, nothing is started:
the DAG runs against real Cloud 66 and real S3, and each archive is checked against its manifest.
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
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DAG_FILE = ROOT / "example_dags" / "cloud66_archive_to_s3.py"
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
    args = parser.parse_args()
    real = all(os.environ.get(name) for name in REAL_MODE_ENV)
    if "AIRFLOW_HOME" not in os.environ:
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="c66-demo-airflow-")
        atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")  # the report below is the output
    os.environ["CLOUD66_ARCHIVE_POKE_INTERVAL"] = os.environ.get(
        "CLOUD66_ARCHIVE_POKE_INTERVAL", "1" if not real else "60"
    )
    with ExitStack() as stack:
        if real:
            print("Real mode: Cloud 66 and S3 from the AIRFLOW_CONN_* variables.")
            bucket, emulator = os.environ["CLOUD66_DEMO_BUCKET"], None
        else:
            bucket, emulator = start_embedded(stack, fast=args.fast)
        return run_and_check(bucket, emulator)


def start_embedded(stack: ExitStack, *, fast: bool) -> tuple[str, Any]:
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
    print(f"Embedded mode: Cloud 66 emulator at {emulator.base_url}, S3 at {endpoint}, bucket {bucket}")
    print(f"Targets: {', '.join(t['stack_id'] + '/' + t['db_type'] for t in targets)}")
    return bucket, emulator


def load_dag() -> Any:
    spec = importlib.util.spec_from_file_location("cloud66_archive_to_s3", DAG_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def run_and_check(bucket: str, emulator: Any) -> int:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from airflow_provider_c66.testing import dags

    dags.migrate_metadata_db()
    dagrun = dags.run_dag(load_dag(), run_conf={"s3_bucket": bucket})
    print(f"\nDAG run {dagrun.run_id}: {dagrun.state}")

    client = S3Hook(aws_conn_id="aws_default").get_conn()
    objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    print(f"\ns3://{bucket}/")
    for obj in sorted(objects, key=lambda o: o["Key"]):
        print(f"  {obj['Size']:>12,}  {obj['Key']}")
    manifests = [o["Key"] for o in objects if o["Key"].endswith("/manifest.json")]
    problems = [] if dagrun.state == "success" else [f"the DAG run ended {dagrun.state}"]
    for key in manifests:
        manifest = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        problems += check_archive(client, bucket, manifest, emulator)
    if manifests:
        first = json.loads(client.get_object(Bucket=bucket, Key=manifests[0])["Body"].read())
        print(f"\n{manifests[0]}:\n{json.dumps(first, indent=2)[:2500]}")
    expected = len(json.loads(os.environ["AIRFLOW_VAR_CLOUD66_ARCHIVE_TARGETS"]))
    if len(manifests) != expected:
        problems.append(f"{len(manifests)} complete archives, expected {expected}")
    print()
    for problem in problems:
        print(f"FAIL: {problem}")
    if not problems:
        print(f"OK: {len(manifests)} archives complete and byte-exact.")
    return 1 if problems else 0


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


if __name__ == "__main__":
    sys.exit(main())
