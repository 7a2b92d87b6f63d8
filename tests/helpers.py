"""Helpers the test modules share: what S3 holds, and what an Airflow run stored."""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the project's checkout: README.md, example_dags/ ...


# --- S3 ---------------------------------------------------------------------------------------------
def load_benchmark(name: str) -> ModuleType:
    """A module of benchmarks/ (not a package, so loaded by path)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read(s3_client: Any, bucket: str, key: str) -> bytes:
    """The object's bytes."""
    return bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())


def keys(s3_client: Any, bucket: str) -> list[str]:
    """Every key in the bucket, sorted."""
    return sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", []))


def open_uploads(s3_client: Any, bucket: str) -> list[Any]:
    """The bucket's multipart uploads that are neither completed nor aborted."""
    return list(s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def assert_nothing_left(s3_client: Any, bucket: str, key: str | None = None) -> None:
    """No object and no open multipart upload in the bucket (and ``key``, if given, answers HEAD with 404)."""
    from botocore.exceptions import ClientError

    assert keys(s3_client, bucket) == []
    assert open_uploads(s3_client, bucket) == []
    if key is not None:
        try:
            s3_client.head_object(Bucket=bucket, Key=key)
        except ClientError:
            return
        raise AssertionError(f"{key} exists")


def archive_of(emu: Any, s3_client: Any, bucket: str, bid: int) -> tuple[bytes, dict[str, Any]]:
    """The archive object's bytes and the manifest, checked to be the only objects there with the
    catalogue entry."""
    from tests.s3_fixtures import catalogue_key

    (manifest_key,) = [k for k in keys(s3_client, bucket) if k.endswith("manifest.json")]
    manifest = json.loads(s3_client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    (entry,) = manifest["objects"]
    data = s3_client.get_object(Bucket=bucket, Key=entry["key"])["Body"].read()
    assert keys(s3_client, bucket) == sorted([manifest_key, entry["key"], catalogue_key(emu, bid)])
    return data, manifest


def failing_on_call(operation: str, on_call: int) -> Callable[..., None]:
    """A botocore ``before-call`` handler failing its ``on_call``-th call as S3 would (an InternalError).

    One handler counts across every client it is registered on.
    """
    from botocore.exceptions import ClientError

    calls = [0]

    def handler(**_: Any) -> None:
        calls[0] += 1
        if calls[0] == on_call:
            error = {"Error": {"Code": "InternalError", "Message": "injected failure"}}
            raise ClientError(error, operation)  # type: ignore[arg-type]

    return handler


# --- the emulator -----------------------------------------------------------------------------------
LIST_PATH = "/api/3/stacks/stack-1/backups.json"


def record(emu: Any, backup_id: int, stack: str = "stack-1") -> dict[str, Any]:
    """What the XCom value of a backup must be: the API's record as ``Backup.to_dict()`` writes it."""
    from airflow_provider_c66.models import Backup

    raw = next(r for r in emu.backups(stack) if r["id"] == backup_id)
    return Backup.from_api(raw).to_dict()


def list_gets(emu: Any, path: str = LIST_PATH) -> list[Any]:
    """The emulator's GETs of one list path (the stack's backups by default)."""
    return [r for r in emu.requests if r.method == "GET" and r.path == path]


def when_requests(
    emu: Any, count: int, action: Callable[[], object], method: str = "GET"
) -> threading.Thread:
    """Run ``action`` as soon as the emulator has answered ``count`` requests of ``method``."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(r.method == method for r in emu.requests) >= count:
                action()
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# --- Airflow ----------------------------------------------------------------------------------------
NOW = datetime.now(UTC).replace(microsecond=0)
RUN = NOW - timedelta(hours=1)  # the logical date (and data interval start) of the sensor's test runs


class Failures:
    """Keeps the exceptions a task failed with (``on_failure_callback`` gets none on Airflow 3.1)."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []

    def wrap(self, cls: type) -> type:
        """``cls`` recording what its ``execute`` and ``execute_complete`` raise (deferral aside)."""
        errors = self.errors

        def recorded(method: Callable[..., Any]) -> Callable[..., Any]:
            def call(self: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    return method(self, *args, **kwargs)
                except Exception as exc:
                    if type(exc).__name__ not in ("TaskDeferred", "AirflowRescheduleException"):
                        errors.append(exc)
                    raise

            return call

        methods = {"execute": recorded(cls.execute)}
        if hasattr(cls, "execute_complete"):
            methods["execute_complete"] = recorded(cls.execute_complete)
        return type(cls.__name__, (cls,), methods)

    @property
    def only(self) -> BaseException:
        (error,) = self.errors
        return error


def run_sensor(
    run_dag: Any,
    dag_id: str,
    logical_date: datetime | None = RUN,
    failures: Failures | None = None,
    **kwargs: Any,
) -> Any:
    """A DAG of one ``Cloud66BackupSensor`` (task ``wait``, stack ``stack-1`` unless given), run."""
    from airflow.sdk import DAG

    from airflow_provider_c66.sensors.backups import Cloud66BackupSensor

    sensor_class = failures.wrap(Cloud66BackupSensor) if failures else Cloud66BackupSensor
    with DAG(dag_id, schedule=None, params=kwargs.pop("params", {})) as dag:
        sensor_class(task_id="wait", stack_id=kwargs.pop("stack_id", "stack-1"), **kwargs)
    return run_dag(dag, logical_date=logical_date)


def xcom_value(dagrun: Any, task_id: str, map_index: int = -1) -> Any:
    """The return value Airflow stored for one (possibly mapped) task instance, or None."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(
            run_id=dagrun.run_id,
            dag_ids=dagrun.dag_id,
            task_ids=task_id,
            map_indexes=map_index,
            key="return_value",
        )
        row = session.scalars(query).first()
        return None if row is None else XComModel.deserialize_value(row)


def task_instance(dagrun: Any, task_id: str) -> Any:
    """The run's task instance of ``task_id``."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return dagrun.get_task_instance(task_id, session=session)


def states(dagrun: Any) -> dict[tuple[str, int], str]:
    """Every task instance of the run: ``(task_id, map_index) -> state``."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            (ti.task_id, ti.map_index): str(ti.state) for ti in dagrun.get_task_instances(session=session)
        }
