"""The example DAGs and the demo: they parse cleanly and cheaply, and each runs end to end.

Each DAG is loaded from its file and run through Airflow (``dag.test()``) against the Cloud 66
emulator and the moto S3 server, both over HTTP; what lands in the bucket is compared byte for byte
with the emulator's source. The demo script (``make demo``) is run as a user would run it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_3_PLUS

from tests.helpers import read, record, states, xcom_value
from tests.s3_fixtures import catalogue_key

ROOT = Path(__file__).resolve().parent.parent
DAG_FOLDER = ROOT / "example_dags"
ARCHIVE = "cloud66_archive_to_s3"
SETUP = "cloud66_setup_backup_tasks"
RESTORE = "cloud66_restore_from_s3"
VERIFY = "cloud66_verify_new_archives"
MiB = 1024 * 1024
OLD = datetime(2026, 1, 1, tzinfo=UTC)

# dag.test() of Airflow 3.1 cannot wait for a person: its in-process supervisor does not answer the
# approval trigger's GetHITLDetail request. From 3.3 the approval waits without a trigger.
HITL_IN_DAG_TEST = AIRFLOW_V_3_3_PLUS
NO_HITL_IN_DAG_TEST = "dag.test() of this Airflow cannot run a human-in-the-loop wait in process"

WAIT = "archive.wait_for_backup"
COPY = "archive.copy_to_s3"


# --- helpers --------------------------------------------------------------------------------------
def load_dag(name: str) -> Any:
    """The DAG object of ``example_dags/<name>.py``, imported afresh (module-level settings re-read)."""
    spec = importlib.util.spec_from_file_location(f"{name}_{uuid.uuid4().hex[:8]}", DAG_FOLDER / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def s3_listing(s3_client: Any, bucket: str) -> dict[str, tuple[int, str, Any]]:
    """``key -> (size, etag, last modified)`` of every object in the bucket."""
    contents = s3_client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: (o["Size"], o["ETag"], o["LastModified"]) for o in contents}


def archive_key(emu: Any, stack: str, backup_id: int) -> tuple[str, str]:
    """(object key, manifest key) the archive DAG must write for a backup, from the emulator's record."""
    raw = next(r for r in emu.backups(stack) if r["id"] == backup_id)
    day = datetime.strptime(raw["backup_date_iso"], "%Y-%m-%dT%H:%M:%SZ")
    prefix = f"cloud66/{stack}/{raw['db_type']}/{raw['database_name']}/{day:%Y/%m/%d}/{backup_id}/"
    (name,) = {n.rsplit("-", 1)[0] if ".tar-" in n else n for n in emu.file_names(stack, backup_id)}
    return prefix + name, prefix + "manifest.json"


def file_requests_of(emu: Any, stack: str, backup_id: int) -> list[Any]:
    """Signed-URL file requests for one backup (``.../backups/<md5 of stack>/<type>/<name>_<id>/...``)."""
    stack_dir = "/" + hashlib.md5(stack.encode(), usedforsecurity=False).hexdigest() + "/"
    return [
        r for r in emu.requests if r.kind == "file" and stack_dir in r.path and f"_{backup_id}/" in r.path
    ]


class Person:
    """Who answers an approval request (what the API server's auth manager would hand the handler)."""

    def get_id(self) -> str:
        return "ops-1"

    def get_name(self) -> str:
        return "On-call engineer"


@contextmanager
def a_person_answers(option: str) -> Iterator[dict[str, Any]]:
    """Answer the run's approval request with ``option`` once it is asked, through the handler of
    Airflow's REST endpoint (what the Required Actions view calls); yields what the person was shown."""
    from airflow.api_fastapi.core_api.datamodels.hitl import UpdateHITLDetailPayload
    from airflow.api_fastapi.core_api.routes.public.hitl import update_hitl_detail
    from airflow.models.hitl import HITLDetail
    from airflow.utils.session import create_session
    from sqlalchemy import select

    shown: dict[str, Any] = {}
    stop = threading.Event()

    def answer() -> None:
        while not stop.wait(0.2):
            try:  # a busy SQLite may refuse a read or a write: the person looks again
                with create_session() as session:
                    asked = session.scalars(select(HITLDetail)).all()
                    pending = [d for d in asked if d.chosen_options is None]
                    running = [d for d in pending if d.task_instance.state == "awaiting_input"]
                    if not running:
                        continue
                    detail = running[-1]
                    ti = detail.task_instance
                    shown.update(
                        task_id=ti.task_id, subject=detail.subject, body=detail.body, options=detail.options
                    )
                    update_hitl_detail(
                        dag_id=ti.dag_id,
                        dag_run_id=ti.run_id,
                        task_id=ti.task_id,
                        update_hitl_detail_payload=UpdateHITLDetailPayload(chosen_options=[option]),
                        user=Person(),
                        session=session,
                        map_index=ti.map_index,
                    )
                    return
            except Exception as exc:
                print(f"answering the approval failed, trying again: {exc!r}", file=sys.stderr)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield shown
    finally:
        stop.set()
        thread.join(timeout=30)


