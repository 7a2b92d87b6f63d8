"""Helpers the test modules share: what S3 holds, and what an Airflow run stored."""

from __future__ import annotations

from typing import Any


# --- S3 ---------------------------------------------------------------------------------------------
def read(s3_client: Any, bucket: str, key: str) -> bytes:
    """The object's bytes."""
    return bytes(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read())


def keys(s3_client: Any, bucket: str) -> list[str]:
    """Every key in the bucket, sorted."""
    return sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket).get("Contents", []))


def open_uploads(s3_client: Any, bucket: str) -> list[Any]:
    """The bucket's multipart uploads that are neither completed nor aborted."""
    return list(s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


# --- Airflow ----------------------------------------------------------------------------------------
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
