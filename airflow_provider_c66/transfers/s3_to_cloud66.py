"""S3ToCloud66ImportOperator: the way back, importing an archived backup from S3 into a stack."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from airflow_provider_c66 import assets, validation
from airflow_provider_c66.exceptions import Cloud66InputError
from airflow_provider_c66.hooks.cloud66 import Cloud66Hook
from airflow_provider_c66.redaction import mask_presigned_url

try:
    from airflow.providers.common.compat.sdk import AirflowException, BaseOperator
except ImportError:  # pragma: no cover
    from airflow.sdk import BaseOperator
    from airflow.sdk.exceptions import AirflowException

MIN_EXPIRY = 300
MAX_EXPIRY = 7 * 24 * 3600  # S3's limit for a presigned URL
# Objects in these classes cannot be read until restored (GLACIER_IR can: it is instant retrieval).
ARCHIVED_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
_MISSING = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})


class S3ToCloud66ImportOperator(BaseOperator):  # type: ignore[misc]
    """Import a backup archived in S3 into a Cloud 66 stack.

    The object is presigned (a GET URL valid for ``expires_in`` seconds) and handed to Cloud 66's
    import call, which downloads it. The URL is SigV4 (S3 refuses SigV2 for SSE-KMS objects), signed
    for the bucket's own region and virtual-hosted where the name allows (a path-style global URL
    answers 301 outside us-east-1). Before anything is sent to Cloud 66 the object must exist and be
    readable (not in GLACIER or DEEP_ARCHIVE without a completed restore), and the signing credentials
    must outlive the URL: a URL signed with a session token dies with the token, so ``expires_in`` is
    shortened to the credentials' remaining lifetime, and refused below ``MIN_EXPIRY`` seconds.

    :param s3_bucket: the bucket holding the archive.
    :param s3_key: the archive object's key (for example the first URI the archive operator returned).
    :param stack_id: the stack to import into.
    :param group: the backup group the imported backup joins.
    :param db_type: its database type (mysql, postgresql, redis, mongodb).
    :param expires_in: presigned URL lifetime in seconds (300 to 604800); Cloud 66 must start
        downloading within it.
    :param aws_conn_id: the Amazon connection (``S3Hook``).
    :param cloud66_conn_id: the Cloud 66 connection (token with the ``admin`` scope).
    :return: the API's message.
    """

    template_fields: Sequence[str] = (
        "s3_bucket",
        "s3_key",
        "stack_id",
        "group",
        "db_type",
        "expires_in",
        "aws_conn_id",
        "cloud66_conn_id",
    )

    def __init__(
        self,
        *,
        s3_bucket: str,
        s3_key: str,
        stack_id: str,
        group: int | str,
        db_type: str,
        expires_in: int = 6 * 3600,
        aws_conn_id: str | None = "aws_default",
        cloud66_conn_id: str = Cloud66Hook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.s3_bucket = s3_bucket
        self.s3_key = s3_key
        self.stack_id = stack_id
        self.group = group
        self.db_type = db_type
        self.expires_in = expires_in
        self.aws_conn_id = aws_conn_id
        self.cloud66_conn_id = cloud66_conn_id
        self._lineage: tuple[str, str, str, str] | None = None  # API URL, stack, bucket, key: once accepted

    def execute(self, context: Any) -> str:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        bucket = validation.bucket_name(self.s3_bucket)
        key = validation.s3_key(self.s3_key)
        stack = validation.stack_id(self.stack_id)
        group = validation.group(self.group)
        db_type = validation.db_type(self.db_type)
        expires = validation.positive_int(self.expires_in, "expires_in", maximum=MAX_EXPIRY)
        if expires < MIN_EXPIRY:
            raise Cloud66InputError("expires_in", f"must be at least {MIN_EXPIRY} seconds, got {expires}")

        s3 = S3Hook(aws_conn_id=self.aws_conn_id)
        client = self._signing_client(s3, bucket)
        self._check_readable(client, bucket, key)
        expires = self._bounded_expiry(client, expires)
        url = client.generate_presigned_url(
            ClientMethod="get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires
        )
        if not url:
            raise AirflowException(f"Could not presign s3://{bucket}/{key}")
        mask_presigned_url(url)
        from airflow_provider_c66.operators.backups import post_once

        hook = Cloud66Hook(self.cloud66_conn_id)
        with post_once():
            message = hook.import_backup(stack, group=group, db_type=db_type, remote_url=url)
        self._lineage = (hook.settings.base_url, stack, bucket, key)
        self.log.info(
            "Cloud 66 accepted the import of s3://%s/%s into stack %r: %s", bucket, key, stack, message
        )
        return message

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage: the S3 object in, the stack it was imported into out."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        if self._lineage is None:
            return OperatorLineage()
        api_url, stack, bucket, key = self._lineage
        return assets.stack_lineage(api_url, stack, s3_input=(bucket, key))

    def _signing_client(self, s3: Any, bucket: str) -> Any:
        """An S3 client that presigns SigV4 for the bucket's region, over the connection's own settings."""
        from botocore.config import Config

        endpoint = s3.conn_config.get_service_endpoint_url("s3")
        region = self._bucket_region(s3, bucket)
        base = s3.config
        # The connection's own s3 options (accelerate, dual-stack...) stay; only the style is set.
        s3_options: Any = {**(base.s3 or {}), "addressing_style": addressing_style(bucket, endpoint)}
        config = base.merge(Config(signature_version="s3v4", s3=s3_options))
        return s3.get_client_type(region_name=region, config=config)

    def _bucket_region(self, s3: Any, bucket: str) -> str | None:
        """The bucket's region (a SigV4 URL signed for another region is refused); else the connection's."""
        from botocore.exceptions import ClientError

        try:
            location = s3.get_conn().get_bucket_location(Bucket=bucket).get("LocationConstraint")
        except ClientError as exc:
            code = _error_code(exc)
            if code in _MISSING:
                raise AirflowException(
                    f"Bucket {bucket!r} does not exist; nothing was sent to Cloud 66."
                ) from None
            if code != "AccessDenied":
                raise
            region: str | None = s3.conn_config.region_name
            self.log.warning(
                "s3:GetBucketLocation on %r was refused, so the URL is signed for the connection's region "
                "%r; if the bucket lives elsewhere S3 will refuse it. Allow s3:GetBucketLocation.",
                bucket,
                region,
            )
            return region
        return bucket_region(location)

    def _check_readable(self, client: Any, bucket: str, key: str) -> None:
        """Refuse a missing or archived object here, rather than let Cloud 66's download fail later."""
        from botocore.exceptions import ClientError

        try:
            head = client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                raise AirflowException(
                    f"s3://{bucket}/{key} does not exist; nothing was sent to Cloud 66."
                ) from None
            raise
        storage_class = head.get("StorageClass")
        if storage_class in ARCHIVED_CLASSES and 'ongoing-request="false"' not in (head.get("Restore") or ""):
            raise AirflowException(
                f"s3://{bucket}/{key} is in the {storage_class} storage class and has no completed "
                "restore, so it cannot be downloaded; restore it first (S3 RestoreObject) and retry. "
                "Nothing was sent to Cloud 66."
            )

    def _bounded_expiry(self, client: Any, expires: int) -> int:
        """``expires`` or less: a URL signed with a session token stops working when the token expires."""
        expiry = credential_expiry(client)
        if expiry is None:
            if session_token(client):
                self.log.warning(
                    "The presigned URL is signed with a session token whose expiry these credentials do not "
                    "say (a token given as is, e.g. aws_session_token): the URL stops working when the token "
                    "does, whatever expires_in (%d s) says. Cloud 66 must have read it by then.",
                    expires,
                )
            return expires
        remaining = int((expiry - datetime.now(UTC)).total_seconds())
        if remaining >= expires:
            return expires
        if remaining < MIN_EXPIRY:
            raise AirflowException(
                f"The AWS credentials expire in {max(remaining, 0)} s, under the {MIN_EXPIRY} s minimum, "
                "and a URL signed with them dies with them; use longer-lived credentials. "
                "Nothing was sent to Cloud 66."
            )
        self.log.warning(
            "The presigned URL expires in %d s instead of %d s: the AWS credentials signing it are "
            "temporary and expire then, and a URL signed with a session token dies with the token.",
            remaining,
            expires,
        )
        return remaining


