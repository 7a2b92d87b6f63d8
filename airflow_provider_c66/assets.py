"""The ``cloud66`` asset URI scheme and this package's lineage: what a Cloud 66 backup is called in
Airflow's assets and in OpenLineage, in one place.

A backup is ``cloud66://<API host>/<stack>/<db_type>/<database>/<backup id>``; the OpenLineage
dataset is namespace ``cloud66://<API host>``, name ``<stack>/<db_type>/<database>/<backup id>``. A
stack (what the create and import operators change) is ``cloud66://<API host>/<stack>``. Airflow and
OpenLineage are imported only inside the functions that need them, never at DAG parse time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, quote, unquote, urlsplit

from airflow_provider_c66.models import Backup

if TYPE_CHECKING:
    from airflow.providers.common.compat.openlineage.facet import Dataset as OpenLineageDataset

SCHEME = "cloud66"


def namespace(api_url: str) -> str:
    """``cloud66://<host[:port]>`` of the API the connection points at."""
    host = urlsplit(api_url).netloc
    if not host:
        raise ValueError(f"the Cloud 66 API URL has no host: {api_url!r:.80}")
    return f"{SCHEME}://{host}"


def backup_name(stack_id: str, backup: Backup) -> str:
    """``<stack>/<db_type>/<database>/<backup id>``, each part URL-quoted (a name may hold ``/``)."""
    parts = (stack_id, backup.db_type, backup.database_name, str(backup.id))
    return "/".join(quote(part, safe="") for part in parts)


def stack_name(stack_id: str, db_type: str | None = None) -> str:
    """``<stack>`` (or ``<stack>/<db_type>``): the dataset an import or a new backup task changes."""
    return "/".join(quote(part, safe="") for part in (stack_id, *([db_type] if db_type else [])))


# --- the asset URI scheme, registered in get_provider_info ("asset-uris") -------------------------
def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Airflow's check of a ``cloud66://`` asset URI: a host, then a stack and at most three more parts
    (db type, database, backup id, the last digits only)."""
    if not uri.netloc:
        raise ValueError("a cloud66:// URI names the API host: cloud66://<host>/<stack>/...")
    parts = [unquote(p) for p in uri.path.strip("/").split("/")] if uri.path.strip("/") else []
    if not 1 <= len(parts) <= 4 or not all(parts):
        raise ValueError(
            "a cloud66:// URI is cloud66://<host>/<stack>[/<db_type>[/<database>[/<backup id>]]]"
        )
    if len(parts) == 4 and not parts[3].isdigit():
        raise ValueError(f"a cloud66:// URI's backup id is a number, got {parts[3]!r:.40}")
    return uri


def create_asset(
    *,
    host: str,
    stack_id: str,
    db_type: str | None = None,
    database_name: str | None = None,
    backup_id: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Any:
    """The asset of a backup (or of a stack, without the rest); the factory hook lineage calls."""
    from airflow.providers.common.compat.sdk import Asset

    parts = [
        p for p in (stack_id, db_type, database_name, None if backup_id is None else str(backup_id)) if p
    ]
    return Asset(uri=f"{SCHEME}://{host}/" + "/".join(quote(p, safe="") for p in parts), extra=extra)


def convert_asset_to_openlineage(asset: Any, lineage_context: Any) -> OpenLineageDataset:
    """The OpenLineage dataset of a ``cloud66://`` asset: namespace ``cloud66://<host>``, name the path."""
    from airflow.providers.common.compat.openlineage.facet import Dataset as OpenLineageDataset

    uri = urlsplit(asset.uri)
    return OpenLineageDataset(namespace=f"{SCHEME}://{uri.netloc}", name=uri.path.strip("/"))


# --- OpenLineage of the operators that change a stack ---------------------------------------------
def stack_lineage(api_url: str, stack_id: str, *, s3_input: tuple[str, str] | None = None) -> Any:
    """``OperatorLineage`` of a task that changed a stack (a backup task created, a backup imported):
    the stack out, and the S3 object it imported in. A signed URL an import was given is a secret,
    so it is never an input."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    inputs = [Dataset(namespace=f"s3://{s3_input[0]}", name=s3_input[1])] if s3_input else []
    return OperatorLineage(
        inputs=inputs, outputs=[Dataset(namespace=namespace(api_url), name=stack_name(stack_id))]
    )
