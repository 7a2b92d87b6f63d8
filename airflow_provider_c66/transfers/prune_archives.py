"""Cloud66ArchivePruneOperator: delete the archives a retention policy no longer keeps.

S3 lifecycle rules expire objects by age only; "keep 7 daily, 4 weekly, 12 monthly and every yearly"
needs to know which archive is the newest of its day, week, month and year. This operator reads the
manifests under a prefix, decides with :mod:`~airflow_provider_c66.transfers.retention` (restic's
``forget --keep-*`` rules) and deletes what no rule keeps: only archives this package wrote, never
one under Object Lock, and in an order that an interrupted run cannot turn into a half-archive that
looks complete.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from airflow_provider_c66 import validation
from airflow_provider_c66.exceptions import Cloud66ApiError
from airflow_provider_c66.models import Backup, format_datetime
from airflow_provider_c66.transfers import archive, retention
from airflow_provider_c66.transfers.backup_to_s3 import MISSING_CODES, head_object
from airflow_provider_c66.transfers.copy import s3_error_code

try:
    from airflow.providers.common.compat.sdk import AirflowException, BaseOperator
except ImportError:  # pragma: no cover
    from airflow.sdk import BaseOperator
    from airflow.sdk.exceptions import AirflowException

PACKAGE = "airflow-provider-c66"
DEFAULT_PREFIX = "cloud66/"
DEFAULT_MAX_ARCHIVES = 10_000
MAX_ARCHIVES = 1_000_000
# A manifest lists each object and source file: a few hundred bytes each. Anything bigger is not ours.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


class Cloud66ArchivePruneOperator(BaseOperator):  # type: ignore[misc]
    """Delete the archives under a prefix that no ``keep_*`` rule keeps, per (stack, db type, database).

    The rules are restic's ``forget --keep-*`` (see :mod:`~airflow_provider_c66.transfers.retention`):
    by the backup's own date in the manifest (UTC), the newest ``keep_last`` archives and the newest
    archive of each of the last ``keep_daily`` days, ``keep_weekly`` ISO weeks, ``keep_monthly``
    months and ``keep_yearly`` years that have archives are kept; the rest are deleted.

    - Only archives this package wrote are considered: the manifest's own document says so
      (``package``, ``format``), its objects lie under its own prefix, and the manifest and every
      object carry the ``c66-stack-id``/``c66-backup-id`` metadata of the manifest's backup. Anything
      else is reported under ``skipped`` and never touched.
    - An archive that would be deleted but has any object (or its manifest) under Object Lock
      retention until a future date, or a legal hold, is reported under ``locked`` and left whole.
    - Deletion order per archive: its catalogue record first (so the catalogue never lists an
      archive that is gone), its objects, then the manifest (so an interrupted prune never leaves an
      archive that looks complete but is not). A re-run finishes what an interrupted run started.
    - Everything is listed and checked before the first deletion; more than ``max_archives``
      manifests under the prefix fail the task before anything is deleted.
    - In a versioned bucket a deletion adds a delete marker: the object's versions stay (and are
      billed) until a lifecycle rule expires noncurrent versions. This operator never deletes versions.

    Needs ``s3:ListBucket``, ``s3:GetObject``, ``s3:DeleteObject``, ``s3:GetObjectRetention`` and
    ``s3:GetObjectLegalHold`` (AWS shows an object's lock only to callers allowed to read it; without
    them the task fails before deleting anything).

    :param s3_bucket: the bucket of the archives.
    :param s3_prefix: where to look: the fixed part of the archive operator's ``s3_key_prefix``
        (``cloud66/``), or a narrower one (``cloud66/<stack>/``). No placeholders.
    :param keep_last: keep the N newest archives of each group.
    :param keep_daily: keep the newest archive of each of the N most recent days with archives.
    :param keep_weekly: likewise per ISO week.
    :param keep_monthly: likewise per calendar month.
    :param keep_yearly: likewise per calendar year. At least one ``keep_*`` must be 1 or more.
    :param dry_run: decide and report, delete nothing.
    :param catalog_prefix: the archive operator's ``catalog_prefix``: a deleted archive's catalogue
        record there is deleted first. None: no catalogue.
    :param aws_conn_id: the Amazon connection (``S3Hook``).
    :param max_archives: the most manifests the prefix may hold (1 to 1,000,000).
    :return: ``{"dry_run", "kept", "deleted", "locked", "skipped"}``: the first three list archives as
        ``{"manifest", "stack_id", "db_type", "database", "backup_id", "backup_date", "reasons"}``
        (``deleted`` adds ``objects`` and ``catalog``, ``locked`` adds ``locks``); ``skipped`` lists
        ``{"key", "why"}``.
    """

    template_fields: Sequence[str] = (
        "s3_bucket",
        "s3_prefix",
        "keep_last",
        "keep_daily",
        "keep_weekly",
        "keep_monthly",
        "keep_yearly",
        "dry_run",
        "catalog_prefix",
        "aws_conn_id",
        "max_archives",
    )
    ui_color = "#7fb2e5"

    def __init__(
        self,
        *,
        s3_bucket: str,
        s3_prefix: str = DEFAULT_PREFIX,
        keep_last: int | str = 0,
        keep_daily: int | str = 0,
        keep_weekly: int | str = 0,
        keep_monthly: int | str = 0,
        keep_yearly: int | str = 0,
        dry_run: bool | str = False,
        catalog_prefix: str | None = archive.DEFAULT_CATALOG_PREFIX,
        aws_conn_id: str | None = "aws_default",
        max_archives: int | str = DEFAULT_MAX_ARCHIVES,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.s3_bucket = s3_bucket
        self.s3_prefix = s3_prefix
        self.keep_last = keep_last
        self.keep_daily = keep_daily
        self.keep_weekly = keep_weekly
        self.keep_monthly = keep_monthly
        self.keep_yearly = keep_yearly
        self.dry_run = dry_run
        self.catalog_prefix = catalog_prefix
        self.aws_conn_id = aws_conn_id
        self.max_archives = max_archives

    # --- input ----------------------------------------------------------------------------------
    def _validated(self) -> _Settings:
        """Every argument checked, before any request."""
        return _Settings(
            bucket=validation.bucket_name(self.s3_bucket),
            prefix=check_prefix(self.s3_prefix),
            policy=retention.RetentionPolicy.of(
                keep_last=self.keep_last,
                keep_daily=self.keep_daily,
                keep_weekly=self.keep_weekly,
                keep_monthly=self.keep_monthly,
                keep_yearly=self.keep_yearly,
            ),
            dry_run=validation.flag(self.dry_run, "dry_run"),
            catalog_prefix=(
                None if self.catalog_prefix is None else archive.check_catalog_prefix(self.catalog_prefix)
            ),
            max_archives=validation.positive_int(self.max_archives, "max_archives", maximum=MAX_ARCHIVES),
        )

    # --- run ------------------------------------------------------------------------------------
    def execute(self, context: Any) -> dict[str, Any]:
        settings = self._validated()
        client = self._client()
        where = f"s3://{settings.bucket}/{settings.prefix}"
        manifests = self._list_manifests(client, settings)
        found: dict[str, _Archive] = {}
        skipped: list[dict[str, str]] = []
        now = datetime.now(UTC)
        for key, size in manifests:
            read = self._read_archive(client, settings.bucket, key, size, now)
            if isinstance(read, str):
                skipped.append({"key": key, "why": read})
            else:
                found[key] = read
        decided = retention.plan([item.entry for item in found.values()], settings.policy)
        doomed = decided.deleted
        if doomed:
            self._check_lock_permissions(client, settings.bucket, doomed[0].archive.manifest_key)

        result: dict[str, Any] = {
            "dry_run": settings.dry_run,
            "kept": [],
            "deleted": [],
            "locked": [],
            "skipped": skipped,
        }
        for skip in skipped:
            self.log.warning(
                "Skipped s3://%s/%s: %s; left untouched.", settings.bucket, skip["key"], skip["why"]
            )
        for decision in decided.decisions:
            item = found[decision.archive.manifest_key]
            row = _row(decision)
            if decision.keep:
                self.log.info("Keeping %s: %s", item.describe(settings.bucket), ", ".join(decision.reasons))
                if item.missing:
                    self.log.warning(
                        "The kept archive %s is missing %s: it cannot be restored whole.",
                        item.describe(settings.bucket),
                        ", ".join(item.missing),
                    )
                result["kept"].append(row)
            elif item.locks:
                self.log.warning(
                    "Not deleting %s, which no rule keeps: it is under Object Lock (%s).",
                    item.describe(settings.bucket),
                    "; ".join(item.locks),
                )
                result["locked"].append({**row, "locks": item.locks})
            else:
                catalog = self._catalog_record(client, settings, item)
                self.log.info(
                    "%s %s: kept by no rule (%s).",
                    "Would delete" if settings.dry_run else "Deleting",
                    item.describe(settings.bucket),
                    settings.policy.describe(),
                )
                if not settings.dry_run:
                    self._delete(client, settings.bucket, item, catalog)
                result["deleted"].append({**row, "objects": list(item.entry.object_keys), "catalog": catalog})
        self.log.info(
            "%s %s with %s: %d archive(s) kept, %d %s, %d locked, %d skipped.",
            "Dry run of the prune of" if settings.dry_run else "Pruned",
            where,
            settings.policy.describe(),
            len(result["kept"]),
            len(result["deleted"]),
            "would be deleted" if settings.dry_run else "deleted",
            len(result["locked"]),
            len(skipped),
        )
        return result

    def _client(self) -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id).get_conn()

    def _list_manifests(self, client: Any, settings: _Settings) -> list[tuple[str, int]]:
        """(key, size) of every ``manifest.json`` under the prefix, paged; at most ``max_archives``."""
        found: list[tuple[str, int]] = []
        token: str | None = None
        while True:
            page = client.list_objects_v2(
                Bucket=settings.bucket,
                Prefix=settings.prefix,
                **({"ContinuationToken": token} if token else {}),
            )
            for listed in page.get("Contents", []):
                key = str(listed["Key"])
                if key.rsplit("/", 1)[-1] != archive.MANIFEST_NAME:
                    continue
                found.append((key, int(listed.get("Size", 0))))
                if len(found) > settings.max_archives:
                    raise AirflowException(
                        f"s3://{settings.bucket}/{settings.prefix} holds more than max_archives="
                        f"{settings.max_archives} manifests; nothing was deleted. Raise max_archives, or prune "
                        "a narrower s3_prefix (one stack, or one database) per task."
                    )
            token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
            if not token:
                return found

    def _read_archive(self, client: Any, bucket: str, key: str, size: int, now: datetime) -> _Archive | str:
        """The archive the manifest describes, checked to be this package's; or why it is skipped."""
        from botocore.exceptions import ClientError

        if size > MAX_MANIFEST_BYTES:
            return f"{size} bytes is too large for a manifest this package writes"
        try:
            answer = client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if s3_error_code(exc) in MISSING_CODES:
                return "gone since it was listed"
            raise
        try:
            document = json.loads(answer["Body"].read(MAX_MANIFEST_BYTES + 1))
        except ValueError:
            document = None
        if not isinstance(document, dict):
            return "not a JSON object: not a manifest this package writes"
        if document.get("package") != PACKAGE or document.get("format") != archive.MANIFEST_FORMAT:
            return (
                f"not a manifest this package writes (package {document.get('package')!r:.60}, "
                f"format {document.get('format')!r:.20})"
            )
        stack = document.get("stack_id")
        if not isinstance(stack, str) or not stack:
            return "the manifest names no stack"
        try:
            backup = Backup.from_dict(document.get("backup"))
        except Cloud66ApiError as exc:
            return f"the manifest's backup record cannot be read ({exc})"
        objects = document.get("objects")
        if (
            not isinstance(objects, list)
            or not objects
            or not all(isinstance(o, dict) and isinstance(o.get("key"), str) for o in objects)
        ):
            return "the manifest lists no objects"
        directory = key[: -len(archive.MANIFEST_NAME)]
        keys = [str(o["key"]) for o in objects]
        for object_key in keys:
            if object_key.rsplit("/", 1)[0] + "/" != directory or object_key == key:
                return (
                    f"the manifest lists {object_key!r:.200}, which is not beside it: not an archive this "
                    "package writes"
                )
        if len(set(keys)) != len(keys):
            return "the manifest lists an object twice"
        foreign = _foreign(answer, stack, backup.id)
        if foreign:
            return f"the manifest {foreign}"
        locks = _locks(key, answer, now)
        missing: list[str] = []
        for object_key in keys:
            head = head_object(client, bucket, object_key)
            if head is None:
                missing.append(object_key)
                continue
            foreign = _foreign(head, stack, backup.id)
            if foreign:
                return f"its object {object_key} {foreign}"
            locks += _locks(object_key, head, now)
        entry = retention.ArchiveEntry(
            stack_id=stack,
            db_type=backup.db_type,
            database=backup.database_name,
            backup_id=backup.id,
            backup_date=backup.backup_date,
            manifest_key=key,
            object_keys=tuple(keys),
        )
        return _Archive(entry=entry, backup=backup, missing=missing, locks=locks)

    def _check_lock_permissions(self, client: Any, bucket: str, key: str) -> None:
        """Before anything is deleted: may these credentials see Object Lock? AWS leaves the lock out
        of HeadObject for a caller not allowed to read it, and a locked object in a versioned bucket
        takes a plain DeleteObject (a delete marker): an unseen lock would hide the archive."""
        for call, permission in (
            (client.get_object_retention, "s3:GetObjectRetention"),
            (client.get_object_legal_hold, "s3:GetObjectLegalHold"),
        ):
            try:
                call(Bucket=bucket, Key=key)
            except Exception as exc:
                # Anything but a refusal (no lock on the object, none on the bucket, a store without
                # the call) says the caller would see a lock where there is one.
                if s3_error_code(exc) == "AccessDenied":
                    raise AirflowException(
                        f"Cannot tell whether the archives in bucket {bucket!r} are under Object Lock: S3 "
                        f"shows an object's lock only to callers allowed {permission}, which these "
                        "credentials are not (see the README's prune policy). Nothing was deleted."
                    ) from exc

    def _catalog_record(self, client: Any, settings: _Settings, item: _Archive) -> str | None:
        """The key of this archive's catalogue record, if there is one (and it is this archive's)."""
        from botocore.exceptions import ClientError

        if settings.catalog_prefix is None:
            return None
        key = archive.catalog_key(settings.catalog_prefix, item.entry.stack_id, item.backup)
        try:
            answer = client.get_object(Bucket=settings.bucket, Key=key)
        except ClientError as exc:
            if s3_error_code(exc) in MISSING_CODES:
                return None
            raise
        try:
            record = json.loads(answer["Body"].read(MAX_MANIFEST_BYTES + 1))
        except ValueError:
            record = None
        ours = (
            isinstance(record, dict)
            and record.get("manifest_key") == item.entry.manifest_key
            and _foreign(answer, item.entry.stack_id, item.entry.backup_id) is None
        )
        if not ours:
            self.log.warning(
                "s3://%s/%s is not the catalogue record of %s (another archive's, or not this package's): "
                "left in place.",
                settings.bucket,
                key,
                item.describe(settings.bucket),
            )
            return None
        return key

    def _delete(self, client: Any, bucket: str, item: _Archive, catalog: str | None) -> None:
        """The catalogue record, the objects, the manifest last; a missing object is already done."""
        from botocore.exceptions import BotoCoreError, ClientError

        steps = [catalog] if catalog else []
        steps += [key for key in item.entry.object_keys if key not in item.missing]
        steps.append(item.entry.manifest_key)
        done: list[str] = []
        for key in steps:
            try:
                client.delete_object(Bucket=bucket, Key=key)
            except (ClientError, BotoCoreError) as exc:
                raise AirflowException(
                    f"Pruning stopped while deleting {item.describe(bucket)}: s3://{bucket}/{key} could not be "
                    f"deleted ({exc}); deleted before it: {', '.join(done) or 'nothing'}. Its manifest is "
                    "deleted last, so the archive is still listed, and the next run of the prune finishes it."
                ) from exc
            done.append(key)