# --- 1. integrity ---------------------------------------------------------------------------------
def test_dagbag_has_the_four_dags_without_import_errors():
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    kwargs: dict[str, Any] = {"dag_folder": str(DAG_FOLDER)}
    if "include_examples" in inspect.signature(DagBag.__init__).parameters:  # removed in Airflow 3.2
        kwargs["include_examples"] = False
    bag = DagBag(**kwargs)

    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == [ARCHIVE, RESTORE, SETUP, VERIFY]
    for dag_id in bag.dag_ids:
        dag = bag.dags[dag_id]
        assert Path(dag.fileloc) == DAG_FOLDER / f"{dag_id}.py"
        module_doc = ast.get_docstring(ast.parse(Path(dag.fileloc).read_text()))
        doc = dag.doc_md or module_doc
        assert doc and "Use it" in doc and "Connections:" in doc, dag_id
        # The docstring names every connection the DAG's tasks use.
        conn_ids = {
            value
            for task in dag.tasks
            for attr in ("cloud66_conn_id", "aws_conn_id")
            # a mapped task keeps its fixed arguments in partial_kwargs
            if (value := getattr(task, attr, None) or getattr(task, "partial_kwargs", {}).get(attr))
        }
        assert conn_ids, dag_id
        for conn_id in conn_ids:
            assert f"``{conn_id}``" in doc, (dag_id, conn_id)
        assert "cloud66" in dag.tags and len(dag.tags) >= 2, dag_id
    assert bag.dags[ARCHIVE].schedule == "@daily"
    assert bag.dags[SETUP].schedule is None and bag.dags[RESTORE].schedule is None
    schedule = bag.dags[VERIFY].timetable.asset_condition.objects
    assert [(type(o).__name__, o.name) for o in schedule] == [("AssetAlias", "cloud66-backup-archives")]


# --- 2. import time -------------------------------------------------------------------------------
def run_python(code: str) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh interpreter with the test session's environment, from the repo root."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_importing_the_package_does_not_import_boto3():
    result = run_python(
        """
        import importlib, json, sys
        heavy = ("boto3", "botocore", "aiobotocore", "s3transfer", "openlineage")
        found = {}
        for name in (
            "airflow_provider_c66",
            "airflow_provider_c66.assets",
            "airflow_provider_c66.cli",
            "airflow_provider_c66.hooks.cloud66",
            "airflow_provider_c66.operators.backups",
            "airflow_provider_c66.sensors.backups",
            "airflow_provider_c66.triggers.backups",
            "airflow_provider_c66.transfers.archive",
            "airflow_provider_c66.transfers.copy",
            "airflow_provider_c66.transfers.backup_to_s3",
            "airflow_provider_c66.transfers.s3_to_cloud66",
            "airflow_provider_c66.transfers.retention",
            "airflow_provider_c66.transfers.prune_archives",
        ):
            importlib.import_module(name)
            loaded = sorted(
                m
                for m in sys.modules
                # Airflow's provider discovery reads the OpenLineage provider's metadata; nothing more
                if m.split(".")[0] in heavy
                or m.startswith(("airflow.providers.openlineage.extractors", "airflow.providers.openlineage.plugins"))
            )
            if loaded:
                found[name] = loaded[:5]
                break
        # The check itself works: boto3 is installed and shows up once imported.
        import boto3  # noqa: F401
        print(json.dumps({"found": found, "boto3_seen": "boto3" in sys.modules}))
        """
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"found": {}, "boto3_seen": True}, "the first module that imported boto3 at import time"


def test_parsing_the_example_dags_touches_no_network_and_no_boto3():
    result = run_python(
        f"""
        import json, runpy, socket, sys

        attempts = []

        def refuse(self, address, *args):
            attempts.append(repr(address))
            raise OSError("network access at DAG parse time: " + repr(address))

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        try:  # the guard itself works
            socket.create_connection(("127.0.0.1", 9), timeout=1)
        except OSError as exc:
            assert "DAG parse time" in str(exc), exc
        attempts.clear()

        dag_ids = {{}}
        for name in ("{ARCHIVE}", "{SETUP}", "{RESTORE}", "{VERIFY}"):
            namespace = runpy.run_path("example_dags/" + name + ".py", run_name="parsed_" + name)
            dag_ids[name] = namespace["dag"].dag_id
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore", "aiobotocore"))
        print(json.dumps({{"dag_ids": dag_ids, "attempts": attempts, "heavy": heavy[:5]}}))
        """
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "dag_ids": {ARCHIVE: ARCHIVE, SETUP: SETUP, RESTORE: RESTORE, VERIFY: VERIFY},
        "attempts": [],
        "heavy": [],
    }


# --- 3. each DAG run with dag.test() --------------------------------------------------------------
@pytest.fixture
def archive_emu(cloud66_emulator_factory, monkeypatch):
    """Two stacks; backups over 3 MiB are split into 2 MiB + 1 parts, as Cloud 66 splits big ones."""
    monkeypatch.setenv("CLOUD66_ARCHIVE_POKE_INTERVAL", "0.2")  # read when the DAG module is loaded
    emu = cloud66_emulator_factory(stacks=(), split_threshold=3 * MiB, split_size=2 * MiB + 1)
    emu.add_stack("shop-prod", databases=[("mysql", "shop"), ("redis", "cache")])
    emu.add_stack("events-prod", databases=[("mongodb", "events"), ("postgresql", "ledger")])
    return emu


