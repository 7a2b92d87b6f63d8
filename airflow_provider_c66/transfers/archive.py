"""What an archived backup looks like in S3: key layout, safe names, the manifest.

Pure functions with no Airflow and no I/O, so the layout can be tested (and read) on its own.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from airflow_provider_c66 import __version__
from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.models import Backup

DEFAULT_KEY_PREFIX = "cloud66/{stack_id}/{db_type}/{database_name}/{YYYY}/{MM}/{DD}/{backup_id}/"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
# One small record per completed archive, under its own prefix, so the lake can be read as a table.
DEFAULT_CATALOG_PREFIX = "cloud66/_catalog/"
CATALOG_FORMAT = 1
# Object metadata that marks an object as written by this package for one backup: a re-run may
# replace such an object (an interrupted earlier try), never someone else's.
META_STACK = "c66-stack-id"
META_BACKUP = "c66-backup-id"

STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER",
    "GLACIER_IR",
    "DEEP_ARCHIVE",
    "REDUCED_REDUNDANCY",
)
SSE_MODES = ("AES256", "aws:kms", "aws:kms:dsse")
PLACEHOLDERS = ("stack_id", "db_type", "database_name", "backup_id", "YYYY", "MM", "DD")

_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def safe_segment(value: str) -> str:
    """One key segment from text the API controls: no ``/``, no ``..``, no control characters."""
    cleaned = _UNSAFE.sub("_", value).strip(".")
    return cleaned or "_"


def key_prefix(template: object, backup: Backup, stack_id: str, field: str = "s3_key_prefix") -> str:
    """Fill the prefix template's ``{placeholders}`` with the backup's (sanitised) values.

    The result never starts with ``/``, never contains an empty, ``.`` or ``..`` segment, and ends in ``/``.
    """
    if not isinstance(template, str) or not template.strip():
        raise Cloud66InputError(field, f"must be a non-empty key prefix, got {template!r:.80}")
    check_prefix_template(template, field)
    date = backup.backup_date.astimezone(UTC)
    values = {
        "stack_id": safe_segment(stack_id),
        "db_type": safe_segment(backup.db_type),
        "database_name": safe_segment(backup.database_name or "default"),
        "backup_id": str(backup.id),
        "YYYY": f"{date.year:04d}",
        "MM": f"{date.month:02d}",
        "DD": f"{date.day:02d}",
    }
    prefix = template.strip().format_map(values)
    return prefix if prefix.endswith("/") else prefix + "/"


def check_prefix_template(template: str, field: str = "s3_key_prefix") -> None:
    """Refuse a prefix that could escape its place in the bucket, before anything is sent."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise Cloud66InputError(field, f"has unbalanced braces ({exc})") from None
    unknown = sorted({n for n in names if n not in PLACEHOLDERS})
    if unknown:
        raise Cloud66InputError(field, f"knows the placeholders {', '.join(PLACEHOLDERS)}; got {unknown}")
    if template.startswith("/") or "\\" in template or any(ord(c) < 32 or ord(c) == 127 for c in template):
        raise Cloud66InputError(
            field, f"must be a relative key without control characters, got {template!r:.80}"
        )
    segments = template.rstrip("/").split("/")
    if any(seg in ("", ".", "..") for seg in segments):
        raise Cloud66InputError(field, f"must not contain empty, '.' or '..' segments, got {template!r:.80}")
    if len(template) > 700:
        raise Cloud66InputError(field, "must be at most 700 characters")
    if "backup_id" not in names:
        raise Cloud66InputError(
            field,
            f"must contain {{backup_id}}, or two backups would be written to the same keys; got {template!r:.80}",
        )


def object_name(file_name: str) -> str:
    """An object's name from a file name the API gave: its last segment, made safe."""
    return safe_segment(file_name.replace("\\", "/").rsplit("/", 1)[-1])


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


@dataclass(frozen=True)
class ArchivedObject:
    """One object of an archive and the source files whose bytes it holds, in order."""

    key: str
    size: int
    etag: str
    sha256: str
    sources: tuple[tuple[str, str, int], ...]  # (file id, file name, size)
    crc32: str | None = None  # the whole object's CRC32, base64 as S3 writes it
    s3_checksum: str | None = None  # what S3 stored, e.g. "CRC32 hvthyA== FULL_OBJECT"; None if nothing

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "size": self.size,
            "etag": self.etag,
            "sha256": self.sha256,
            "crc32": self.crc32,
            "s3_checksum": self.s3_checksum,
            "sources": [{"file_id": fid, "name": name, "size": size} for fid, name, size in self.sources],
        }