def bucket_region(location: str | None) -> str:
    """GetBucketLocation's answer as a region: none means us-east-1, and the legacy "EU" eu-west-1."""
    if not location:
        return "us-east-1"
    return "eu-west-1" if location == "EU" else location


def addressing_style(bucket: str, endpoint_url: str | None) -> Literal["virtual", "path"]:
    """Virtual-hosted on AWS where the name is a DNS label, else path (custom endpoints, dotted names).

    AWS's path-style global URLs answer 301 outside us-east-1; a dotted name breaks the TLS wildcard
    certificate of a virtual-hosted URL; a custom endpoint (a local server) serves path style.
    """
    from botocore.utils import check_dns_name

    if endpoint_url or "." in bucket or not check_dns_name(bucket):
        return "path"
    return "virtual"


def credential_expiry(client: Any) -> datetime | None:
    """When the client's signing credentials expire; None for static keys, which never do."""
    credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    if credentials is None:
        return None
    credentials.get_frozen_credentials()  # refreshes temporary credentials that are due
    expiry = getattr(credentials, "_expiry_time", None)
    return expiry if isinstance(expiry, datetime) else None


def session_token(client: Any) -> bool:
    """Whether the client signs with temporary credentials (a session token)."""
    credentials = getattr(getattr(client, "_request_signer", None), "_credentials", None)
    return bool(credentials is not None and credentials.get_frozen_credentials().token)


def _error_code(exc: Any) -> str | None:
    error = getattr(exc, "response", {}).get("Error", {})
    return str(error["Code"]) if "Code" in error else None