def set_targets(monkeypatch: pytest.MonkeyPatch, pairs: list[tuple[str, str]]) -> None:
    targets = [{"stack_id": stack, "db_type": db_type} for stack, db_type in pairs]
    monkeypatch.setenv("AIRFLOW_VAR_CLOUD66_ARCHIVE_TARGETS", json.dumps(targets))


def test_archive_dag_archives_every_target_byte_exact_and_a_rerun_copies_nothing(
    archive_emu, s3_client, s3_bucket, aws_connection, run_dag, monkeypatch
):
    emu = archive_emu
    now = datetime.now(UTC)
    # Not archived: an older backup of a target, a backup of a type nobody asked for.
    emu.add_backup(
        "shop-prod", db_type="mysql", database_name="shop", size=1000, backup_date=now - timedelta(hours=3)
    )
    emu.add_backup("events-prod", db_type="postgresql", database_name="ledger", size=2000, backup_date=now)
    wanted = {
        ("shop-prod", "mysql"): emu.add_backup(
            "shop-prod",
            db_type="mysql",
            database_name="shop",
            size=MiB + 17,
            backup_date=now - timedelta(hours=1),
        ),
        ("shop-prod", "redis"): emu.add_backup(
            "shop-prod",
            db_type="redis",
            database_name="cache",
            size=4099,
            backup_date=now - timedelta(hours=2),
        ),
        ("events-prod", "mongodb"): emu.add_backup(
            "events-prod",
            db_type="mongodb",
            database_name="events",
            size=6 * MiB + 5,
            backup_date=now - timedelta(minutes=30),
        ),
    }
    assert len(emu.file_ids("events-prod", wanted["events-prod", "mongodb"])) == 4  # split; last part 2 B
    pairs = list(wanted)
    set_targets(monkeypatch, pairs)

    dagrun = run_dag(load_dag(ARCHIVE), run_conf={"s3_bucket": s3_bucket})

    assert dagrun.state == "success"
    stacks = ["shop-prod", "events-prod"]  # one sensor and one copy per stack, for all its types
    assert states(dagrun) == {
        ("targets", -1): "success",
        **{(WAIT, i): "success" for i in range(2)},
        **{(COPY, i): "success" for i in range(2)},
        ("summary", -1): "success",
        ("prune_today", -1): "success",  # retention is not set: the prune is skipped
        ("prune", -1): "skipped",
    }
    assert xcom_value(dagrun, "targets") == [
        {"stack_id": "shop-prod", "db_types": ["mysql", "redis"]},
        {"stack_id": "events-prod", "db_types": ["mongodb"]},
    ]
    expected_keys = []
    uris = []
    for stack, db_type in pairs:
        bid = wanted[stack, db_type]
        key, manifest_key = archive_key(emu, stack, bid)
        expected_keys += [key, manifest_key, catalogue_key(emu, bid, stack)]
        uris.append(f"s3://{s3_bucket}/{key}")
        assert read(s3_client, s3_bucket, key) == b"".join(emu.iter_archive(stack, bid))
        manifest = json.loads(read(s3_client, s3_bucket, manifest_key))
        assert (manifest["stack_id"], manifest["backup"]["id"]) == (stack, bid)
        assert manifest["sha256"] == emu.archive_sha256(stack, bid)
        assert [o["key"] for o in manifest["objects"]] == [key]
    for index, stack in enumerate(stacks):
        ids = [bid for (s, _), bid in wanted.items() if s == stack]
        assert xcom_value(dagrun, WAIT, index) == [record(emu, bid, stack) for bid in ids]
        assert xcom_value(dagrun, COPY, index) == [u for u in uris if f"/{stack}/" in u]
    # The requests the archives cost: per stack one list read (the sensor's check finds the backups),
    # per archive its file list, its signed URLs and the list's last look; no record is read again.
    api = [r for r in emu.requests if r.kind == "api"]
    assert sum(r.path.endswith("/backups.json") for r in api) == len(stacks)
    assert not any(re.fullmatch(r".*/backups/\d+\.json", r.path) for r in api)
    files = sum(len(emu.file_ids(stack, bid)) for (stack, _), bid in wanted.items())
    assert len(api) == len(stacks) + 2 * len(wanted) + files
    listing = s3_listing(s3_client, s3_bucket)
    assert sorted(listing) == sorted(expected_keys)
    assert s3_client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", []) == []
    assert xcom_value(dagrun, "summary") == {"archived": 3, "uris": uris}

    # The same targets again: every archive is found complete, nothing is downloaded or written.
    emu.clear_requests()
    again = run_dag(load_dag(ARCHIVE), run_conf={"s3_bucket": s3_bucket})
    assert again.state == "success"
    assert again.run_id != dagrun.run_id
    assert [r for r in emu.requests if r.kind == "file"] == []
    assert [r for r in emu.requests if r.method != "GET"] == []
    assert s3_listing(s3_client, s3_bucket) == listing
    assert xcom_value(again, "summary") == {"archived": 3, "uris": uris}