def build_manifest(
    stack_id: str, backup: Backup, objects: Sequence[ArchivedObject], *, joined: bool
) -> bytes:
    """The manifest, written last: its presence marks a complete archive."""
    document = {
        "format": MANIFEST_FORMAT,
        "package": "airflow-provider-c66",
        "package_version": __version__,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "stack_id": stack_id,
        "backup": backup.to_dict(),
        "join_parts": joined,
        "sources": [
            {"file_id": fid, "name": name, "size": size} for obj in objects for fid, name, size in obj.sources
        ],
        "objects": [obj.to_dict() for obj in objects],
        "total_size": sum(obj.size for obj in objects),
        "sha256": objects[0].sha256 if joined and len(objects) == 1 else None,
    }
    return json.dumps(document, indent=2, sort_keys=True).encode()


def manifest_matches(document: Mapping[str, Any], stack_id: str, backup_id: int, keys: Sequence[str]) -> bool:
    """Whether a manifest found in S3 describes this very archive (same stack, backup and keys)."""
    try:
        return (
            document.get("format") == MANIFEST_FORMAT
            and document.get("stack_id") == stack_id
            and document["backup"]["id"] == backup_id
            and [obj["key"] for obj in document["objects"]] == list(keys)
        )
    except (KeyError, TypeError):
        return False


def catalog_key(catalog_prefix: str, stack_id: str, backup: Backup) -> str:
    """Where an archive's catalogue record goes: one object per archive, so concurrent archives never
    write the same key, grouped as the archives are (stack, db type, database) and sorted by date."""
    date = backup.backup_date.astimezone(UTC)
    return (
        f"{catalog_prefix}{safe_segment(stack_id)}/{safe_segment(backup.db_type)}/"
        f"{safe_segment(backup.database_name or 'default')}/{date:%Y-%m-%d}-{backup.id}.json"
    )


def check_catalog_prefix(value: object, field: str = "catalog_prefix") -> str:
    """The catalogue's prefix: fixed (every archive shares it), relative, ending in ``/``."""
    return fixed_prefix(value, field, optional=True)


def fixed_prefix(value: object, field: str, *, optional: bool = False) -> str:
    """A fixed, relative key prefix ending in ``/`` (no placeholders), or :class:`Cloud66InputError`."""
    if not isinstance(value, str) or not value.strip():
        allowed = "a non-empty key prefix such as 'cloud66/'" + (" or None" if optional else "")
        raise Cloud66InputError(field, f"must be {allowed}, got {value!r:.80}")
    prefix = value.strip()
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    if "{" in prefix or "}" in prefix:
        raise Cloud66InputError(
            field, f"takes no placeholders (a fixed prefix such as 'cloud66/'), got {value!r:.80}"
        )
    if prefix.startswith("/") or "\\" in prefix or any(ord(c) < 32 or ord(c) == 127 for c in prefix):
        raise Cloud66InputError(
            field, f"must be a relative key without control characters, got {value!r:.80}"
        )
    if any(seg in ("", ".", "..") for seg in prefix.rstrip("/").split("/")):
        raise Cloud66InputError(field, f"must not contain empty, '.' or '..' segments, got {value!r:.80}")
    if len(prefix) > 700:
        raise Cloud66InputError(field, "must be at most 700 characters")
    return prefix


def build_catalog_record(
    stack_id: str,
    backup: Backup,
    bucket: str,
    manifest_key: str,
    objects: Sequence[ArchivedObject],
    *,
    storage_class: str,
    lock_mode: str | None,
    lock_retain_until: datetime | None,
) -> bytes:
    """One archive as one line of JSON (a JSON Lines file of one row): Athena's JSON SerDe and
    DuckDB's ``read_json`` read the whole catalogue prefix as a table. Flat fields, one array."""
    record = {
        "format": CATALOG_FORMAT,
        "stack_id": stack_id,
        "db_type": backup.db_type,
        "database_name": backup.database_name,
        "backup_id": backup.id,
        "backup_date": backup.backup_date.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "bucket": bucket,
        "manifest_key": manifest_key,
        "objects": [{"key": o.key, "size": o.size, "sha256": o.sha256} for o in objects],
        "total_size": sum(o.size for o in objects),
        "storage_class": storage_class,
        "lock_mode": lock_mode,
        "lock_retain_until": (
            lock_retain_until.astimezone(UTC).isoformat().replace("+00:00", "Z")
            if lock_retain_until
            else None
        ),
        "package_version": __version__,
        "archived_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def asset_extra(
    stack_id: str, backup: Backup, manifest_key: str, manifest: Mapping[str, Any], key: str
) -> dict[str, Any]:
    """The extra of an archived object's asset event: the backup, the object's size and SHA-256 (from
    the manifest, None if it does not list the key) and where the manifest is, so a downstream DAG
    (a verification, a restore drill, a catalogue update) needs no API call."""
    entry: Mapping[str, Any] = next((o for o in manifest.get("objects", []) if o.get("key") == key), {})
    return {
        "stack_id": stack_id,
        "backup_id": backup.id,
        "db_type": backup.db_type,
        "database_name": backup.database_name,
        "backup_date": backup.backup_date.isoformat().replace("+00:00", "Z"),
        "size": entry.get("size"),
        "sha256": entry.get("sha256"),
        "manifest_key": manifest_key,
    }