def check_prefix(value: object, field: str = "s3_prefix") -> str:
    """A fixed, relative key prefix ending in ``/``: where the archives to prune are."""
    return archive.fixed_prefix(value, field)


@dataclass(frozen=True)
class _Settings:
    bucket: str
    prefix: str
    policy: retention.RetentionPolicy
    dry_run: bool
    catalog_prefix: str | None
    max_archives: int


@dataclass
class _Archive:
    """One archive of this package found under the prefix."""

    entry: retention.ArchiveEntry
    backup: Backup
    missing: list[str] = field(default_factory=list)  # object keys no longer in S3
    locks: list[str] = field(default_factory=list)  # "key: GOVERNANCE until ..." / "key: legal hold"

    def describe(self, bucket: str) -> str:
        entry = self.entry
        return (
            f"s3://{bucket}/{entry.manifest_key} (stack {entry.stack_id!r}, {entry.db_type} "
            f"{entry.database!r}, backup {entry.backup_id} of {format_datetime(entry.backup_date)})"
        )


def _row(decision: retention.Decision) -> dict[str, Any]:
    entry = decision.archive
    return {
        "manifest": entry.manifest_key,
        "stack_id": entry.stack_id,
        "db_type": entry.db_type,
        "database": entry.database,
        "backup_id": entry.backup_id,
        "backup_date": format_datetime(entry.backup_date),
        "reasons": list(decision.reasons),
    }