def test_archive_dag_discovers_the_stacks_and_types_to_archive(
    archive_emu, s3_client, s3_bucket, aws_connection, run_dag, monkeypatch
):
    """The discover param: every stack the token sees that matches, with the types it backs up."""
    emu = archive_emu
    emu.add_stack("events-staging", databases=[("mysql", "db")])
    now = datetime.now(UTC)
    mongo = emu.add_backup(
        "events-prod", db_type="mongodb", database_name="events", size=3000, backup_date=now
    )
    ledger = emu.add_backup(
        "events-prod", db_type="postgresql", database_name="ledger", size=2000, backup_date=now
    )
    emu.add_backup("shop-prod", db_type="mysql", database_name="shop", size=1000, backup_date=now)
    emu.add_backup("events-staging", db_type="mysql", database_name="db", size=1000, backup_date=now)
    monkeypatch.delenv("AIRFLOW_VAR_CLOUD66_ARCHIVE_TARGETS", raising=False)

    conf = {"s3_bucket": s3_bucket, "discover": {"include": ["events-*"], "exclude": ["*-staging"]}}
    dagrun = run_dag(load_dag(ARCHIVE), run_conf=conf)

    assert dagrun.state == "success"
    assert xcom_value(dagrun, "targets") == [
        {"stack_id": "events-prod", "db_types": ["mongodb", "postgresql"]}
    ]
    keys = sorted(archive_key(emu, "events-prod", bid)[0] for bid in (mongo, ledger))
    assert sorted(k for k in s3_listing(s3_client, s3_bucket) if k.endswith(".tar")) == keys
    assert xcom_value(dagrun, "summary")["archived"] == 2


def test_archive_dag_one_failed_backup_fails_its_own_tasks_and_then_the_run(
    archive_emu, s3_client, s3_bucket, aws_connection, run_dag, monkeypatch
):
    emu = archive_emu
    now = datetime.now(UTC)
    good_before = emu.add_backup(
        "shop-prod", db_type="mysql", database_name="shop", size=3000, backup_date=now - timedelta(hours=5)
    )
    failed = emu.add_backup(
        "shop-prod",
        db_type="mysql",
        database_name="shop",
        size=0,
        backup_date=now - timedelta(hours=1),
        status=1,
        result="disk full",
    )
    split = emu.add_backup(
        "events-prod", db_type="mongodb", database_name="events", size=5 * MiB + 3, backup_date=now
    )
    set_targets(monkeypatch, [("shop-prod", "mysql"), ("events-prod", "mongodb")])
    dag = load_dag(ARCHIVE)
    for task in dag.tasks:  # keep the DAG's retries, without its 5-minute wait between tries
        task.retry_delay = timedelta(0)

    dagrun = run_dag(dag, run_conf={"s3_bucket": s3_bucket})

    assert dagrun.state == "failed"
    assert states(dagrun) == {
        ("targets", -1): "success",
        (WAIT, 0): "failed",
        (COPY, 0): "upstream_failed",
        (WAIT, 1): "success",
        (COPY, 1): "success",
        ("summary", -1): "failed",
        ("prune_today", -1): "upstream_failed",  # never prune on a day something was not archived
        ("prune", -1): "upstream_failed",
    }
    assert xcom_value(dagrun, WAIT, 0) is None and xcom_value(dagrun, "summary") is None
    key, manifest_key = archive_key(emu, "events-prod", split)
    assert sorted(s3_listing(s3_client, s3_bucket)) == sorted(
        [key, manifest_key, catalogue_key(emu, split, "events-prod")]
    )
    assert read(s3_client, s3_bucket, key) == b"".join(emu.iter_archive("events-prod", split))
    assert xcom_value(dagrun, COPY, 1) == [f"s3://{s3_bucket}/{key}"]
    # Neither the failed backup nor the older good one of that pair was downloaded.
    assert file_requests_of(emu, "shop-prod", failed) == []
    assert file_requests_of(emu, "shop-prod", good_before) == []
    assert file_requests_of(emu, "events-prod", split) != []


