"""Cloud66BackupToS3Operator: archive one Cloud 66 backup into an S3 bucket, verified and idempotent.

The bytes move in :mod:`airflow_provider_c66.transfers.copy` (no Airflow there); this module
decides what to copy where, makes re-runs safe, writes the manifest and declares the assets.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_c66 import assets, budget, validation
from airflow_provider_c66.exceptions import Cloud66InputError, Cloud66ResponseError
from airflow_provider_c66.hooks.cloud66 import Cloud66Hook
from airflow_provider_c66.models import Backup, BackupFile
from airflow_provider_c66.transfers import archive
from airflow_provider_c66.transfers.archive import ArchivedObject
from airflow_provider_c66.transfers.copy import (
    CopyObserver,
    ObjectExists,
    SourceChanged,
    abort_open_uploads,
    s3_error_code,
)

try:
    from airflow.providers.common.compat.sdk import AirflowException, AssetAlias, BaseOperator
except ImportError:  # pragma: no cover
    from airflow.sdk import AssetAlias, BaseOperator
    from airflow.sdk.exceptions import AirflowException

if TYPE_CHECKING:
    from airflow_provider_c66.transfers.copy import CopySettings, UploadIdStore

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MiB
DEFAULT_MAX_CONCURRENCY = 4
DEFAULT_ASSET_ALIAS = "cloud66-backup-archives"
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
MAX_RETAIN_DAYS = 100 * 365


class Cloud66BackupToS3Operator(BaseOperator):  # type: ignore[misc]
    """Copy a Cloud 66 backup's files into S3 through short-lived signed URLs.

    Bytes stream through ranged GETs into an S3 multipart upload, ``max_concurrency`` parts at a
    time (memory stays near ``max_concurrency × part_size``), are checked part by part, and the
    object appears only once complete. A ``manifest.json`` is written last under the prefix; a
    re-run that finds a matching manifest copies nothing and returns the same URIs.

    **A backup still being written is never archived.** Cloud 66 does not say whether a backup's
    record can appear before its files are complete, so before the (last) object completes, the
    files are probed again and the file list is read again (one API request); a file that grew or
    appeared, a total that disagrees with the record's ``backup_size`` (when it is above 0), or no
    bytes at all fail the try with a retryable error, and nothing is completed: no manifest, and
    with ``join_parts=True`` no object. With ``join_parts=False`` the objects completed before the
    change stay, without a manifest, and the next try replaces them.

    :param stack_id: the stack UID.
    :param backup_id: the backup id, or a ``Backup.to_dict()`` record such as the sensor's XCom value
        (used as it is: no request reads it again), or a list of either, archived one after the other
        (a sensor waiting for several database types of a stack returns one record per type).
    :param s3_bucket: the destination bucket.
    :param s3_key_prefix: where the archive goes; ``{stack_id}``, ``{db_type}``, ``{database_name}``,
        ``{backup_id}``, ``{YYYY}``, ``{MM}`` and ``{DD}`` are filled from the backup.
    :param aws_conn_id: the Amazon connection (``S3Hook``).
    :param cloud66_conn_id: the Cloud 66 connection.
    :param join_parts: True: one object holding split parts concatenated in order, named after the
        archive; False: one object per file.
    :param replace: overwrite objects under the prefix that this package did not write for this backup.
    :param storage_class: e.g. ``STANDARD_IA``, ``GLACIER_IR``, ``DEEP_ARCHIVE``.
    :param server_side_encryption: ``AES256`` or ``aws:kms``.
    :param sse_kms_key_id: the KMS key, with ``aws:kms``.
    :param tags: object tags.
    :param part_size: bytes per multipart part (raised if the archive would need over 10,000 parts).
    :param max_concurrency: parts in flight at once.
    :param verify_backup_size: compare the files' total with the record's ``backup_size`` when that
        is above 0. Cloud 66 does not document its unit; set False if it ever counts other than bytes.
    :param retry_budget: seconds a byte range or an S3 call keeps retrying through an outage of the
        signed-URL host or of S3 (1 to 3600; the default outlasts a two-minute outage).
    :param object_lock_mode: ``GOVERNANCE`` or ``COMPLIANCE``: every object of the archive and its
        manifest is written under S3 Object Lock retention, so neither ransomware nor a mistake can
        delete it before the date. The bucket must have Object Lock enabled (checked before any upload).
    :param object_lock_retain_days: retention from the time of the copy, in days (with a mode).
    :param object_lock_retain_until: or a fixed retention date (aware ``datetime`` or ISO 8601 string).
    :param object_lock_legal_hold: also place a legal hold (no end date; lifted by someone allowed to).
    :param asset_alias: the ``AssetAlias`` each written object is announced under, so DAGs can be
        scheduled on fresh archives; None to announce nothing.
    :param catalog_prefix: where a one-line JSON record of each complete archive is written, one
        object per archive (``<prefix><stack>/<db_type>/<database>/<YYYY-MM-DD>-<backup id>.json``), so
        Athena or DuckDB read the lake as a table; written after the manifest, and by a re-run that
        finds the archive complete without one. None writes no record.
    :return: the ``s3://`` URIs of the archive's objects.
    """

    template_fields: Sequence[str] = (
        "stack_id",
        "backup_id",
        "s3_bucket",
        "s3_key_prefix",
        "aws_conn_id",
        "cloud66_conn_id",
        "storage_class",
        "server_side_encryption",
        "sse_kms_key_id",
        "tags",
        "object_lock_mode",
        "object_lock_retain_days",
        "object_lock_retain_until",
        "catalog_prefix",
    )
    ui_color = "#7fb2e5"

    def __init__(
        self,
        *,
        stack_id: str,
        backup_id: int | str | Mapping[str, Any],
        s3_bucket: str,
        s3_key_prefix: str = archive.DEFAULT_KEY_PREFIX,
        aws_conn_id: str | None = "aws_default",
        cloud66_conn_id: str = Cloud66Hook.default_conn_name,
        join_parts: bool = True,
        replace: bool = False,
        storage_class: str | None = None,
        server_side_encryption: str | None = None,
        sse_kms_key_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        verify_backup_size: bool = True,
        retry_budget: int = 150,
        object_lock_mode: str | None = None,
        object_lock_retain_days: int | None = None,
        object_lock_retain_until: datetime | str | None = None,
        object_lock_legal_hold: bool = False,
        asset_alias: str | None = DEFAULT_ASSET_ALIAS,
        catalog_prefix: str | None = archive.DEFAULT_CATALOG_PREFIX,
        **kwargs: Any,
    ) -> None:
        if asset_alias:
            kwargs.setdefault("outlets", [AssetAlias(name=asset_alias)])
        super().__init__(**kwargs)
        self.stack_id = stack_id
        self.backup_id = backup_id
        self.s3_bucket = s3_bucket
        self.s3_key_prefix = s3_key_prefix
        self.aws_conn_id = aws_conn_id
        self.cloud66_conn_id = cloud66_conn_id
        self.join_parts = join_parts
        self.replace = replace
        self.storage_class = storage_class
        self.server_side_encryption = server_side_encryption
        self.sse_kms_key_id = sse_kms_key_id
        self.tags = tags
        self.part_size = part_size
        self.max_concurrency = max_concurrency
        self.verify_backup_size = verify_backup_size
        self.retry_budget = retry_budget
        self.object_lock_mode = object_lock_mode
        self.object_lock_retain_days = object_lock_retain_days
        self.object_lock_retain_until = object_lock_retain_until
        self.object_lock_legal_hold = object_lock_legal_hold
        self.asset_alias = asset_alias
        self.catalog_prefix = catalog_prefix
        # Made in execute() (a _StopSignal, which Airflow's deep copy of the operator can copy).
        self._cancel: threading.Event | None = None
        self._hook: Cloud66Hook | None = None
        self._lineage: list[_Lineage] = []  # what the try read and wrote, one per complete archive

    # --- input ----------------------------------------------------------------------------------
    def _validated(self) -> _ArchiveArgs:
        """Every argument checked, before any request."""
        from airflow_provider_c66.transfers.copy import MAX_PART_SIZE, MIN_PART_SIZE, CopySettings

        stack = validation.stack_id(self.stack_id)
        backups = _backup_refs(self.backup_id)
        bucket = validation.bucket_name(self.s3_bucket)
        if not isinstance(self.s3_key_prefix, str) or not self.s3_key_prefix.strip():
            raise Cloud66InputError(
                "s3_key_prefix", f"must be a non-empty key prefix, got {self.s3_key_prefix!r:.80}"
            )
        archive.check_prefix_template(self.s3_key_prefix)
        if self.catalog_prefix is not None:
            archive.check_catalog_prefix(self.catalog_prefix)
        part_size = validation.positive_int(self.part_size, "part_size", maximum=MAX_PART_SIZE)
        if part_size < MIN_PART_SIZE:
            raise Cloud66InputError(
                "part_size", f"must be at least {MIN_PART_SIZE} bytes (5 MiB, S3's minimum)"
            )
        concurrency = validation.positive_int(self.max_concurrency, "max_concurrency", maximum=64)
        extra: dict[str, Any] = {}
        if self.storage_class:
            if self.storage_class not in archive.STORAGE_CLASSES:
                raise Cloud66InputError(
                    "storage_class",
                    f"must be one of {', '.join(archive.STORAGE_CLASSES)}, got {self.storage_class!r}",
                )
            extra["StorageClass"] = self.storage_class
        if self.server_side_encryption:
            if self.server_side_encryption not in archive.SSE_MODES:
                raise Cloud66InputError(
                    "server_side_encryption",
                    f"must be one of {', '.join(archive.SSE_MODES)}, got {self.server_side_encryption!r}",
                )
            extra["ServerSideEncryption"] = self.server_side_encryption
        if self.sse_kms_key_id:
            if not str(self.server_side_encryption or "").startswith("aws:kms"):
                raise Cloud66InputError("sse_kms_key_id", "needs server_side_encryption='aws:kms'")
            extra["SSEKMSKeyId"] = validation.non_empty_str(self.sse_kms_key_id, "sse_kms_key_id")
        if self.tags:
            extra["Tagging"] = validation.tags(self.tags)
        extra.update(self._object_lock())
        seconds = validation.positive_int(self.retry_budget, "retry_budget", maximum=3600)
        verify_size = validation.flag(self.verify_backup_size, "verify_backup_size")
        settings = CopySettings(part_size=part_size, max_concurrency=concurrency, retry_budget=float(seconds))
        return _ArchiveArgs(stack, backups, bucket, settings, extra, verify_size)

    def _object_lock(self) -> dict[str, Any]:
        """The Object Lock arguments of every write, or {} when none is asked for."""
        mode, days, until = self.object_lock_mode, self.object_lock_retain_days, self.object_lock_retain_until
        hold = validation.flag(self.object_lock_legal_hold, "object_lock_legal_hold")
        lock: dict[str, Any] = {"ObjectLockLegalHoldStatus": "ON"} if hold else {}
        if mode in (None, ""):
            if days is not None or until not in (None, ""):
                raise Cloud66InputError(
                    "object_lock_mode", "must be GOVERNANCE or COMPLIANCE when a retention is given"
                )
            return lock
        if mode not in LOCK_MODES:
            raise Cloud66InputError(
                "object_lock_mode", f"must be one of {', '.join(LOCK_MODES)}, got {mode!r:.40}"
            )
        if (days is None) == (until in (None, "")):
            raise Cloud66InputError(
                "object_lock_retain_days",
                "give exactly one of object_lock_retain_days and object_lock_retain_until",
            )
        now = datetime.now(UTC)
        if days is not None:
            retain_until = now + timedelta(
                days=validation.positive_int(days, "object_lock_retain_days", maximum=MAX_RETAIN_DAYS)
            )
        else:
            retain_until = validation.aware_datetime(until, "object_lock_retain_until")
            if retain_until <= now:
                raise Cloud66InputError(
                    "object_lock_retain_until", f"must be in the future, got {retain_until.isoformat()}"
                )
        return {
            **lock,
            "ObjectLockMode": mode,
            "ObjectLockRetainUntilDate": retain_until.replace(microsecond=0),
        }

    # --- run ------------------------------------------------------------------------------------
    def execute(self, context: Any) -> list[str]:
        """Archive each backup in turn; return every object's URI.

        When Cloud 66's hourly request budget is spent, the task runs again after its reset (see
        :func:`~airflow_provider_c66.budget.wait_for_reset`): not a retry, and the open upload stays
        for the next run to resume. Archives already complete are found so and not copied again.
        """
        args = self._validated()
        self._cancel = cancel = _StopSignal()
        self._hook = hook = Cloud66Hook(self.cloud66_conn_id, cancel=cancel)
        self._lineage = []
        # One S3 client for the try, made for the first backup that has files to copy. Not kept on the
        # operator: Airflow may deep-copy a running operator, and a boto3 client cannot be copied.
        s3 = functools.cache(lambda: self._s3_client(args.settings.max_concurrency))
        uris: list[str] = []
        for ident, known in args.backups:
            while True:
                try:
                    uris += self._archive(context, hook, s3, args, ident, known)
                    break
                except Exception as exc:
                    budget.wait_for_reset(exc, context, self.log, cancel)
        return uris

    def _archive(
        self,
        context: Any,
        hook: Cloud66Hook,
        s3: Callable[[], Any],
        args: _ArchiveArgs,
        ident: int,
        known: Backup | None,
    ) -> list[str]:
        """Archive one backup (``known``: its record as the sensor read it, which saves a request)."""
        stack, bucket, settings, extra = args.stack, args.bucket, args.settings, args.extra
        backup = known if known is not None else hook.get_backup(stack, ident)
        if not backup.succeeded:
            raise AirflowException(
                f"Backup {ident} of stack {stack!r} did not succeed (status {backup.status.name}): "
                f"{backup.result or 'no result given'}; there is nothing to archive."
            )
        prefix = archive.key_prefix(self.s3_key_prefix, backup, stack)
        files = hook.list_backup_files(stack, ident)
        if not files:
            raise AirflowException(
                f"Backup {ident} of stack {stack!r} lists no files: it may still be being written, and an "
                "empty archive is never written. A retry looks again."
            )
        plan = self._plan(prefix, files)
        client = s3()
        if any(name.startswith("ObjectLock") for name in extra):
            self._check_object_lock(client, bucket)

        existing, manifest_held = self._earlier_archive(client, bucket, prefix, stack, ident, list(plan))
        if existing is not None:
            self.log.info(
                "s3://%s/%s already holds this backup (manifest matches); nothing to copy.", bucket, prefix
            )
            return self._finish(context, client, bucket, prefix, plan, existing, backup, stack, extra)
        taken = self._check_overwrite(client, bucket, prefix, stack, ident, list(plan), manifest_held)

        from airflow_provider_c66.transfers.copy import CopyCancelled, CopyError

        expected = backup.backup_size if args.verify_size and backup.backup_size > 0 else None
        try:
            objects = self._copy(
                hook,
                client,
                bucket,
                stack,
                ident,
                plan,
                settings,
                extra,
                files,
                expected,
                taken,
                _keep_upload(context),
                _upload_ids(context, self.log),
            )
        except SourceChanged as exc:
            raise AirflowException(
                f"Backup {ident} of stack {stack!r} is not settled: {exc}. Nothing was completed and no "
                "manifest was written; a retry copies it again once it has settled."
            ) from exc
        except CopyError as exc:
            if isinstance(exc, CopyCancelled):
                raise
            # A concurrent copy of the same backup (another mapped task or DAG run) that completed
            # the archive first aborts the uploads it finds on its keys, this one's included.
            done = self._complete_archive(client, bucket, prefix, stack, ident, list(plan))
            if done is None:
                raise
            self.log.warning(
                "This copy failed (%s), but another run has meanwhile archived backup %s completely "
                "under s3://%s/%s; using that archive.",
                exc,
                ident,
                bucket,
                prefix,
            )
            return self._finish(context, client, bucket, prefix, plan, done, backup, stack, extra)
        written = self._write_manifest(client, bucket, prefix, stack, backup, objects, extra, taken)
        if written is None:
            done = self._complete_archive(client, bucket, prefix, stack, ident, list(plan))
            if done is None:
                raise AirflowException(
                    f"Another run wrote s3://{bucket}/{prefix}{archive.MANIFEST_NAME} while this one copied "
                    f"backup {ident}, and it does not describe this archive; nothing was overwritten."
                )
            self.log.warning("Another run finished archiving backup %s first; using its manifest.", ident)
            return self._finish(context, client, bucket, prefix, plan, done, backup, stack, extra)
        self.log.info(
            "Archived backup %s of stack %r as %d object(s) under s3://%s/%s",
            ident,
            stack,
            len(objects),
            bucket,
            prefix,
        )
        keys = [o.key for o in objects]
        return self._finish(context, client, bucket, prefix, plan, keys, backup, stack, extra, written)

    def _copy(
        self,
        hook: Cloud66Hook,
        client: Any,
        bucket: str,
        stack: str,
        ident: int,
        plan: dict[str, list[BackupFile]],
        settings: CopySettings,
        extra: dict[str, Any],
        files: Sequence[BackupFile],
        expected_size: int | None,
        taken: set[str],
        keep_upload: Callable[[BaseException], bool],
        upload_ids: UploadIdStore | None,
    ) -> list[ArchivedObject]:
        from airflow_provider_c66.transfers.copy import Source, copy_to_s3

        metadata = {archive.META_STACK: stack, archive.META_BACKUP: str(ident)}
        objects: list[ArchivedObject] = []

        def last_look(sizes: Sequence[int]) -> None:
            """Before the archive's last object completes: is the backup still what it was?"""
            total = sum(o.size for o in objects) + sum(sizes)
            if total == 0:
                raise SourceChanged("its files hold no bytes, and an empty archive is never a backup")
            if expected_size is not None and total != expected_size:
                raise SourceChanged(f"its files hold {total} bytes but its record says {expected_size}")
            now = hook.list_backup_files(stack, ident)
            if [(f.id, f.name) for f in now] != [(f.id, f.name) for f in files]:
                raise SourceChanged(
                    f"its file list changed during the copy, from {_file_ids(files)} to {_file_ids(now)}: "
                    "it is still being written"
                )

        for number, (key, members) in enumerate(plan.items(), start=1):
            sources = [Source(f.id, f.name, _url_provider(hook, stack, ident, f.id)) for f in members]
            result = copy_to_s3(
                sources,
                client,
                bucket,
                key,
                settings=settings,
                extra_args={**extra, "Metadata": metadata},
                cancel=self._cancel,
                log=self.log,
                expected_size=expected_size if self.join_parts else None,
                before_complete=last_look if number == len(plan) else None,
                if_none_match=key not in taken,
                resume=True,
                keep_upload_on_failure=keep_upload,
                observers=self.copy_observers(),
                upload_ids=upload_ids,
            )
            objects.append(
                ArchivedObject(
                    key=key,
                    size=result.size,
                    etag=result.etag,
                    sha256=result.sha256,
                    sources=tuple(
                        (f.id, f.name, size)
                        for f, (_, size) in zip(members, result.source_sizes, strict=True)
                    ),
                    crc32=result.crc32,
                    s3_checksum=result.s3_checksum,
                )
            )
        return objects

    def _write_manifest(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        stack: str,
        backup: Backup,
        objects: Sequence[ArchivedObject],
        extra: Mapping[str, Any],
        taken: set[str],
    ) -> dict[str, Any] | None:
        """Write the manifest last, under the archive's encryption and lock; return it, or None when
        another run's manifest took the key first (a conditional write answered 412)."""
        from airflow_provider_c66.transfers.copy import write_object

        key = prefix + archive.MANIFEST_NAME
        kept = (
            "ServerSideEncryption",
            "SSEKMSKeyId",
            "ObjectLockMode",
            "ObjectLockRetainUntilDate",
            "ObjectLockLegalHoldStatus",
        )
        manifest_extra = {k: v for k, v in extra.items() if k in kept}
        body = archive.build_manifest(stack, backup, objects, joined=self.join_parts)
        try:
            write_object(
                client,
                bucket,
                key,
                body,
                extra_args={
                    **manifest_extra,
                    "ContentType": "application/json",
                    "Metadata": {archive.META_STACK: stack, archive.META_BACKUP: str(backup.id)},
                },
                if_none_match=key not in taken,
                log=self.log,
            )
        except ObjectExists:
            return None
        document: dict[str, Any] = json.loads(body)  # what S3 now holds, checked by write_object
        return document

    def _check_object_lock(self, client: Any, bucket: str) -> None:
        """Object Lock asked for: the bucket must have it enabled, or nothing is uploaded."""
        from botocore.exceptions import ClientError

        try:
            config = client.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration") or {}
        except ClientError as exc:
            code = s3_error_code(exc)
            if code == "AccessDenied":
                raise AirflowException(
                    f"Object Lock was asked for, but reading the lock configuration of bucket {bucket!r} was "
                    "refused: the role needs s3:GetBucketObjectLockConfiguration. Nothing was uploaded."
                ) from exc
            if code != "ObjectLockConfigurationNotFoundError":
                raise
            config = {}
        if config.get("ObjectLockEnabled") != "Enabled":
            raise Cloud66InputError(
                "object_lock_mode",
                f"needs a bucket with Object Lock enabled; bucket {bucket!r} has none (it can only be enabled "
                "on a versioned bucket). Nothing was uploaded",
            )

    def _abort_leftover_uploads(self, client: Any, bucket: str, keys: list[str]) -> None:
        """Abort every open multipart upload on the archive's keys, once the archive is complete.

        Uploads are never aborted before the archive is complete, so concurrent copies cannot undo
        each other; only exact keys of this archive are touched, never the rest of the prefix.
        """
        aborted = abort_open_uploads(client, bucket, keys=keys, log=self.log)
        if aborted:
            self.log.warning(
                "Aborted %d unfinished multipart upload(s) on the archive's key(s) under s3://%s/%s, "
                "left by a killed try or a concurrent copy of the same backup",
                aborted,
                bucket,
                keys[0].rsplit("/", 1)[0] + "/",
            )

    def on_kill(self) -> None:
        """Stop the copy: the engine aborts the multipart upload so nothing partial is left, and a
        Cloud 66 call waiting out an outage gives up at once."""
        if self._cancel is not None:
            self._cancel.set()

    def copy_observers(self) -> list[CopyObserver]:
        """Observers told of each copy's parts and bytes, besides the progress log; none by default.

        Override it in a subclass to meter or watch the copies (see
        :class:`~airflow_provider_c66.transfers.copy.CopyObserver`); a new list per call.
        """
        return []

    # --- helpers --------------------------------------------------------------------------------
    def _plan(self, prefix: str, files: Sequence[BackupFile]) -> dict[str, list[BackupFile]]:
        """Which files go into which key: all into one (join_parts) or one key per file."""
        if self.join_parts:
            return {prefix + archive.object_name(files[0].archive_name): list(files)}
        plan: dict[str, list[BackupFile]] = {}
        for item in files:
            key = prefix + archive.object_name(item.name)
            if key in plan or key == prefix + archive.MANIFEST_NAME:
                raise AirflowException(f"Two backup files map to the same key {key!r}; use join_parts=True")
            plan[key] = [item]
        return plan

    def _s3_client(self, max_concurrency: int) -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from botocore.config import Config

        s3 = S3Hook(aws_conn_id=self.aws_conn_id)
        # Each part uploading holds one pooled connection; botocore's default pool is 10.
        config = s3.config.merge(Config(max_pool_connections=max(10, max_concurrency + 2)))
        client = s3.get_client_type(config=config)
        options: Any = dict(config.s3 or {})
        if str(client.meta.endpoint_url).startswith("https://") and "payload_signing_enabled" not in options:
            # Over TLS every part already carries its CRC32 (or Content-MD5), which S3 checks; botocore
            # would still SHA-256 the whole body to sign it, a pass over every byte that adds nothing.
            # The connection's own setting, when it has one, wins. Plain HTTP keeps the signed payload.
            options["payload_signing_enabled"] = False
            client = s3.get_client_type(config=config.merge(Config(s3=options)))
        return client

    def _complete_archive(
        self, client: Any, bucket: str, prefix: str, stack: str, ident: int, keys: list[str]
    ) -> list[str] | None:
        """The keys of a complete earlier archive of this backup, or None when there is none (the
        re-checks after a lost race; the first look is :meth:`_earlier_archive`)."""
        return self._earlier_archive(client, bucket, prefix, stack, ident, keys)[0]

    def _earlier_archive(
        self, client: Any, bucket: str, prefix: str, stack: str, ident: int, keys: list[str]
    ) -> tuple[list[str] | None, bool]:
        """Read the manifest once: the keys of a complete earlier archive of this backup (or None),
        and whether the manifest's key holds an object (False: it was free when read, which spares
        :meth:`_check_overwrite` a HEAD on it)."""
        try:
            document = read_manifest(client, bucket, prefix + archive.MANIFEST_NAME)
        except ValueError:  # damaged: the archive is copied again and the manifest replaced
            return None, True
        if document is None:
            return None, False
        if not archive.manifest_matches(document, stack, ident, keys):
            return None, True
        for entry in document["objects"]:
            head = head_object(client, bucket, entry["key"])
            if head is None or head.get("ContentLength") != entry["size"]:
                self.log.warning("Manifest found but %s is missing or changed; copying again.", entry["key"])
                return None, True
        return keys, True

    def _check_overwrite(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        stack: str,
        ident: int,
        keys: list[str],
        manifest_held: bool,
    ) -> set[str]:
        """Refuse to overwrite objects this package did not write for this backup (unless replace).

        :param manifest_held: the manifest's key held an object when it was read; when it did not,
            it is not looked at again (it is written with ``If-None-Match: *`` like any free key).
        :return: the keys that hold an object now; the others are written only if still free
            (``If-None-Match: *``), so two concurrent runs never overwrite each other.
        """
        taken: set[str] = set()
        for key in [*keys, prefix + archive.MANIFEST_NAME] if manifest_held else keys:
            head = head_object(client, bucket, key)
            if head is None:
                continue
            taken.add(key)
            if self.replace:
                continue
            meta = head.get("Metadata") or {}
            if meta.get(archive.META_STACK) == stack and meta.get(archive.META_BACKUP) == str(ident):
                self.log.info("Replacing s3://%s/%s left by an interrupted earlier try.", bucket, key)
                continue
            raise AirflowException(
                f"s3://{bucket}/{key} already exists and is not part of a complete archive of backup {ident}; "
                "set replace=True to overwrite it, or choose another s3_key_prefix."
            )
        return taken

    def _finish(
        self,
        context: Any,
        client: Any,
        bucket: str,
        prefix: str,
        plan: Mapping[str, Any],
        keys: list[str],
        backup: Backup,
        stack: str,
        extra: Mapping[str, Any],
        written: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """The archive is complete: tidy its keys, make sure the catalogue lists it, announce it.
        (``written``: the manifest this run has just written, which need not be read back.)"""
        self._abort_leftover_uploads(client, bucket, list(plan))
        manifest_key = prefix + archive.MANIFEST_NAME
        document = written or read_manifest(client, bucket, manifest_key) or {}
        if self.catalog_prefix is not None:
            self._catalogue(client, bucket, manifest_key, document, stack, backup, extra)
        self._record_lineage(bucket, keys, document, backup, stack)
        return self._announce(context, bucket, keys, manifest_key, document, backup, stack)

    def _record_lineage(
        self, bucket: str, keys: list[str], document: Mapping[str, Any], backup: Backup, stack: str
    ) -> None:
        """What the archive read and wrote, one dataset per final object (never per part): kept for
        :meth:`get_openlineage_facets_on_complete`, and told to Airflow's hook lineage collector."""
        from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector

        assert self._hook is not None
        api_url = self._hook.settings.base_url
        sizes = {str(o.get("key")): o.get("size") for o in document.get("objects", [])}
        self._lineage = [
            *(self._lineage or []),
            _Lineage(
                assets.namespace(api_url),
                assets.backup_name(stack, backup),
                bucket,
                [(k, sizes.get(k)) for k in keys],
            ),
        ]
        collector = get_hook_lineage_collector()
        source = {
            "host": urlsplit(api_url).netloc,
            "stack_id": stack,
            "db_type": backup.db_type,
            "database_name": backup.database_name,
            "backup_id": backup.id,
        }
        collector.add_input_asset(context=self._hook, scheme=assets.SCHEME, asset_kwargs=source)
        for key in keys:
            collector.add_output_asset(
                context=self._hook, scheme="s3", asset_kwargs={"bucket": bucket, "key": key}
            )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the Cloud 66 backup in, each archived object out with its size. (OpenLineage has
        no checksum facet; each object's SHA-256 is in its asset event's extra and the manifest.)"""
        from airflow.providers.common.compat.openlineage.facet import (
            Dataset,
            OutputDataset,
            OutputStatisticsOutputDatasetFacet,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage

        if not self._lineage:
            return OperatorLineage()
        return OperatorLineage(
            inputs=[Dataset(namespace=one.api_namespace, name=one.backup_name) for one in self._lineage],
            outputs=[
                OutputDataset(
                    namespace=f"s3://{one.bucket}",
                    name=key,
                    outputFacets={}
                    if size is None
                    else {"outputStatistics": OutputStatisticsOutputDatasetFacet(size=size, fileCount=1)},
                )
                for one in self._lineage
                for key, size in one.objects
            ],
        )

    def _catalogue(
        self,
        client: Any,
        bucket: str,
        manifest_key: str,
        document: Mapping[str, Any],
        stack: str,
        backup: Backup,
        extra: Mapping[str, Any],
    ) -> None:
        """Write the archive's catalogue record unless it exists; read from what S3 holds (the
        manifest, and the first object's storage class and lock), so it agrees with the lake."""
        from airflow_provider_c66.transfers.copy import write_object

        key = archive.catalog_key(archive.check_catalog_prefix(self.catalog_prefix), stack, backup)
        if head_object(client, bucket, key) is not None:
            return
        objects = [
            ArchivedObject(key=o["key"], size=int(o["size"]), etag="", sha256=str(o["sha256"]), sources=())
            for o in document.get("objects", [])
        ]
        head = head_object(client, bucket, objects[0].key) if objects else None
        head = head or {}
        record = archive.build_catalog_record(
            stack,
            backup,
            bucket,
            manifest_key,
            objects,
            storage_class=str(head.get("StorageClass") or "STANDARD"),
            lock_mode=head.get("ObjectLockMode"),
            lock_retain_until=head.get("ObjectLockRetainUntilDate"),
        )
        encryption = {k: v for k, v in extra.items() if k in ("ServerSideEncryption", "SSEKMSKeyId")}
        try:
            write_object(
                client,
                bucket,
                key,
                record,
                extra_args={
                    **encryption,
                    "ContentType": "application/json",
                    "Metadata": {archive.META_STACK: stack, archive.META_BACKUP: str(backup.id)},
                },
                if_none_match=True,
                log=self.log,
            )
        except ObjectExists:  # a concurrent run of the same backup wrote it first
            return
        self.log.info("Catalogued the archive as s3://%s/%s", bucket, key)

    def _announce(
        self,
        context: Any,
        bucket: str,
        keys: list[str],
        manifest_key: str,
        document: Mapping[str, Any],
        backup: Backup,
        stack: str,
    ) -> list[str]:
        """One asset event per object, carrying what a downstream DAG needs without an API call."""
        uris = [archive.s3_uri(bucket, key) for key in keys]
        if self.asset_alias:
            from airflow.providers.common.compat.sdk import Asset

            events = context["outlet_events"][AssetAlias(name=self.asset_alias)]
            for uri, key in zip(uris, keys, strict=True):
                events.add(
                    Asset(uri=uri), extra=archive.asset_extra(stack, backup, manifest_key, document, key)
                )
        return uris


@dataclass(frozen=True)
class _ArchiveArgs:
    """The operator's arguments once checked: what a try works from."""

    stack: str
    backups: tuple[tuple[int, Backup | None], ...]  # each backup's id, and its record when given one
    bucket: str
    settings: CopySettings
    extra: dict[str, Any]  # every S3 write's arguments: storage class, encryption, tags, Object Lock
    verify_size: bool  # compare the files' total with the record's backup_size


@dataclass(frozen=True)
class _Lineage:
    """The archive's lineage: the backup (OpenLineage namespace and name) and each object with its size."""

    api_namespace: str
    backup_name: str
    bucket: str
    objects: list[tuple[str, int | None]]


class _StopSignal(threading.Event):
    """The running try's stop signal (``on_kill``).

    Airflow deep-copies operators (partial subsets, mapped tasks), also while one executes; a plain
    ``Event`` holds a lock and cannot be copied. A copy of the operator is not the running try: it
    gets its own unset signal, so stopping one never stops, or half-wakes, the other.
    """

    def __copy__(self) -> _StopSignal:
        return _StopSignal()

    def __deepcopy__(self, memo: dict[int, Any]) -> _StopSignal:
        return _StopSignal()


def _backup_refs(value: Any) -> tuple[tuple[int, Backup | None], ...]:
    """``backup_id`` checked: an id, a ``Backup.to_dict()`` record (the sensor's XCom), or a list of
    either (a sensor waiting for several database types). A whole record is used as it is, saving the
    request that would read it again; a dict that is not one only gives its ``id``."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise Cloud66InputError("backup_id", "is an empty list: give a backup id, a backup record or a list")
    refs: list[tuple[int, Backup | None]] = []
    for item in items:
        if isinstance(item, Mapping):
            ident = validation.backup_id(item.get("id"), "backup_id")
            try:
                record: Backup | None = Backup.from_dict(item)
            except Cloud66ResponseError:
                record = None
            refs.append((ident, record))
        else:
            refs.append((validation.backup_id(item, "backup_id"), None))
    if len({ident for ident, _ in refs}) != len(refs):
        raise Cloud66InputError("backup_id", f"names a backup twice: {[ident for ident, _ in refs]}")
    return tuple(refs)


def _keep_upload(context: Any) -> Callable[[BaseException], bool]:
    """Whether a failed copy leaves its multipart upload open for the next run to resume: when a try
    follows, or when the failure is a spent API budget (the task runs again after the reset)."""
    tries_left = _tries_left(context)
    return lambda exc: tries_left or budget.spent_budget(exc) is not None


def _tries_left(context: Any) -> bool:
    """Whether Airflow will run this task again if this try fails (then an open upload is its head start)."""
    ti = context.get("ti") if isinstance(context, Mapping) else None
    try_number, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
    return isinstance(try_number, int) and isinstance(max_tries, int) and try_number <= max_tries


class TaskStateUploadIds:
    """The archive's multipart UploadIds in Airflow 3.3's task state store (one entry, a mapping of
    object key to UploadId): a task's tries share it, while other DAG runs and other mapped tasks have
    stores of their own, so a retry, even after a SIGKILL, continues exactly its own upload and never a
    concurrent copy's. The id is no secret: using it takes the bucket's credentials."""

    KEY = "c66_multipart_uploads"

    def __init__(self, store: Any) -> None:
        self.store = store

    def _all(self) -> dict[str, str]:
        value = self.store.get(self.KEY)
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}

    def get(self, key: str) -> str | None:
        return self._all().get(key)

    def put(self, key: str, upload_id: str) -> None:
        self.store.set(self.KEY, {**self._all(), key: upload_id})

    def drop(self, key: str) -> None:
        ids = self._all()
        if ids.pop(key, None) is None:
            return
        if ids:
            self.store.set(self.KEY, ids)
        else:
            self.store.delete(self.KEY)


def _upload_ids(context: Any, log: Any) -> TaskStateUploadIds | None:
    """The task state store's UploadIds (Airflow 3.3+); None below, where a resume lists the key's uploads."""
    store = context.get("task_state_store") if isinstance(context, Mapping) else None
    if store is None:
        log.debug("No task state store (Airflow < 3.3): a retry finds its upload by listing the key's")
        return None
    return TaskStateUploadIds(store)


def _file_ids(files: Sequence[BackupFile]) -> str:
    return ", ".join(f.id for f in files) or "none"


def _url_provider(hook: Cloud66Hook, stack: str, ident: int, file_id: str) -> Any:
    return lambda: hook.get_backup_file_url(stack, ident, file_id)


MISSING_CODES = ("404", "NoSuchKey", "NotFound")  # what S3 answers for a key that holds nothing


def head_object(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """HeadObject's answer, or None when the key holds nothing."""
    from botocore.exceptions import ClientError

    try:
        return dict(client.head_object(Bucket=bucket, Key=key))
    except ClientError as exc:
        if s3_error_code(exc) in MISSING_CODES:
            return None
        raise


def read_manifest(client: Any, bucket: str, key: str) -> dict[str, Any] | None:
    """The JSON object stored at the key, or None when there is none; ValueError when it is not one."""
    from botocore.exceptions import ClientError

    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if s3_error_code(exc) in MISSING_CODES:
            return None
        raise
    document = json.loads(body)  # a json.JSONDecodeError is a ValueError
    if not isinstance(document, dict):
        raise ValueError(f"s3://{bucket}/{key} holds JSON that is not an object")
    return document