def _foreign(answer: dict[str, Any], stack: str, backup_id: int) -> str | None:
    """Why an object's metadata does not mark it as this backup's archive; None when it does."""
    meta = {str(k).lower(): v for k, v in (answer.get("Metadata") or {}).items()}
    got_stack, got_backup = meta.get(archive.META_STACK), meta.get(archive.META_BACKUP)
    if got_stack is None and got_backup is None:
        return f"carries no {archive.META_STACK}/{archive.META_BACKUP} metadata: not written by this package"
    if (got_stack, got_backup) != (stack, str(backup_id)):
        return (
            f"carries the metadata of stack {got_stack!r:.80} backup {got_backup!r:.20}, not of the "
            f"manifest's stack {stack!r:.80} backup {backup_id}"
        )
    return None


def _locks(key: str, answer: dict[str, Any], now: datetime) -> list[str]:
    """The Object Lock on one object that forbids deleting it now, as the HEAD (or GET) shows it."""
    found = []
    until = answer.get("ObjectLockRetainUntilDate")
    if isinstance(until, str):
        until = datetime.fromisoformat(until.replace("Z", "+00:00"))
    if isinstance(until, datetime):
        until = until if until.tzinfo else until.replace(tzinfo=UTC)
        if until > now:
            mode = answer.get("ObjectLockMode") or "retention"
            found.append(f"{key}: {mode} retention until {format_datetime(until)}")
    if answer.get("ObjectLockLegalHoldStatus") == "ON":
        found.append(f"{key}: legal hold ON")
    return found