def test_archive_dag_prunes_on_the_chosen_weekday_when_retention_is_set(
    archive_emu, s3_client, s3_bucket, aws_connection, run_dag, monkeypatch
):
    """With the ``retention`` param set and the run on ``prune_weekday``, the prune runs after the
    summary: the older archive of the pair goes with its catalogue record; on another day nothing goes."""
    from airflow_provider_c66.transfers.backup_to_s3 import Cloud66BackupToS3Operator

    emu = archive_emu
    now = datetime.now(UTC)
    weekdays = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
    old = emu.add_backup(
        "shop-prod", db_type="mysql", database_name="shop", size=3000, backup_date=now - timedelta(days=3)
    )
    Cloud66BackupToS3Operator(
        task_id="earlier", stack_id="shop-prod", backup_id=old, s3_bucket=s3_bucket, asset_alias=None
    ).execute({})
    old_keys = [*archive_key(emu, "shop-prod", old), catalogue_key(emu, old, "shop-prod")]
    assert sorted(s3_listing(s3_client, s3_bucket)) == sorted(old_keys)
    new = emu.add_backup(
        "shop-prod", db_type="mysql", database_name="shop", size=4000, backup_date=now - timedelta(hours=1)
    )
    set_targets(monkeypatch, [("shop-prod", "mysql")])
    retention = {"keep_last": 1, "keep_monthly": 0}

    # Another weekday: archived, not pruned.
    other_day = weekdays[(now.weekday() + 1) % 7]
    conf = {"s3_bucket": s3_bucket, "retention": retention, "prune_weekday": other_day}
    skipped = run_dag(load_dag(ARCHIVE), run_conf=conf)
    new_keys = [*archive_key(emu, "shop-prod", new), catalogue_key(emu, new, "shop-prod")]
    assert skipped.state == "success"
    assert states(skipped)[("prune", -1)] == "skipped"
    assert sorted(s3_listing(s3_client, s3_bucket)) == sorted(old_keys + new_keys)

    conf["prune_weekday"] = weekdays[now.weekday()]
    dagrun = run_dag(load_dag(ARCHIVE), run_conf=conf)
    if datetime.now(UTC).date() != now.date():
        pytest.skip("the runs crossed midnight (UTC), so the weekday changed under them")

    assert dagrun.state == "success"
    assert states(dagrun) == {
        ("targets", -1): "success",
        (WAIT, 0): "success",
        (COPY, 0): "success",
        ("summary", -1): "success",
        ("prune_today", -1): "success",
        ("prune", -1): "success",
    }
    assert sorted(s3_listing(s3_client, s3_bucket)) == sorted(new_keys)
    report = xcom_value(dagrun, "prune")
    assert [(r["backup_id"], r["reasons"]) for r in report["kept"]] == [(new, ["last 1"])]
    assert [(r["backup_id"], r["catalog"]) for r in report["deleted"]] == [(old, old_keys[2])]
    assert report["locked"] == [] and report["skipped"] == [] and report["dry_run"] is False


def test_archive_dag_refuses_an_unknown_retention_rule_before_pruning(
    archive_emu, s3_client, s3_bucket, aws_connection, run_dag, monkeypatch
):
    emu = archive_emu
    bid = emu.add_backup(
        "shop-prod", db_type="mysql", database_name="shop", size=3000, backup_date=datetime.now(UTC)
    )
    set_targets(monkeypatch, [("shop-prod", "mysql")])
    conf = {"s3_bucket": s3_bucket, "retention": {"keep_hourly": 24}}
    dagrun = run_dag(load_dag(ARCHIVE), run_conf=conf)
    assert dagrun.state == "failed"
    assert states(dagrun)[("prune_today", -1)] == "failed"
    assert states(dagrun)[("prune", -1)] == "upstream_failed"
    key, manifest_key = archive_key(emu, "shop-prod", bid)
    assert sorted(s3_listing(s3_client, s3_bucket)) == sorted(
        [key, manifest_key, catalogue_key(emu, bid, "shop-prod")]
    )


def test_setup_dag_posts_the_chosen_settings_and_returns_the_first_backup(cloud66_emulator_factory, run_dag):
    # The DAG's operator polls every 150 s (not configurable by the DAG): with no delay the new backup
    # is there at the first poll after the POST, so the run's length does not depend on timing.
    emu = cloud66_emulator_factory(stacks=(), backup_delay=0)
    emu.add_stack("shop-prod", databases=[("mysql", "shop"), ("redis", "cache")])
    old = [
        emu.add_backup("shop-prod", db_type="mysql", database_name="shop", backup_date=OLD),
        emu.add_backup("shop-prod", db_type="redis", database_name="cache", backup_date=OLD),
    ]
    conf = {
        "stack_id": "shop-prod",
        "db_type": "mysql",
        "frequency": "15 */4 * * *",
        "keep_count": 14,
        "gzip": False,
        "excluded_tables": "audit_log,sessions",
        "run_on_replica_server": False,
    }

    dagrun = run_dag(load_dag(SETUP), run_conf=conf)

    assert dagrun.state == "success"
    assert states(dagrun) == {("create_backup_task", -1): "success"}
    path = "/api/3/stacks/shop-prod/backups.json"
    (post,) = [r for r in emu.requests if r.method == "POST"]
    assert post.path == path
    assert post.json == {
        "db_type": "mysql",
        "frequency": "15 */4 * * *",
        "keep_count": 14,
        "gzip": False,
        "excluded_tables": "audit_log,sessions",
        "run_on_replica_server": False,
    }
    (created,) = [b for b in emu.backups("shop-prod") if b["id"] not in old]
    assert (created["db_type"], created["database_name"]) == ("mysql", "shop")
    assert xcom_value(dagrun, "create_backup_task") == [record(emu, created["id"], "shop-prod")]


def test_setup_dag_defaults_back_up_every_database(cloud66_emulator_factory, run_dag):
    emu = cloud66_emulator_factory(stacks=(), backup_delay=0)
    emu.add_stack("shop-prod", databases=[("mysql", "shop"), ("redis", "cache")])
    old = [
        emu.add_backup("shop-prod", db_type="mysql", database_name="shop", backup_date=OLD),
        emu.add_backup("shop-prod", db_type="redis", database_name="cache", backup_date=OLD),
    ]

    dagrun = run_dag(load_dag(SETUP), run_conf={"stack_id": "shop-prod"})

    assert dagrun.state == "success"
    (post,) = [r for r in emu.requests if r.method == "POST"]
    # The empty excluded_tables param renders to None: the field is left out, not sent empty.
    assert post.json == {
        "db_type": "all",
        "frequency": "0 */6 * * *",
        "keep_count": 28,
        "gzip": True,
        "run_on_replica_server": True,
    }
    created = {b["db_type"]: b["id"] for b in emu.backups("shop-prod") if b["id"] not in old}
    assert sorted(created) == ["mysql", "redis"]
    assert xcom_value(dagrun, "create_backup_task") == [
        record(emu, created["mysql"], "shop-prod"),
        record(emu, created["redis"], "shop-prod"),
    ]


@pytest.mark.timeout(120)  # the DAG's sensor waits up to 6 h: a missed backup fails here, not hangs
def test_restore_dag_imports_the_object_and_waits_for_the_imported_backup(
    cloud66_emulator_factory, s3_server, s3_client, s3_bucket, aws_connection, run_dag
):
    # The sensor polls every 60 s; with no delay the import's backup is there at its first check.
    emu = cloud66_emulator_factory(stacks=(), backup_delay=0)
    emu.add_stack("shop-prod", databases=[("mysql", "shop")])
    # Already in group 3 before the run (made an hour ago): not the imported one.
    earlier = emu.add_backup(
        "shop-prod",
        db_type="mysql",
        database_name="shop",
        group=3,
        backup_date=datetime.now(UTC) - timedelta(hours=1),
    )
    emu.add_backup("shop-prod", db_type="mysql", database_name="shop", group=4, backup_date=OLD)
    key = "cloud66/shop-prod/mysql/shop/2026/01/01/12/shop.tar"
    body = os.urandom(64 * 1024)
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=body)
    conf = {"s3_bucket": s3_bucket, "s3_key": key, "stack_id": "shop-prod", "group": 3, "db_type": "mysql"}

    started = int(time.time())
    if HITL_IN_DAG_TEST:
        with a_person_answers("Approve") as shown:
            dagrun = run_dag(load_dag(RESTORE), run_conf=conf)
    else:  # the approval is marked done, so the rest of the restore is still tested here
        dagrun = run_dag(load_dag(RESTORE), run_conf=conf, mark_success_pattern="approve_restore")
    finished = int(time.time()) + 1

    assert dagrun.state == "success"
    assert states(dagrun) == {
        ("describe_archive", -1): "success",
        ("approve_restore", -1): "success",
        ("import_from_s3", -1): "success",
        ("wait_for_imported_backup", -1): "success",
    }
    written = s3_client.head_object(Bucket=s3_bucket, Key=key)["LastModified"].isoformat()
    assert not HITL_IN_DAG_TEST or shown == {
        "task_id": "approve_restore",
        "subject": "Restore into Cloud 66 stack shop-prod?",
        "body": "Importing writes this backup into the live stack **shop-prod** (backup group 3, mysql).\n\n"
        f"- Archive: `s3://{s3_bucket}/{key}`\n"
        f"- Size: {64 * 1024:,} bytes\n"
        f"- Written to S3: {written}\n"
        "- From: no manifest beside it: not an archive this package wrote",
        "options": ["Approve", "Reject"],
    }
    (post,) = [r for r in emu.requests if r.method == "POST"]
    assert post.path == "/api/3/stacks/shop-prod/backups.json"
    assert sorted(post.json) == ["db_type", "group", "remote_url"]
    assert (post.json["group"], post.json["db_type"]) == (3, "mysql")
    url = urlsplit(post.json["remote_url"])
    assert f"{url.scheme}://{url.netloc}" == s3_server
    assert url.path == f"/{s3_bucket}/{key}"
    query = parse_qs(url.query)
    # SigV4 query auth (S3 refuses SigV2 for SSE-KMS objects), for the operator's default 6 hours.
    assert sorted(query) == [
        "X-Amz-Algorithm",
        "X-Amz-Credential",
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-Signature",
        "X-Amz-SignedHeaders",
    ]
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Signature"][0]
    assert query["X-Amz-Credential"][0].startswith("testing/") and query["X-Amz-Credential"][0].endswith(
        "/us-east-1/s3/aws4_request"
    )
    assert query["X-Amz-Expires"] == [str(6 * 3600)]
    signed_at = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert started - 1 <= signed_at.timestamp() <= finished + 1
    with urllib.request.urlopen(post.json["remote_url"], timeout=30) as response:
        assert response.read() == body
    assert xcom_value(dagrun, "import_from_s3") == "Your external backup queued for upload"

    imported = max(b["id"] for b in emu.backups("shop-prod"))
    assert imported != earlier
    assert emu.group_of("shop-prod", imported) == 3
    assert xcom_value(dagrun, "wait_for_imported_backup") == record(emu, imported, "shop-prod")


@pytest.mark.skipif(not HITL_IN_DAG_TEST, reason=NO_HITL_IN_DAG_TEST)
def test_restore_dag_rejected_ends_without_calling_cloud66(
    cloud66_emulator_factory, s3_client, s3_bucket, aws_connection, run_dag
):
    emu = cloud66_emulator_factory(stacks=(), backup_delay=0)
    emu.add_stack("shop-prod", databases=[("mysql", "shop")])
    bid = emu.add_backup("shop-prod", db_type="mysql", database_name="shop", size=3000, backup_date=OLD)
    # An archive this package wrote: the approver is shown the backup its manifest names.
    prefix = f"cloud66/shop-prod/mysql/shop/2026/01/01/{bid}/"
    s3_client.put_object(Bucket=s3_bucket, Key=prefix + "shop.tar", Body=b"x" * 3000)
    raw = next(r for r in emu.backups("shop-prod") if r["id"] == bid)
    manifest = {"format": 1, "stack_id": "shop-prod", "backup": raw, "objects": []}
    s3_client.put_object(Bucket=s3_bucket, Key=prefix + "manifest.json", Body=json.dumps(manifest).encode())
    conf = {"s3_bucket": s3_bucket, "s3_key": prefix + "shop.tar", "stack_id": "shop-prod", "group": 1}
    emu.clear_requests()

    with a_person_answers("Reject") as shown:
        dagrun = run_dag(load_dag(RESTORE), run_conf=conf)

    assert dagrun.state == "success"  # a person said no: nothing failed
    assert states(dagrun) == {
        ("describe_archive", -1): "success",
        ("approve_restore", -1): "success",
        ("import_from_s3", -1): "skipped",
        ("wait_for_imported_backup", -1): "skipped",
    }
    assert emu.requests == []  # not one call to Cloud 66
    assert shown["body"].endswith(
        f"- From: backup {bid} of shop-prod: mysql database shop, taken {raw['backup_date_iso']}"
    )
    assert "- Size: 3,000 bytes\n" in shown["body"]
    from airflow.models.hitl import HITLDetail
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        answers = [
            (d.task_instance.run_id, d.chosen_options, d.responded_by["name"])
            for d in session.scalars(select(HITLDetail))
            if d.task_instance.run_id == dagrun.run_id
        ]
    assert answers == [(dagrun.run_id, ["Reject"], "On-call engineer")]


def test_verify_dag_verifies_the_archives_its_asset_events_name_without_an_api_call(
    archive_emu, s3_client, s3_bucket, aws_connection, run_dag, monkeypatch
):
    import airflow.models.dagrun as dagrun_module
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    emu = archive_emu
    now = datetime.now(UTC)
    sizes = {("shop-prod", "mysql"): MiB + 17, ("events-prod", "mongodb"): 6 * MiB + 5}  # the second is split
    wanted = {
        (stack, db_type): emu.add_backup(
            stack, db_type=db_type, database_name=name, size=sizes[stack, db_type], backup_date=now
        )
        for stack, db_type, name in (("shop-prod", "mysql", "shop"), ("events-prod", "mongodb", "events"))
    }
    set_targets(monkeypatch, list(wanted))
    archived = run_dag(load_dag(ARCHIVE), run_conf={"s3_bucket": s3_bucket})
    assert archived.state == "success"

    # Each object's event carries the archive, as Airflow stored it.
    expected, manifests = {}, {}
    for (stack, db_type), bid in wanted.items():
        key, manifest_key = archive_key(emu, stack, bid)
        raw = next(r for r in emu.backups(stack) if r["id"] == bid)
        manifests[f"s3://{s3_bucket}/{manifest_key}"] = (f"s3://{s3_bucket}/{key}", stack, bid)
        expected[f"s3://{s3_bucket}/{key}"] = {
            "stack_id": stack,
            "backup_id": bid,
            "db_type": db_type,
            "database_name": raw["database_name"],
            "backup_date": raw["backup_date_iso"],
            "size": sizes[stack, db_type],
            "sha256": emu.archive_sha256(stack, bid),
            "manifest_key": manifest_key,
        }
    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == archived.run_id)).all()
        assert {e.asset.uri: e.extra for e in events} == expected
        assert len(events) == 2

    # The asset-triggered run: the scheduler attaches the events it consumes to the new run
    # (DagRun.consumed_asset_events); here the test does that one step, and Airflow the rest.
    create = dagrun_module.get_or_create_dagrun

    def consuming_the_events(**kwargs: Any) -> Any:
        dagrun = create(**kwargs)
        session = kwargs["session"]
        dagrun.consumed_asset_events.extend(
            session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == archived.run_id))
        )
        session.commit()
        return dagrun

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", consuming_the_events)
    emu.clear_requests()
    verified = run_dag(load_dag(VERIFY))

    assert verified.state == "success"
    assert emu.requests == []  # everything came from the events and S3
    uris = xcom_value(verified, "new_archives")
    assert sorted(uris) == sorted(manifests)
    for index, uri in enumerate(uris):
        object_uri, stack, bid = manifests[uri]
        assert xcom_value(verified, "verify", index) == {
            "manifest": uri,
            "objects": 1,
            "bytes": emu.archive_size(stack, bid),
            "sha256": {object_uri: emu.archive_sha256(stack, bid)},
        }

    # A manual run has no events: nothing to verify, and nothing fails.
    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", create)
    manual = run_dag(load_dag(VERIFY))
    assert manual.state == "success"
    assert xcom_value(manual, "new_archives") == []
    assert states(manual) == {("new_archives", -1): "success", ("verify", -1): "skipped"}


def test_manifests_of_names_each_archive_once_and_falls_back_to_the_object():
    module = importlib.util.module_from_spec(
        spec := importlib.util.spec_from_file_location("verify_dag", DAG_FOLDER / f"{VERIFY}.py")
    )
    assert spec.loader is not None
    spec.loader.exec_module(module)

    class Event:
        def __init__(self, uri: str, extra: dict[str, Any] | None) -> None:
            self.asset = type("AssetRef", (), {"uri": uri})()
            self.extra = extra

    events = [
        Event("s3://lake/a/1/db.tar-aa", {"manifest_key": "a/1/manifest.json"}),  # join_parts=False: one
        Event("s3://lake/a/1/db.tar-ab", {"manifest_key": "a/1/manifest.json"}),  # event per object
        Event("s3://lake/b/2/other.tar", None),  # not this operator's: the object itself
        Event("s3://lake/c/3/x.tar", {"manifest_key": ""}),
    ]
    assert module.manifests_of(events) == [
        "s3://lake/a/1/manifest.json",
        "s3://lake/b/2/other.tar",
        "s3://lake/c/3/x.tar",
    ]


# --- 4. the demo ----------------------------------------------------------------------------------
DEMO_TARGETS = (
    "shop-prod/mysql/shop",
    "shop-prod/redis/cache",
    "blog-prod/postgresql/blog",
    "events-prod/mongodb/events",
)


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "CLOUD66_"))}
    env["AIRFLOW_HOME"] = str(tmp_path / "airflow-home")
    result = subprocess.run(
        [sys.executable, "scripts/demo.py", "--fast", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert (tmp_path / "airflow-home" / "airflow.db").is_file()
    return result


def test_demo_reports_where_things_run_each_archive_and_a_table_and_logs_the_rest(tmp_path):
    log_file = tmp_path / "demo.log"
    result = run_demo(tmp_path, "--show-manifest", "--log-file", str(log_file))
    out = result.stdout
    assert result.stderr == ""
    assert "\x1b" not in out  # no terminal colour codes
    assert "HTTP/1.1" not in out and "[warning" not in out  # no access log, no Airflow internals
    lines = out.splitlines()
    assert lines[0].startswith("Cloud 66     the package's emulator at http://127.0.0.1:")
    assert lines[1].startswith("S3           moto at http://127.0.0.1:")
    assert lines[2].startswith("Airflow      3.") and lines[2].endswith("dag.test() of cloud66_archive_to_s3")
    assert (
        lines[3]
        == "Targets      4: shop-prod/mysql, shop-prod/redis, blog-prod/postgresql, events-prod/mongodb"
    )
    archived = [line.split()[1] for line in lines if line.startswith("  archived  ")]
    assert sorted(archived) == sorted(DEMO_TARGETS)
    header = next(i for i, line in enumerate(lines) if line.startswith("stack "))
    assert [c.strip() for c in lines[header].split("  ") if c.strip()] == [
        "stack",
        "db type",
        "database",
        "key",
        "size",
        "MiB/s",
        "sha256",
        "byte-exact",
    ]
    rows = [line.split() for line in lines[header + 1 : header + 5]]
    assert ["/".join(row[:3]) for row in rows] == list(DEMO_TARGETS)
    for row in rows:
        stack, db_type, database, key, size, unit, rate, sha, exact = row
        assert key.startswith(f"cloud66/{stack}/{db_type}/{database}/") and key.endswith(".tar")
        # A copy task's rate is shown when it made that archive alone (shop-prod's task made two).
        assert (
            unit == "MiB" and float(size) > 0 and (float(rate) > 0 if stack != "shop-prod" else rate == "-")
        )
        assert len(sha) == 12 and exact == "yes"
    # --show-manifest: the first archive's manifest, whole, as JSON
    start = next(i for i, line in enumerate(lines) if line.endswith("/manifest.json:"))
    end = lines.index("}", start)
    manifest = json.loads("\n".join(lines[start + 1 : end + 1]))
    assert lines[start] == f"{rows[0][3].rsplit('/', 1)[0]}/manifest.json:"
    assert manifest["objects"][0]["key"] == rows[0][3]
    assert manifest["objects"][0]["sha256"].startswith(rows[0][7])
    assert lines[-2:] == ["OK: 4 archives complete and byte-exact.", f"Full log: {log_file}"]
    assert "FAIL" not in out
    logged = log_file.read_text()
    assert '"PUT /demo-lake-' in logged and "HTTP/1.1" in logged  # the S3 server's access log went here


def test_demo_verbose_shows_everything_on_the_terminal(tmp_path):
    result = run_demo(tmp_path, "--verbose")
    output = result.stdout + result.stderr
    assert "HTTP/1.1" in output  # the S3 server's access log
    assert "Full log:" not in output
    assert result.stdout.splitlines()[-1] == "OK: 4 archives complete and byte-exact."
